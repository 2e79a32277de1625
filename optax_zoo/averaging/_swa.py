"""Stochastic weight averaging (SWA) and its periodic variant."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v
from optax_zoo.averaging import _tree

__all__ = ['PeriodicSWAState', 'SWAState', 'periodic_swa', 'swa']


class SWAState(NamedTuple):
  """State of `swa`, `gadam` and `gadamx`.

  Attributes:
    count: steps taken, int32.
    n_models: parameter snapshots folded into ``mean``, int32.
    pending: whether the parameters after the last step are a snapshot not
      yet folded in (bool): they reach the wrapper as the next update's
      ``params``, and `optax_zoo.eval_params` folds them in meanwhile.
    mean: the running mean of the snapshots, in the accumulator dtype.
    inner_state: the inner optimizer's state.
  """

  count: jax.Array
  n_models: jax.Array
  pending: jax.Array
  mean: Any
  inner_state: optax.OptState

  def eval_params(self, params: Any) -> Any:
    """The running mean with ``params`` folded in if due; else ``params``."""
    n, due = _tree.scalar(self.n_models), _tree.scalar(self.pending)
    return _tree.map_params(
      lambda p, m: jnp.where((n > 0) | due, fold(m, p, n, due), p),
      params,
      self.mean,
    )


class PeriodicSWAState(SWAState):
  """State of `periodic_swa` (as `SWAState`).

  Its restarts replace the update, so it must produce the final update of
  its chain; `optax_zoo.eval_params` raises if a transform follows it.
  """

  must_be_last = True


def fold(m: jax.Array, p: jax.Array, n: jax.Array, due: jax.Array):
  """``m`` with ``p`` folded in where ``due``, as torch's AveragedModel.

  The first snapshot is copied, later ones move the mean by
  ``(p - mean) / (n + 1)``, computed in the accumulator dtype of ``m``.
  """
  p = p.astype(m.dtype)
  new = jnp.where(n == 0, p, m + (p - m) / (n + 1).astype(m.dtype))
  return jnp.where(due, new, m)


def averaged(
  inner: optax.GradientTransformation,
  start_step: jax.typing.ArrayLike,
  every_k: jax.typing.ArrayLike,
  period: jax.typing.ArrayLike | None,
  accumulator_dtype: Any | None,
  name: str,
) -> optax.GradientTransformationExtraArgs:
  """The shared core of `swa`, `periodic_swa` and Gadam (validated by callers).

  The mean takes in the ``params`` each update is handed, the iterates the
  training actually visits, whatever later transforms of a chain do to this
  wrapper's update. The parameters after step :math:`t` arrive at update
  :math:`t + 1`, so a snapshot due at step :math:`t` waits as ``pending``.
  """
  inner = optax.with_extra_args_support(inner)
  dtype_fn = _tree.accumulator_dtype(accumulator_dtype)
  state_cls = SWAState if period is None else PeriodicSWAState

  def init_fn(params):
    return state_cls(
      count=jnp.zeros([], jnp.int32),
      n_models=jnp.zeros([], jnp.int32),
      pending=jnp.zeros([], bool),
      mean=_tree.copy(params, dtype_fn),
      inner_state=inner.init(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError(f'{name} needs `params` in update().')
    updates, inner_state = inner.update(
      updates, state.inner_state, params, **extra_args
    )
    n, due = state.n_models, state.pending
    mean = jax.tree.map(lambda m, p: fold(m, p, n, due), state.mean, params)
    n = n + due.astype(jnp.int32)
    step = state.count + 1  # steps completed after this update
    snap = _tree.is_event(step, start_step, every_k)
    if period is not None:
      # Guo et al. (2022): each period restarts SGD from the period's average
      # (this step's snapshot included: the iterate the inner optimizer
      # would reach) and starts a fresh average.
      restart = _tree.is_event(step, start_step, period, offset=period)
      final = jax.tree.map(
        lambda m, p, u: fold(m, p + u, n, snap), mean, params, updates
      )
      updates = jax.tree.map(
        lambda u, p, m: jnp.where(restart, m - p, u).astype(u.dtype),
        updates,
        params,
        final,
      )
      mean = jax.tree.map(lambda f, m: jnp.where(restart, f, m), final, mean)
      n = jnp.where(restart, 0, n)
      snap = snap & ~restart
    return updates, state_cls(
      count=optax.safe_increment(state.count),
      n_models=n,
      pending=snap,
      mean=mean,
      inner_state=inner_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def swa(
  inner: optax.GradientTransformation,
  *,
  start_step: jax.typing.ArrayLike,
  every_k: jax.typing.ArrayLike = 1,
  accumulator_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Stochastic weight averaging (Izmailov et al., 2018).

  Trains with ``inner`` unchanged and keeps the running mean of the
  parameters after step :math:`t` whenever :math:`t \ge` ``start_step`` and
  :math:`t -` ``start_step`` is a multiple of ``every_k`` (:math:`t` counts
  completed steps, from 1):

  .. math::
    \theta_{SWA} \leftarrow \frac{n\,\theta_{SWA} + \theta_t}{n + 1},\quad
    n \leftarrow n + 1.

  `optax_zoo.eval_params` returns :math:`\theta_{SWA}` (the parameters until
  the first snapshot). Use a high constant or cyclic learning rate after
  ``start_step``: `optax_zoo.schedules.swa_schedule`. Models with BatchNorm
  need `optax_zoo.update_batch_stats` (or `optax_zoo.eval_model`) before
  evaluating the average.

  :math:`\theta_t` is the ``params`` the next update is handed (or that
  `optax_zoo.eval_params` is given), the weights training actually reached:
  the wrapper may sit anywhere in an `optax.chain`, before a
  `optax.scale` or clipping that changes its update. The mean is kept in
  float32 for bfloat16 or float16 parameters (``accumulator_dtype``), where
  a mean in the parameter dtype stops moving after a few dozen snapshots;
  `optax_zoo.eval_params` returns the parameters' dtype.

  The state adds one parameter copy (the mean, in the accumulator dtype) to
  the inner state. Non-finite inner updates are passed through unchanged
  and reach the mean at the next snapshot.

  Args:
    inner: the optimizer that trains the weights (SGD in the paper).
    start_step: completed steps before the first snapshot, an integer >= 0
      (the paper starts after 75% of the budget).
    every_k: steps between snapshots, an integer >= 1 (the paper: one epoch,
      or one cycle of the cyclic schedule).
    accumulator_dtype: dtype of the mean; None: float32 for parameters
      narrower than float32, else the parameters' dtype.

  Returns:
    An `optax.GradientTransformationExtraArgs`; extra update arguments are
    passed to ``inner``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.swa(optax.sgd(0.5), start_step=1, every_k=1)
    >>> params = jnp.array([1.0])
    >>> state = tx.init(params)
    >>> for _ in range(2):  # params 0.5 then 0.25
    ...   updates, state = tx.update(params, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> optax_zoo.eval_params(state, params)
    Array([0.375], dtype=float32)

  References:
    Izmailov et al., `Averaging Weights Leads to Wider Optima and Better
    Generalization <https://arxiv.org/abs/1803.05407>`_, 2018.

  Deviations: counted in steps, not epochs (``every_k`` = steps per epoch
  gives the paper's per-epoch averaging).
  """
  v.check_transform('inner', inner)
  v.check_schedule_args(start_step, every_k)
  v.check_float_dtype('accumulator_dtype', accumulator_dtype)
  return averaged(
    inner, start_step, every_k, None, accumulator_dtype, name='swa'
  )


