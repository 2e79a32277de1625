"""Tree helpers shared by the averaging wrappers (not public API).

`map_params` and `unwrap` live in ``optax_zoo._src.tree_utils`` (other
subpackages with `eval_params` use them too) and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src.tree_utils import map_params as map_params
from optax_zoo._src.tree_utils import unwrap as unwrap


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
