"""The learning-rate schedules of SWA and FGE."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v

__all__ = ['fge_schedule', 'swa_schedule']


def swa_schedule(
  init_value: float,
  swa_value: float,
  swa_start: int,
  *,
  cycle_steps: int | None = None,
) -> optax.Schedule:
  r"""The learning rate of SWA (Izmailov et al., 2018).

  Before ``swa_start`` (:math:`T`) it is the schedule of ``train.py`` in
  timgaripov/swa, with :math:`r = \alpha_2/\alpha_1` and :math:`u = n/T`:

  .. math::
    \alpha(n) = \alpha_1 \cdot \begin{cases}
      1 & u \le 0.5\\
      1 - (1 - r)\,\frac{u - 0.5}{0.4} & 0.5 < u \le 0.9\\
      r & u > 0.9.\end{cases}

  From :math:`T` on it is the constant :math:`\alpha_2`, or with
  ``cycle_steps`` (:math:`c`) the paper's cyclic schedule, falling linearly
  from :math:`\alpha_1` to :math:`\alpha_2` within each cycle:

  .. math::
    \alpha(n) = (1 - s)\,\alpha_1 + s\,\alpha_2,\quad
    s = \frac{((n - T) \bmod c) + 1}{c},

  so the lowest rate falls on the steps `optax_zoo.swa` averages with
  ``start_step=T + c`` and ``every_k=c`` (the step counts :math:`n` from 0).

  Args:
    init_value: :math:`\alpha_1`, > 0.
    swa_value: :math:`\alpha_2`, > 0.
    swa_start: :math:`T`, an integer >= 1.
    cycle_steps: :math:`c`, an integer >= 1, or None for the constant rate.

  Returns:
    An `optax.Schedule`.

  Example:
    >>> from optax_zoo.schedules import swa_schedule
    >>> sched = swa_schedule(0.1, 0.01, 100)
    >>> [round(float(sched(n)), 4) for n in (0, 70, 95, 500)]
    [0.1, 0.055, 0.01, 0.01]
  """
  v.check_positive('init_value', init_value)
  v.check_positive('swa_value', swa_value)
  v.check_int('swa_start', swa_start, minimum=1)
  if cycle_steps is not None:
    v.check_int('cycle_steps', cycle_steps, minimum=1)
  ratio = swa_value / init_value

  def schedule(count):
    u = count / swa_start
    factor = jnp.where(
      u <= 0.5,
      1.0,
      jnp.where(u <= 0.9, 1.0 - (1.0 - ratio) * (u - 0.5) / 0.4, ratio),
    )
    after = (
      swa_value
      if cycle_steps is None
      else (lambda s: (1 - s) * init_value + s * swa_value)(
        ((count - swa_start) % cycle_steps + 1) / cycle_steps
      )
    )
    return jnp.where(count < swa_start, init_value * factor, after)

  return schedule


def fge_schedule(lr_1: float, lr_2: float, cycle_steps: int) -> optax.Schedule:
  r"""The triangular cyclic learning rate of FGE (Garipov et al., 2018).

  With :math:`t = (n \bmod c)/c` (``fge.py`` of
  timgaripov/dnn-mode-connectivity, in steps):

  .. math::
    \alpha(n) = \begin{cases}
      (1 - 2t)\,\alpha_1 + 2t\,\alpha_2 & t < 1/2\\
      (2t - 1)\,\alpha_1 + (2 - 2t)\,\alpha_2 & t \ge 1/2,\end{cases}

  from :math:`\alpha_1` down to :math:`\alpha_2` at mid-cycle, where
  `optax_zoo.fge` takes its snapshots, and back. Prefix a pre-training
  schedule with `optax.join_schedules`.

  Args:
    lr_1: :math:`\alpha_1`, the high rate, > 0.
    lr_2: :math:`\alpha_2`, the low rate, > 0.
    cycle_steps: :math:`c`, an integer >= 2.

  Returns:
    An `optax.Schedule`.

  Example:
    >>> from optax_zoo.schedules import fge_schedule
    >>> sched = fge_schedule(0.05, 0.0005, 4)
    >>> [round(float(sched(n)), 5) for n in range(5)]
    [0.05, 0.02525, 0.0005, 0.02525, 0.05]
  """
  v.check_positive('lr_1', lr_1)
  v.check_positive('lr_2', lr_2)
  v.check_int('cycle_steps', cycle_steps, minimum=2)

  def schedule(count):
    t = (count % cycle_steps) / cycle_steps
    return jnp.where(
      t < 0.5,
      (1 - 2 * t) * lr_1 + 2 * t * lr_2,
      (2 * t - 1) * lr_1 + (2 - 2 * t) * lr_2,
    )

  return schedule
