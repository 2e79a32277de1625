"""Finding the weights to evaluate inside any optimizer state."""

from __future__ import annotations

from typing import Any

import jax
import optax

__all__ = ['eval_params']


def _has_eval_params(node: Any) -> bool:
  return callable(getattr(node, 'eval_params', None)) and isinstance(
    node, tuple
  )


def eval_params(opt_state: optax.OptState, params: Any) -> Any:
  """Returns the weights a training loop should evaluate.

  Searches ``opt_state`` (through `optax.chain`, `optax.inject_hyperparams`,
  `optax.MultiSteps` or any other nesting of tuples and NamedTuples) for a
  state that defines ``eval_params(params)``, such as `LookaheadState` (the
  slow weights), and returns what the outermost such state gives. With no
  averaging in the chain it returns ``params`` unchanged, so a loop can call
  it unconditionally.

  Args:
    opt_state: the optimizer state.
    params: the current (trained) parameters.

  Returns:
    A pytree with the structure of ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_zoo
    >>> params = jnp.ones(2)
    >>> tx = optax.chain(
    ...   optax.clip_by_global_norm(1.0),
    ...   optax_zoo.lookahead(optax.sgd(0.1)),
    ... )
    >>> state = tx.init(params)
    >>> optax_zoo.eval_params(state, params + 1.0)  # slow weights
    Array([1., 1.], dtype=float32)
    >>> optax_zoo.eval_params(optax.sgd(0.1).init(params), params)
    Array([1., 1.], dtype=float32)
  """
  found = jax.tree.leaves(opt_state, is_leaf=_has_eval_params)
  for node in found:
    if _has_eval_params(node):
      return node.eval_params(params)
  return params
