"""Stochastic weight averaging (SWA) and its periodic variant."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v
from optax_zoo.averaging import _tree

__all__ = ['SWAState', 'periodic_swa', 'swa']


class SWAState(NamedTuple):
  """State of `swa`, `periodic_swa`, `gadam` and `gadamx`.

  Attributes:
    count: steps taken, int32.
    n_models: parameter snapshots in the running mean, int32.
    mean: the running mean of the snapshots (a parameter copy).
    inner_state: the inner optimizer's state.
  """

  count: jax.Array
  n_models: jax.Array
  mean: Any
  inner_state: optax.OptState

  def eval_params(self, params: Any) -> Any:
    """The running mean; ``params`` until the first snapshot."""
    return _tree.mean_or_params(self.n_models, self.mean, params)


def _check_schedule_args(start_step, every_k):
  v.check_int('start_step', start_step, minimum=0)
  v.check_int('every_k', every_k, minimum=1)


def averaged(
  inner: optax.GradientTransformation,
  start_step: jax.typing.ArrayLike,
  every_k: jax.typing.ArrayLike,
  period: jax.typing.ArrayLike | None,
) -> optax.GradientTransformationExtraArgs:
  """The shared core of `swa` and `periodic_swa` (validated by callers)."""
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return SWAState(
      count=jnp.zeros([], jnp.int32),
      n_models=jnp.zeros([], jnp.int32),
      mean=_tree.copy(params),
      inner_state=inner.init(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError('swa needs `params` in update().')
    updates, inner_state = inner.update(
      updates, state.inner_state, params, **extra_args
    )
    step = state.count + 1  # steps completed after this update
    snap = _tree.is_event(step, start_step, every_k)
    n = state.n_models
    # torch.optim.swa_utils.AveragedModel: copy the first snapshot, then
    # mean + (p - mean) / (n + 1).
    mean = jax.tree.map(
      lambda m, p, u: jnp.where(
        snap,
        jnp.where(n == 0, p + u, m + (p + u - m) / (n + 1).astype(m.dtype)),
        m,
      ).astype(m.dtype),
      state.mean,
      params,
      updates,
    )
    n_models = n + snap.astype(jnp.int32)
    if period is not None:
      # Guo et al. (2022): each period restarts SGD from the period's average
      # and starts a fresh average.
      restart = _tree.is_event(step, start_step, period, offset=period)
      updates = jax.tree.map(
        lambda u, p, m: jnp.where(restart, m - p, u).astype(u.dtype),
        updates,
        params,
        mean,
      )
      n_models = jnp.where(restart, 0, n_models)
    return updates, SWAState(
      count=optax.safe_increment(state.count),
      n_models=n_models,
      mean=mean,
      inner_state=inner_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def swa(
  inner: optax.GradientTransformation,
  *,
  start_step: jax.typing.ArrayLike,
  every_k: jax.typing.ArrayLike = 1,
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
  need `optax_zoo.update_batch_stats` before evaluating the average.

  The state adds one parameter copy (the mean) to the inner state. Non-finite
  inner updates are passed through unchanged and reach the mean at the next
  snapshot.

  Args:
    inner: the optimizer that trains the weights (SGD in the paper).
    start_step: completed steps before the first snapshot, an integer >= 0
      (the paper starts after 75% of the budget).
    every_k: steps between snapshots, an integer >= 1 (the paper: one epoch,
      or one cycle of the cyclic schedule).

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
  _check_schedule_args(start_step, every_k)
  return averaged(inner, start_step, every_k, period=None)


def periodic_swa(
  inner: optax.GradientTransformation,
  *,
  start_step: jax.typing.ArrayLike,
  period: jax.typing.ArrayLike,
  every_k: jax.typing.ArrayLike = 1,
) -> optax.GradientTransformationExtraArgs:
  r"""Periodic SWA (Guo et al., 2022): SWA restarted from its own average.

  As `swa`, and in addition, at every step :math:`t` with
  :math:`t -` ``start_step`` a positive multiple of ``period``, the weights
  jump to the period's average and the average starts afresh:

  .. math::
    \theta_t \leftarrow \theta_{SWA},\quad n \leftarrow 0.

  `optax_zoo.eval_params` returns the current period's average (the
  parameters right after a restart, which then equal the last average).

  Args:
    inner: the optimizer that trains the weights.
    start_step: completed steps before the first snapshot, an integer >= 0.
    period: steps per averaging period, an integer >= 1.
    every_k: steps between snapshots within a period, an integer >= 1.

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
  _check_schedule_args(start_step, every_k)
  v.check_int('period', period, minimum=1)
  return averaged(inner, start_step, every_k, period=period)
