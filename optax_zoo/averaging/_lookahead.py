"""Lookahead as a drop-in wrapper on plain parameters."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v
from optax_zoo.averaging import _tree

__all__ = ['LookaheadState', 'lookahead']


class LookaheadState(NamedTuple):
  """State of `lookahead`.

  Attributes:
    count: steps taken, int32.
    slow: the slow weights, a copy of the parameters.
    inner_state: the fast (inner) optimizer's state.
  """

  count: jax.Array
  slow: Any
  inner_state: optax.OptState

  # Its update resets the fast weights to the slow ones; a transform after
  # it in a chain would move them elsewhere (see `optax_zoo.eval_params`).
  must_be_last = True

  def eval_params(self, params: Any) -> Any:
    """The slow weights, which the paper evaluates, in the params' dtype."""
    return _tree.map_params(lambda p, s: s, params, self.slow)


def lookahead(
  inner: optax.GradientTransformation,
  sync_period: int = 6,
  alpha: jax.typing.ArrayLike = 0.5,
  *,
  reset_state: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Lookahead (Zhang et al., 2019) on plain parameters.

  The parameters the training loop holds are the fast weights; the slow
  weights live in the state. Every ``sync_period`` steps:

  .. math::
    \phi \leftarrow \phi + \alpha (\theta_{fast} - \phi),\quad
    \theta_{fast} \leftarrow \phi,

  folded into that step's update so the loop needs no special parameter type.
  Step for step this equals `optax.lookahead` on
  ``LookaheadParams(fast=params, slow=params)``: its fast weights are our
  parameters and its slow weights our ``state.slow``. Evaluate with
  ``optax_zoo.eval_params(state, params)``, which returns the slow weights.

  .. warning::
    ``lookahead`` must produce the final update: at each synchronization its
    update moves the weights exactly onto the new slow weights, which a
    later `optax.scale`, clipping or learning rate in the same `optax.chain`
    would distort. Put the learning rate and clipping *inside* ``inner``
    (``lookahead(optax.chain(optax.clip(1.0), optax.adam(1e-3)))``) or
    before it. `optax_zoo.eval_params` raises a `ValueError` when a
    transform follows ``lookahead`` in a chain.

  The state costs one extra parameter copy over the inner optimizer's.
  Non-finite inner updates are passed through unchanged and reach the slow
  weights at the next synchronization.

  Args:
    inner: the fast optimizer.
    sync_period: :math:`k`, fast steps per synchronization, an integer >= 1.
    alpha: slow step size :math:`\alpha`, in [0, 1].
    reset_state: reset the inner optimizer's state at each synchronization.

  Returns:
    An `optax.GradientTransformationExtraArgs`; extra update arguments are
    passed to ``inner``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.lookahead(optax.sgd(0.1), sync_period=2, alpha=0.5)
    >>> params = jnp.array([1.0])
    >>> state = tx.init(params)
    >>> for _ in range(2):
    ...   updates, state = tx.update(2 * params, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params, optax_zoo.eval_params(state, params)
    (Array([0.82], dtype=float32), Array([0.82], dtype=float32))

  References:
    Zhang et al., `Lookahead Optimizer: k steps forward, 1 step back
    <https://arxiv.org/abs/1907.08610>`_, 2019.
  """
  v.check_transform('inner', inner)
  v.check_int('sync_period', sync_period, minimum=1)
  v.check_in_range('alpha', alpha, 0.0, 1.0, high_inclusive=True)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params: Any) -> LookaheadState:
    return LookaheadState(
      count=jnp.zeros([], jnp.int32),
      # A real copy: an alias of `params` breaks buffer donation of params
      # and state together (XLA refuses to donate one buffer twice).
      slow=jax.tree.map(lambda p: jnp.array(p, copy=True), params),
      inner_state=inner.init(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError('lookahead needs `params` in update().')
    fast_updates, inner_state = inner.update(
      updates, state.inner_state, params, **extra_args
    )
    sync = (state.count + 1) % sync_period == 0

    # One fused step: the last fast step, the slow step, and the reset of the
    # fast weights to the slow ones. Same algebra as optax's lookahead, so the
    # two agree to the bit on finite values.
    def step(p, u, s):
      diff = p + u - s
      new_fast_update = jnp.where(sync, u - (1 - alpha) * diff, u)
      new_slow = jnp.where(sync, s + alpha * diff, s)
      return new_fast_update.astype(p.dtype), new_slow.astype(s.dtype)

    out = jax.tree.map(step, params, fast_updates, state.slow)
    new_updates = jax.tree.map(lambda _, o: o[0], params, out)
    new_slow = jax.tree.map(lambda _, o: o[1], params, out)
    if reset_state:
      fresh = inner.init(params)
      inner_state = jax.tree.map(
        lambda cur, init: jnp.where(sync, init, cur), inner_state, fresh
      )
    return new_updates, LookaheadState(
      count=optax.safe_increment(state.count),
      slow=new_slow,
      inner_state=inner_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
