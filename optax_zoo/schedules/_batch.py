"""Learning rates that follow the batch size: LEGW and the scaling rules."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v

__all__ = ['legw_schedule', 'scale_lr_for_batch']

_RULES = ('linear', 'sqrt')
_DECAYS = ('constant', 'poly', 'cosine')


def _batch_ratio(base_batch_size: Any, batch_size: Any) -> float:
  v.check_int('base_batch_size', base_batch_size, minimum=1)
  v.check_int('batch_size', batch_size, minimum=1)
  return batch_size / base_batch_size


def scale_lr_for_batch(
  learning_rate: optax.ScalarOrSchedule,
  base_batch_size: int,
  batch_size: int,
  *,
  rule: str,
) -> optax.ScalarOrSchedule:
  r"""Rescales a learning rate tuned at one batch size to another.

  With :math:`k = B / B_0`:

  .. math::
    \eta(B) = \begin{cases} k\,\eta(B_0) & \text{rule='linear' (SGD)}\\
      \sqrt{k}\,\eta(B_0) & \text{rule='sqrt' (adaptive methods).}
      \end{cases}

  Granziol et al. derive both from the spectrum of the mini-batch Hessian:
  the largest stable rate of SGD grows linearly with the batch size and that
  of adaptive methods such as Adam as its square root, as long as the batch
  stays small enough for the gradient noise to dominate the curvature
  (beyond it, neither rule holds and the rate saturates).

  Args:
    learning_rate: :math:`\eta(B_0)`, a float >= 0 or a schedule.
    base_batch_size: :math:`B_0`, an integer >= 1.
    batch_size: :math:`B`, an integer >= 1.
    rule: ``'linear'`` or ``'sqrt'``.

  Returns:
    The rescaled rate: a float for a float, a schedule for a schedule.

  Example:
    >>> from optax_zoo.schedules import scale_lr_for_batch
    >>> scale_lr_for_batch(0.1, 128, 512, rule='linear')
    0.4
    >>> scale_lr_for_batch(1e-3, 128, 512, rule='sqrt')
    0.002

  References:
    Granziol et al., `Learning Rates as a Function of Batch Size: A Random
    Matrix Theory Approach to Neural Network Training
    <https://arxiv.org/abs/2006.09092>`_, JMLR 2022.
  """
  v.check_learning_rate(learning_rate)
  v.check_choice('rule', rule, _RULES)
  k = _batch_ratio(base_batch_size, batch_size)
  factor = k if rule == 'linear' else math.sqrt(k)
  if callable(learning_rate):
    return lambda count: factor * learning_rate(count)
  return factor * learning_rate


def legw_schedule(
  base_learning_rate: float,
  base_batch_size: int,
  batch_size: int,
  base_warmup_steps: int,
  base_total_steps: int | None = None,
  *,
  decay: str = 'poly',
  power: float = 2.0,
  end_value: float = 0.0,
) -> optax.Schedule:
  r"""Linear-epoch gradual warmup (LEGW, You et al., 2019) and a decay.

  LEGW: when the batch grows :math:`k = B / B_0`-fold, the peak rate grows
  :math:`\sqrt k`-fold (the square-root rule) and the warmup, measured in
  epochs, grows :math:`k`-fold. An epoch is :math:`N/B` steps, so the
  warmup lasts :math:`k E_w \cdot N/(k B_0) = E_w N / B_0` steps: the base
  recipe's number of warmup steps :math:`W_0`, whatever the batch. At a
  fixed budget of epochs the run itself lasts :math:`T = T_0 / k` steps, so
  the warmup takes a :math:`k` times larger share of it. With
  :math:`\hat\eta = \sqrt k\,\eta_0` and :math:`p = (n - W_0) / (T - W_0)`:

  .. math::
    \eta(n) = \begin{cases} \hat\eta\, n / W_0 & n < W_0\\
      \eta_{end} + (\hat\eta - \eta_{end})\, f(p) & n \ge W_0,\end{cases}

  :math:`f(p) = (1 - p)^{power}` (``'poly'``, the polynomial decay of the
  LARS/LEGW experiments, power 2), :math:`\cos^2(\pi p / 2)`
  (``'cosine'``) or 1 (``'constant'``, no :math:`T` needed, no
  ``end_value``), with :math:`p` clipped to [0, 1].

  Args:
    base_learning_rate: :math:`\eta_0`, the peak rate tuned at
      ``base_batch_size``, > 0.
    base_batch_size: :math:`B_0`, an integer >= 1.
    batch_size: :math:`B`, an integer >= 1.
    base_warmup_steps: :math:`W_0`, the warmup of the base recipe in steps,
      an integer >= 0; also the warmup at ``batch_size``.
    base_total_steps: :math:`T_0`, the length of the base run in steps, an
      integer; :math:`T_0 / k` must exceed :math:`W_0`. Needed unless
      ``decay='constant'``.
    decay: ``'poly'``, ``'cosine'`` or ``'constant'``.
    power: exponent of ``'poly'``, > 0.
    end_value: :math:`\eta_{end}`, in [0, :math:`\hat\eta`].

  Returns:
    An `optax.Schedule` over the :math:`T_0 / k` steps at ``batch_size``.

  Example:
    >>> from optax_zoo.schedules import legw_schedule
    >>> sched = legw_schedule(0.1, 128, 512, 100, 10_000)  # k = 4
    >>> [round(float(sched(n)), 4) for n in (0, 50, 100, 1300, 2500)]
    [0.0, 0.1, 0.2, 0.05, 0.0]

  References:
    You et al., `Large-Batch Training for LSTM and Beyond
    <https://arxiv.org/abs/1901.08256>`_, SC 2019.
  """
  v.check_positive('base_learning_rate', base_learning_rate)
  k = _batch_ratio(base_batch_size, batch_size)
  v.check_int('base_warmup_steps', base_warmup_steps, minimum=0)
  v.check_choice('decay', decay, _DECAYS)
  v.check_positive('power', power)
  peak = math.sqrt(k) * base_learning_rate
  v.check_in_range('end_value', end_value, 0.0, peak, high_inclusive=True)
  warmup = int(base_warmup_steps)
  if decay != 'constant':
    if base_total_steps is None:
      raise ValueError(f'`base_total_steps` is needed for decay={decay!r}.')
    v.check_int('base_total_steps', base_total_steps, minimum=1)
    total = base_total_steps / k
    if total <= warmup:
      raise ValueError(
        f'`base_total_steps` / k = {total:g} steps at batch_size={batch_size}'
        f' must exceed the warmup of {warmup} steps; got base_total_steps='
        f'{base_total_steps!r}.'
      )
  # f as a function of q = 1 - p, the share of the decay left, which keeps
  # the arguments small near the end of the run where the rate is small.
  shape: Callable[[Any], Any] | None = {
    'constant': None,
    'poly': lambda q: q**power,
    'cosine': lambda q: jnp.square(jnp.sin(jnp.pi * q / 2)),
  }[decay]

  def schedule(count):
    count = jnp.asarray(count, jnp.float32)
    ramp = peak * count / max(warmup, 1)
    if shape is None:
      return jnp.where(count < warmup, ramp, peak)
    q = jnp.clip((total - count) / (total - warmup), 0.0, 1.0)
    decayed = end_value + (peak - end_value) * shape(q)
    return jnp.where(count < warmup, ramp, decayed)

  return schedule
