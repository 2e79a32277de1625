"""Tree helpers shared by the averaging wrappers (not public API)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx


def copy(tree: Any, dtype_fn: Callable[[Any], Any] | None = None) -> Any:
  """A real copy of every leaf, cast to ``dtype_fn(leaf.dtype)`` if given.

  State leaves must never alias parameter buffers: XLA refuses to donate one
  buffer twice when a loop donates params and state together.
  """
  if dtype_fn is None:
    return jax.tree.map(lambda p: jnp.array(p, copy=True), tree)
  return jax.tree.map(
    lambda p: jnp.array(p, dtype=dtype_fn(p.dtype), copy=True), tree
  )


def accumulator_dtype(accumulator: Any | None) -> Callable[[Any], Any]:
  """Maps a parameter dtype to the dtype of its running statistics.

  ``accumulator`` if given; otherwise float32 for floating parameters
  narrower than float32 (a bfloat16 mean stops moving once the step
  ``(p - mean) / (n + 1)`` falls below half a unit in the last place, after
  a few dozen snapshots), else the parameter dtype.
  """

  def dtype_fn(dtype):
    if accumulator is not None:
      return jnp.dtype(accumulator)
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
      return jnp.dtype(jnp.float32)
    return dtype

  return dtype_fn


def scalar(x: Any) -> jax.Array:
  """The one array in ``x`` (`nnx.Optimizer` wraps state scalars)."""
  (value,) = jax.tree.leaves(x)
  return value


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
  fn: Callable[..., jax.Array], params: Any, *state_trees: Any
) -> Any:
  """``fn(param, *state_leaves)`` per leaf, shaped and typed like ``params``.

  ``state_trees`` are parameter-shaped trees of an averaging state. Where
  they hold an `optax.MaskedNode` (the part of the parameters an
  `optax.masked` or `optax.multi_transform` branch does not train) the
  result is ``params`` itself, so every branch gives a complete tree.

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
    if jnp.shape(first) != jnp.shape(p):
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
