"""Tree helpers that `optax.tree` does not have."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

__all__ = ['full_mask', 'map_params', 'unwrap', 'unzip']


def full_mask(mask: Any, params: Any) -> Any:
  """An optax-style mask as a tree of bools with the structure of `params`.

  Args:
    mask: None (every leaf), a tree of bools with the structure of `params`
      or a prefix of it (a single bool selects all or nothing), or a
      callable of the params returning one, as `optax.masked` takes.
    params: the parameters.

  Returns:
    One Python bool per leaf of `params`, in a tree of its structure.
  """
  if mask is None:
    mask = True
  elif callable(mask):
    mask = mask(params)
  return jax.tree.map(
    lambda m, sub: jax.tree.map(lambda _: m, sub), mask, params
  )


def unzip(tree: Any, like: Any, n: int) -> tuple[Any, ...]:
  """Splits a tree of `n`-tuples into `n` trees with the structure of `like`.

  The inverse of mapping a function that returns a tuple over `like`.
  """
  return jax.tree.transpose(
    jax.tree.structure(like), jax.tree.structure((0,) * n), tree
  )


def _is_variable(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


def unwrap(tree: Any) -> Any:
  """``tree`` with every `nnx.Variable` replaced by its value.

  `nnx.Optimizer` wraps state leaves in `OptVariable` where the parameters
  hold `Param`: unwrapped, both trees have one structure.
  """
  return jax.tree.map(
    lambda x: x.get_value() if _is_variable(x) else x,
    tree,
    is_leaf=_is_variable,
  )


def _is_masked(x: Any) -> bool:
  return isinstance(x, optax.MaskedNode)


def map_params(
  fn: Callable[..., jax.Array],
  params: Any,
  *state_trees: Any,
  same_shapes: bool = True,
) -> Any:
  """``fn(param, *state_leaves)`` per leaf, shaped and typed like ``params``.

  ``state_trees`` are parameter-shaped trees of an averaging state. Where
  they hold an `optax.MaskedNode` (the part of the parameters an
  `optax.masked` or `optax.multi_transform` branch does not train) the
  result is ``params`` itself, so every branch gives a complete tree.

  ``same_shapes=False`` lets the state trees hold per-leaf markers of any
  shape (a scalar per leaf) instead of parameter-shaped arrays.

  Raises:
    ValueError: if ``params`` does not have the state's structure.
  """
  leaves, treedef = jax.tree.flatten(params)
  plain = unwrap(params)
  plain_states = [unwrap(t) for t in state_trees]

  def leaf(first, *rest):
    p, states = rest[-1], (first, *rest[:-1])
    if _is_masked(first):
      return p
    if same_shapes and jnp.shape(first) != jnp.shape(p):
      raise ValueError(
        f'a leaf of shape {jnp.shape(p)} where the state holds '
        f'{jnp.shape(first)}'
      )
    return fn(p, *states).astype(p.dtype)

  try:
    out = jax.tree.map(leaf, *plain_states, plain, is_leaf=_is_masked)
    out_leaves = jax.tree.leaves(out)
    if len(out_leaves) != len(leaves):
      raise ValueError(f'{len(out_leaves)} leaves, not {len(leaves)}')
  except ValueError as e:
    raise ValueError(
      '`params` must have the structure of the parameters the optimizer was '
      'initialized with (with Flax NNX: the model, or '
      f"`nnx.state(model, wrt)` for the optimizer's `wrt`); {e}"
    ) from None
  return jax.tree.unflatten(treedef, out_leaves)
