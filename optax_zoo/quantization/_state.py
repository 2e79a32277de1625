"""`quantize_state`: any optimizer's moments stored in 8 bits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from optax_zoo._src import validation as v
from optax_zoo.quantization._blockwise import (
  QuantizedArray,
  check_block_size,
  dequantize_blockwise,
  quantize_blockwise,
)

__all__ = ['QuantizedState', 'quantize_state']

# State fields holding second moments (non-negative): optax's and
# optax_zoo's Adam family (``nu``), AMSGrad (``nu_max``), Adagrad
# (``sum_of_squares``), unfactored Adafactor (``v``).
SECOND_MOMENTS = ('nu', 'nu_max', 'sum_of_squares', 'v')


class QuantizedState(NamedTuple):
  """The inner optimizer's state, its moment leaves as `QuantizedArray`.

  Attributes:
    inner_state: the state of ``inner`` with every quantized leaf replaced
      by its `QuantizedArray`; counts, scalars and small tensors as they are.
  """

  inner_state: Any


def _is_quantized(x: Any) -> bool:
  return isinstance(x, QuantizedArray)


def _is_variable(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


def _key_name(key: Any) -> str | None:
  return getattr(key, 'name', None)


def _quantize_moments(
  state: Any,
  params: Any,
  keep: Sequence[bool],
  quantize: Callable[[jax.Array, bool], QuantizedArray],
  unsigned: Sequence[str],
) -> Any:
  """``state`` with the leaves of its parameter-shaped subtrees quantized.

  A subtree is parameter-shaped when it has the structure and leaf shapes
  of ``params`` (``mu`` and ``nu`` of Adam, a momentum buffer, slow
  weights); its ``i``-th leaf is quantized where ``keep[i]``, with the
  unsigned map when the attribute that holds the subtree is named in
  ``unsigned``.
  """
  # Flax NNX variables (`nnx.Optimizer` passes them to ``init``) are leaves
  # here: a quantized one becomes a `QuantizedArray` of two variables, so
  # the optimizer's state holds arrays in its variables, as it expects.
  target = jax.tree.structure(params, is_leaf=_is_variable)
  shapes = [jnp.shape(p) for p in jax.tree.leaves(params, is_leaf=_is_variable)]

  def quantize_leaf(x, signed):
    if not _is_variable(x):
      return quantize(x, signed)
    q = quantize(x.get_value(), signed)
    if not _is_quantized(q):
      return x
    return q.replace(codes=x.replace(q.codes), absmax=x.replace(q.absmax))

  def floating(x):
    value = x.get_value() if _is_variable(x) else x
    return jnp.issubdtype(jnp.result_type(value), jnp.floating)

  def visit(node, name):
    leaves, treedef = jax.tree.flatten(node, is_leaf=_is_variable)
    if treedef == target and [jnp.shape(x) for x in leaves] == shapes:
      signed = name not in unsigned
      new = [
        quantize_leaf(x, signed) if k and floating(x) else x
        for x, k in zip(leaves, keep, strict=True)
      ]
      return treedef.unflatten(new)
    children, treedef = jax.tree_util.tree_flatten_with_path(
      node, is_leaf=lambda x: x is not node
    )
    if len(children) == 1 and children[0][1] is node:  # a leaf
      return node
    return treedef.unflatten(
      [visit(child, _key_name(path[-1]) or name) for path, child in children]
    )

  return visit(state, None)


def quantize_state(
  inner: optax.GradientTransformation,
  *,
  bits: int = 8,
  block_size: int = 256,
  min_size: int = 4096,
  second_moment_floor: jax.typing.ArrayLike | None = None,
  mask: Any | Callable[[optax.Params], Any] | None = None,
  unsigned: Sequence[str] = SECOND_MOMENTS,
) -> optax.GradientTransformationExtraArgs:
  r"""Stores ``inner``'s moments in 8 bits (Dettmers et al. 2022).

  Every parameter-shaped subtree of ``inner``'s state (Adam's ``mu`` and
  ``nu``, a momentum buffer, Adan's three moments, Lion's ``mu``...) is
  kept as block-wise quantized codes (`quantize_blockwise`): one uint8 per
  element and one float32 ``absmax`` per block of ``block_size``. Each
  update dequantizes them, runs ``inner.update`` in full precision, and
  quantizes the new moments for storage:

  .. math::
    s_{t-1} = \mathrm{dq}(S_{t-1}), \quad
    (u_t, s_t) = \mathrm{inner}(g_t, s_{t-1}), \quad
    S_t = \mathrm{q}(s_t).

  So the update ``u_t`` uses the new moments before they are rounded, as
  bitsandbytes and torchao do; only storage is quantized. First moments
  use the signed map, the fields named in ``unsigned`` (second moments)
  the unsigned one. Tensors with fewer than ``min_size`` elements,
  integer leaves (counts), scalars and hyperparameters stay as they are.

  With ``second_moment_floor = f``, a second moment decodes to at least
  ``f`` times its block's maximum. Off by default, as in the references.
  It guards against a known failure: where a block mixes gradient scales
  far apart (1e7), the small second moments round to a code of 0, and
  Adam's step ``m / (sqrt(v) + eps)`` becomes ``m / eps``. A floor of the
  unsigned map's smallest positive value (``UNSIGNED_MAP[1]``, 3.25e-7)
  bounds the step by ``|m| / sqrt(f v_max)``.

  Non-finite gradients: a NaN or inf in a block makes that block's stored
  moments NaN (every later update from it is NaN too), never finite.

  Args:
    inner: the optimizer whose state is stored in 8 bits.
    bits: bits per stored element; only 8 is implemented.
    block_size: elements per quantization block, a power of two (the
      paper: 2048; bitsandbytes and torchao: 256).
    min_size: tensors with fewer elements stay in their dtype (the
      references: 4096).
    second_moment_floor: the floor ``f`` above, in [0, 1), or None (off).
    mask: a tree of booleans over the parameters (or a prefix of it), or a
      function of the parameters returning one; False keeps that
      parameter's moments in full precision (`stable_embedding_mask`).
      None: every parameter.
    unsigned: names of the state fields that hold second moments.

  Returns:
    A `optax.GradientTransformationExtraArgs` with state `QuantizedState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from optax_zoo.quantization import quantize_state
    >>> tx = quantize_state(optax.adam(1e-3), min_size=0)
    >>> params = {'w': jnp.ones((4, 64))}
    >>> state = tx.init(params)
    >>> mu = state.inner_state[0].mu['w']
    >>> mu.codes.dtype, mu.absmax.shape
    (dtype('uint8'), (1,))
    >>> updates, state = tx.update(params, state, params)
    >>> float(updates['w'][0, 0])
    -0.001

  References:
    Dettmers et al., `8-bit Optimizers via Block-wise Quantization
    <https://arxiv.org/abs/2110.02861>`_, 2022.

  Deviations: any optimizer, not a fixed list; the references skip
  tensors under 4096 elements and torchao also those not a multiple of the
  block size, here the last block may be partial. The references'
  percentile clipping is not included (use ``optax.clip_by_global_norm``).
  """
  v.check_transform('inner', inner)
  if bits != 8:
    raise ValueError(f'`bits` must be 8, got {bits!r}.')
  check_block_size(block_size)
  v.check_int('min_size', min_size, minimum=0)
  if second_moment_floor is not None:
    v.check_in_range('second_moment_floor', second_moment_floor, 0.0, 1.0)
  unsigned = tuple(unsigned)
  inner = optax.with_extra_args_support(inner)

  def quantize(x, signed):
    if x.size < max(min_size, 1) or x.ndim == 0:
      return x
    return quantize_blockwise(x, signed=signed, block_size=block_size)

  def decode(x):
    if not _is_quantized(x):
      return x
    floor = None if x.signed else second_moment_floor
    if not _is_variable(x.codes):
      return dequantize_blockwise(x, floor=floor)
    # A moment of an NNX variable: decoded back into that variable.
    plain = x.replace(codes=x.codes.get_value(), absmax=x.absmax.get_value())
    return x.codes.replace(dequantize_blockwise(plain, floor=floor))

  def encode(old, x):
    """``x``, the new moment, stored as ``old`` was (map, block, dtype)."""
    variable = x if _is_variable(x) else None
    value = x.get_value() if variable is not None else x
    q = quantize_blockwise(value, signed=old.signed, block_size=old.block_size)
    q = q.replace(dtype=old.dtype)
    if variable is None:
      return q
    return q.replace(
      codes=variable.replace(q.codes), absmax=variable.replace(q.absmax)
    )

  def init_fn(params):
    n = len(jax.tree.leaves(params))
    if mask is None:
      keep = [True] * n
    else:
      tree = mask(params) if callable(mask) else mask
      keep = jax.tree.leaves(
        jax.tree.map(lambda m, p: jax.tree.map(lambda _: m, p), tree, params)
      )
    state = _quantize_moments(
      inner.init(params), params, keep, quantize, unsigned
    )
    return QuantizedState(inner_state=state)

  def update_fn(updates, state, params=None, **extra):
    stored = state.inner_state
    decoded = jax.tree.map(decode, stored, is_leaf=_is_quantized)
    updates, new = inner.update(updates, decoded, params, **extra)
    old_leaves, treedef = jax.tree.flatten(stored, is_leaf=_is_quantized)
    new_leaves = treedef.flatten_up_to(new)
    leaves = [
      encode(o, x) if _is_quantized(o) else x
      for o, x in zip(old_leaves, new_leaves, strict=True)
    ]
    return updates, QuantizedState(inner_state=treedef.unflatten(leaves))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
