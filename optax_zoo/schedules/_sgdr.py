"""SGDR: cosine annealing with warm restarts and growing cycles."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v

__all__ = ['sgdr_schedule']


def _cycle(
  count: jax.Array, first_cycle_steps: int, cycle_mult: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Returns (cycle index i, steps into the cycle, cycle length T_i)."""
  if cycle_mult == 1:
    i = jnp.floor_divide(count, first_cycle_steps)
    return i, count - i * first_cycle_steps, jnp.asarray(first_cycle_steps)

  def start(i):  # T_0 (T_mult^i - 1) / (T_mult - 1), in exact integers
    return first_cycle_steps * (cycle_mult**i - 1) // (cycle_mult - 1)

  # Closed form from the geometric series, then one correction either way
  # where float32 rounding of the log lands next to a restart.
  ratio = count.astype(jnp.float32) * (cycle_mult - 1) / first_cycle_steps
  guess = jnp.floor(jnp.log1p(ratio) / math.log(cycle_mult))
  i = jnp.maximum(guess.astype(jnp.int32), 0)
  i = i + (count >= start(i + 1)) - (count < start(i))
  return i, count - start(i), first_cycle_steps * cycle_mult**i


def sgdr_schedule(
  peak_value: float,
  first_cycle_steps: int,
  cycle_mult: int = 1,
  end_value: float = 0.0,
  *,
  peak_decay: float = 1.0,
) -> optax.Schedule:
  r"""Cosine annealing with warm restarts (SGDR, Loshchilov & Hutter, 2017).

  Eq. (5) of the paper, counted in steps:

  .. math::
    \eta_t = \eta_{min} + \tfrac12 (\eta^i_{max} - \eta_{min})
      \left(1 + \cos\left(\pi \frac{T_{cur}}{T_i}\right)\right),\quad
    T_i = T_0 T_{mult}^i,\quad \eta^i_{max} = d^i \eta_{max},

  where cycle :math:`i` starts at step
  :math:`T_0 (T_{mult}^i - 1)/(T_{mult} - 1)` (:math:`i T_0` for
  :math:`T_{mult} = 1`) and :math:`T_{cur}` counts the steps since. The
  cycle index is computed in closed form, so the schedule is a pure,
  jittable function of a traced step, and equals
  ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0, T_mult,
  eta_min)`` with ``lr=eta_max`` after ``count`` calls of ``step()``. The
  per-restart decay :math:`d` (``peak_decay``) is an addition, not in the
  paper (1 leaves it out). A float count gives fractional :math:`T_{cur}`,
  as torch's ``step(epoch)``; integer counts are exact up to
  :math:`2^{31} / T_{mult}`.

  Args:
    peak_value: :math:`\eta_{max}` >= ``end_value``.
    first_cycle_steps: :math:`T_0`, an integer >= 1.
    cycle_mult: :math:`T_{mult}`, an integer >= 1.
    end_value: :math:`\eta_{min}` >= 0.
    peak_decay: :math:`d` in (0, 1], multiplies the peak at each restart.

  Returns:
    An `optax.Schedule`.

  Example:
    >>> from optax_zoo.schedules import sgdr_schedule
    >>> sched = sgdr_schedule(1.0, first_cycle_steps=2, cycle_mult=2)
    >>> [round(float(sched(n)), 3) for n in range(8)]
    [1.0, 0.5, 1.0, 0.854, 0.5, 0.146, 1.0, 0.962]

  References:
    Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm
    Restarts <https://arxiv.org/abs/1608.03983>`_, 2017.
  """
  v.check_non_negative('end_value', end_value)
  v.check_non_negative('peak_value', peak_value)
  if peak_value < end_value:
    raise ValueError(
      f'`peak_value` must be >= end_value={end_value!r}, got {peak_value!r}.'
    )
  v.check_int('first_cycle_steps', first_cycle_steps, minimum=1)
  v.check_int('cycle_mult', cycle_mult, minimum=1)
  v.check_in_range(
    'peak_decay',
    peak_decay,
    0.0,
    1.0,
    low_inclusive=False,
    high_inclusive=True,
  )
  first_cycle_steps, cycle_mult = int(first_cycle_steps), int(cycle_mult)

  def schedule(count):
    count = jnp.asarray(count)
    i, t_cur, t_i = _cycle(count, first_cycle_steps, cycle_mult)
    peak = peak_value * peak_decay**i
    # (1 + cos(pi t/T))/2 = sin^2(pi (T - t) / 2T): no cancellation, and a
    # small argument near the end of a cycle where the rate is small.
    annealed = jnp.square(jnp.sin(jnp.pi * (t_i - t_cur) / (2 * t_i)))
    return end_value + (peak - end_value) * annealed

  return schedule
