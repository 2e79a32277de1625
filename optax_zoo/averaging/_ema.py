"""An exponential moving average of the iterates, read through `eval_params`.

Written here: the wrapper and its `eval_params`. The update rule, warm-up
included, is jax-privacy's ``dp_sgd/averaging.py`` ``ema`` (the averaging
De et al. 2022 evaluate their private models with); optax's own `optax.ema`
averages *updates*, not parameters.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v
from optax_zoo.averaging import _tree

__all__ = ['WeightEMAState', 'weight_ema']


class WeightEMAState(NamedTuple):
  """State of `weight_ema`.

  Attributes:
    count: steps taken, int32; the ``params`` the next update (or
      `optax_zoo.eval_params`) is handed are the iterate after ``count``
      steps.
    ema: the average of the iterates up to the one after ``count - 1``
      steps, in the accumulator dtype (the iterate itself before averaging
      starts).
    decay: the decay ``mu`` (float32; traced under `inject_hyperparams`).
    start_step: steps before averaging starts, int32.
    warmup: whether the decay warms up, bool.
    inner_state: the inner optimizer's state.
  """

  count: jax.Array
  ema: Any
  decay: jax.Array
  start_step: jax.Array
  warmup: jax.Array
  inner_state: optax.OptState

  def eval_params(self, params: Any) -> Any:
    """The average with ``params`` (the iterate after ``count`` steps) in."""
    count = _tree.scalar(self.count)
    mu = _decay(
      count,
      _tree.scalar(self.start_step),
      _tree.scalar(self.decay),
      _tree.scalar(self.warmup),
    )
    return _tree.map_params(lambda p, m: _fold(m, p, mu), params, self.ema)


def _decay(count, start_step, decay, warmup):
  """The weight of the old average when folding in the iterate ``count``.

  Zero (the average restarts at the iterate) up to ``start_step``; then
  ``decay``, capped by ``(1 + j) / (10 + j)`` for the j-th averaged iterate
  (j from 0) under warm-up, as jax-privacy's ``ema(..., use_warmup=True)``.
  """
  j = (count - start_step - 1).astype(jnp.float32)
  mu = jnp.where(warmup, jnp.minimum(decay, (1.0 + j) / (10.0 + j)), decay)
  return jnp.where(j >= 0, mu, 0.0)


def _fold(m: jax.Array, p: jax.Array, mu: jax.Array) -> jax.Array:
  mu = mu.astype(m.dtype)
  return mu * m + (1 - mu) * p.astype(m.dtype)


def weight_ema(
  inner: optax.GradientTransformation,
  *,
  decay: jax.typing.ArrayLike,
  start_step: jax.typing.ArrayLike = 0,
  warmup: bool = True,
  accumulator_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""An exponential moving average of the parameters (Polyak-Ruppert EMA).

  Trains with ``inner`` unchanged and keeps, for the iterates
  :math:`\theta_t` after :math:`t` completed steps,

  .. math::
    \bar\theta_t = \mu_j\,\bar\theta_{t-1} + (1 - \mu_j)\,\theta_t,\qquad
    \mu_j = \min\Big(\mu, \frac{1 + j}{10 + j}\Big),\quad
    j = t - s - 1,

  for :math:`t > s` (``start_step``), with :math:`\bar\theta_s = \theta_s`
  (before that the average is the iterate itself); without ``warmup``,
  :math:`\mu_j = \mu`. The warm-up keeps the early average from being
  dominated by the initial weights. `optax_zoo.eval_params` returns
  :math:`\bar\theta_t`. Averaging the iterates of a private run is
  post-processing: it costs no privacy (De et al. 2022 evaluate with it).

  :math:`\theta_t` is the ``params`` the update after it is handed (or that
  `optax_zoo.eval_params` is given), the weights training reached, wherever
  the wrapper sits in a chain. The average is kept in float32 for bfloat16
  or float16 parameters (``accumulator_dtype``); `optax_zoo.eval_params`
  returns the parameters' dtype. The state adds one parameter copy.
  Non-finite iterates reach the average unchanged.

  Args:
    inner: the optimizer that trains the weights.
    decay: :math:`\mu` in [0, 1) (De et al.: 0.9999 over ~10^4 steps; the
      average spans about :math:`1 / (1 - \mu)` steps).
    start_step: completed steps before averaging starts, an integer >= 0.
    warmup: cap the decay at :math:`(1 + j) / (10 + j)`.
    accumulator_dtype: dtype of the average; None: float32 for parameters
      narrower than float32, else the parameters' dtype.

  Returns:
    An `optax.GradientTransformationExtraArgs`; extra update arguments are
    passed to ``inner``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.weight_ema(optax.sgd(0.5), decay=0.5, warmup=False)
    >>> params = jnp.array([1.0])
    >>> state = tx.init(params)
    >>> for _ in range(2):  # params 0.5 then 0.25
    ...   updates, state = tx.update(params, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> optax_zoo.eval_params(state, params)  # (1 + 0.5) / 4 + 0.25 / 2
    Array([0.5], dtype=float32)

  References:
    De et al., `Unlocking High-Accuracy Differentially Private Image
    Classification through Scale <https://arxiv.org/abs/2204.13650>`_,
    2022; Polyak & Juditsky, 1992.
  """
  v.check_transform('inner', inner)
  v.check_in_range('decay', decay, 0.0, 1.0, high_inclusive=False)
  v.check_int('start_step', start_step, minimum=0)
  if not isinstance(warmup, bool):
    raise ValueError(f'`warmup` must be a bool, got {warmup!r}.')
  inner = optax.with_extra_args_support(inner)
  dtype_fn = _tree.accumulator_dtype(accumulator_dtype)

  def init_fn(params):
    return WeightEMAState(
      count=jnp.zeros([], jnp.int32),
      ema=_tree.copy(params, dtype_fn),
      decay=jnp.asarray(decay, jnp.float32),
      start_step=jnp.asarray(start_step, jnp.int32),
      warmup=jnp.asarray(warmup),
      inner_state=inner.init(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError('weight_ema needs `params` in update().')
    updates, inner_state = inner.update(
      updates, state.inner_state, params, **extra_args
    )
    mu = _decay(state.count, state.start_step, state.decay, state.warmup)
    ema = jax.tree.map(lambda m, p: _fold(m, p, mu), state.ema, params)
    return updates, state._replace(
      count=optax.safe_increment(state.count),
      ema=ema,
      decay=jnp.asarray(decay, jnp.float32),
      start_step=jnp.asarray(start_step, jnp.int32),
      inner_state=inner_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
