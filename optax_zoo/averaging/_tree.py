"""Tree helpers shared by the averaging wrappers (not public API)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def copy(tree: Any) -> Any:
  """A real copy of every leaf.

  State leaves must never alias parameter buffers: XLA refuses to donate one
  buffer twice when a loop donates params and state together.
  """
  return jax.tree.map(lambda p: jnp.array(p, copy=True), tree)


def mean_or_params(n_models: Any, mean: Any, params: Any) -> Any:
  """``mean`` once ``n_models > 0``, else ``params``, shaped like ``params``.

  Goes through flat leaves so that states whose leaves are wrapped (the
  `OptVariable`s of `nnx.Optimizer`) still give plain ``params``-shaped
  weights ready for `nnx.update`.
  """
  (n,) = jax.tree.leaves(n_models)
  leaves = [
    jnp.where(n > 0, m, p)
    for m, p in zip(jax.tree.leaves(mean), jax.tree.leaves(params), strict=True)
  ]
  return jax.tree.unflatten(jax.tree.structure(params), leaves)


def find_state(opt_state: optax.OptState, cls: type) -> Any:
  """The outermost ``cls`` instance inside a (nested) optimizer state."""
  for node in jax.tree.leaves(opt_state, is_leaf=lambda n: isinstance(n, cls)):
    if isinstance(node, cls):
      return node
  raise ValueError(
    f'`opt_state` must contain a {cls.__name__}, found none; build the '
    'optimizer with the matching optax_zoo wrapper.'
  )


def is_event(
  step: jax.Array, start_step: Any, every_k: Any, offset: Any = 0
) -> jax.Array:
  """Whether ``step >= start_step`` and ``step - start_step`` hits the grid.

  The grid is ``offset + every_k * j`` for integers ``j >= 0``; all operands
  may be traced (as under `optax.inject_hyperparams`).
  """
  since = step - start_step
  return (since >= offset) & ((since - offset) % every_k == 0)