def periodic_swa(
  inner: optax.GradientTransformation,
  *,
  start_step: jax.typing.ArrayLike,
  period: jax.typing.ArrayLike,
  every_k: jax.typing.ArrayLike = 1,
  accumulator_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Periodic SWA (Guo et al., 2022): SWA restarted from its own average.

  As `swa`, and in addition, at every step :math:`t` with
  :math:`t -` ``start_step`` a positive multiple of ``period``, the weights
  jump to the period's average and the average starts afresh:

  .. math::
    \theta_t \leftarrow \theta_{SWA},\quad n \leftarrow 0.

  `optax_zoo.eval_params` returns the current period's average (the
  parameters right after a restart, which then equal the last average).

  .. warning::
    The restart replaces the update, so ``periodic_swa`` must produce the
    final update: put it last in an `optax.chain` (wrap the learning rate
    and clipping inside ``inner``). `optax_zoo.eval_params` raises a
    `ValueError` when a transform follows it in a chain.

  Args:
    inner: the optimizer that trains the weights.
    start_step: completed steps before the first snapshot, an integer >= 0.
    period: steps per averaging period, an integer >= 1.
    every_k: steps between snapshots within a period, an integer >= 1.
    accumulator_dtype: dtype of the mean, as in `swa`.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.periodic_swa(optax.sgd(0.5), start_step=0, period=2)
    >>> params = jnp.array([1.0])
    >>> state = tx.init(params)
    >>> for _ in range(2):  # 0.5, then 0.25 replaced by the mean of both
    ...   updates, state = tx.update(params, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params
    Array([0.375], dtype=float32)

  References:
    Guo, Jin & Liu, `Stochastic Weight Averaging Revisited
    <https://arxiv.org/abs/2201.00519>`_, 2022.

  Deviations: counted in steps, not epochs; transcribed from the paper (no
  reference code); the inner optimizer's state (momentum) carries over a
  restart.
  """
  v.check_transform('inner', inner)
  v.check_schedule_args(start_step, every_k)
  v.check_int('period', period, minimum=1)
  v.check_float_dtype('accumulator_dtype', accumulator_dtype)
  return averaged(
    inner, start_step, every_k, period, accumulator_dtype, name='periodic_swa'
  )
