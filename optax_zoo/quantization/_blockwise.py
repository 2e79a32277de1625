"""Block-wise dynamic quantization of arrays to 8-bit codes (Dettmers et al.).

An array is cut into blocks of ``block_size`` consecutive elements (in
row-major order, the last block partial); each block keeps its absolute
maximum in float32 and every element the 8-bit code of the map value nearest
to ``x / absmax``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

from optax_zoo._src import validation as v
from optax_zoo.quantization._maps import SIGNED_MAP, UNSIGNED_MAP

__all__ = ['QuantizedArray', 'dequantize_blockwise', 'quantize_blockwise']


@struct.dataclass
class QuantizedArray:
  """An array stored as 8-bit codes and one float32 scale per block.

  Attributes:
    codes: uint8 codes, the array's shape: index ``c`` stands for
      ``map[c] * absmax`` of its block.
    absmax: float32, one per block: the block's largest magnitude.
    signed: which map the codes index (`SIGNED_MAP` or `UNSIGNED_MAP`).
    block_size: elements per block (the last block may be partial).
    dtype: the dtype `dequantize_blockwise` returns.
  """

  codes: jax.Array
  absmax: jax.Array
  signed: bool = struct.field(pytree_node=False)
  block_size: int = struct.field(pytree_node=False)
  dtype: Any = struct.field(pytree_node=False)


def _qmap(signed: bool) -> jax.Array:
  return jnp.asarray(SIGNED_MAP if signed else UNSIGNED_MAP)


def check_block_size(block_size: Any) -> None:
  """``block_size`` must be a power of two (``ValueError`` otherwise)."""
  v.check_int('block_size', block_size, minimum=1)
  if block_size & (block_size - 1):
    raise ValueError(
      f'`block_size` must be a power of two, got {block_size!r}.'
    )


def _split(flat: jax.Array, block_size: int) -> tuple[jax.Array, jax.Array]:
  """A flat array as its full blocks (rows of ``block_size``) and the rest.

  XLA:CPU runs a pad to whole blocks, and the slice back, element by element
  with index arithmetic: 3-4x slower than a reshape of the full blocks
  (a bitcast) and a separate short tail, on sizes not a multiple of the
  block. So the last partial block is never padded.
  """
  full = (flat.size // block_size) * block_size
  return flat[:full].reshape(-1, block_size), flat[full:]


def _per_element(per_block: jax.Array, block_size: int, size: int) -> jax.Array:
  """Each block's value repeated over its elements: a flat array of ``size``.

  A broadcast to whole blocks, a reshape and a prefix slice: XLA:CPU fuses
  them into the consumer with shift-and-mask indexing. A concatenation of
  the full blocks and the tail instead runs 3-5x slower.
  """
  rows = per_block.shape[0]
  full = jnp.broadcast_to(per_block[:, None], (rows, block_size))
  return full.reshape(-1)[:size]


def _float_key(f: np.ndarray) -> np.ndarray:
  """float32 -> int64, order-preserving (for a search over float32 values)."""
  b = f.view(np.int32).astype(np.int64)
  return np.where(b < 0, -(b & 0x7FFFFFFF), b)


def _key_float(k: np.ndarray) -> np.ndarray:
  return (
    np.where(k < 0, (-k) | 0x80000000, k).astype(np.uint32).view(np.float32)
  )


def _rounding_thresholds(qmap: np.ndarray) -> np.ndarray:
  """The smallest float32 ``x`` in each gap that rounds up, as torchao rounds.

  torchao's quantizer takes the largest ``c`` with ``qmap[c] <= x`` and then
  ``c + 1`` where ``x - qmap[c] >= (qmap[c + 1] - qmap[c]) * 0.5`` in
  float32. That test is monotone in ``x``, so each gap has one threshold
  ``t[c]`` and the code of ``x`` is the number of thresholds ``<= x``; this
  finds them by bisection over the float32 values of each gap.
  """
  low, high = qmap[:-1], qmap[1:]
  half = (high - low) * np.float32(0.5)
  rounds_up = lambda k: (_key_float(k) - low) >= half
  a, b = _float_key(low), _float_key(high)  # rounds_up(b) holds
  while np.any(b - a > 1):
    mid = (a + b) // 2
    up = rounds_up(mid)
    a, b = np.where(up, a, mid), np.where(up, mid, b)
  return np.where(rounds_up(a), _key_float(a), _key_float(b))


@functools.cache
def _code_tables(signed: bool) -> tuple[np.ndarray, np.ndarray]:
  """Per 16-bit prefix of a float32: its lowest code and where it steps.

  All float32 values sharing their top 16 bits (sign, exponent, 7 mantissa
  bits) span less than one gap of either map, so at most one threshold lies
  among them: the code of ``x`` is ``base[p] + (x >= step[p])`` for its
  prefix ``p``. Two look-ups with one index instead of the eight dependent
  ones of a binary search: XLA:CPU runs each dependent look-up as its own
  pass over memory.
  """
  thresholds = _rounding_thresholds(SIGNED_MAP if signed else UNSIGNED_MAP)
  prefixes = np.arange(2**16, dtype=np.uint32) << 16
  ends = np.stack(
    [prefixes.view(np.float32), (prefixes | 0xFFFF).view(np.float32)]
  )
  finite = np.all(np.isfinite(ends), axis=0)
  ends = np.where(finite, ends, 0.0)
  counts = np.searchsorted(thresholds, np.sort(ends, axis=0), side='right')
  if np.any(counts[1] - counts[0] > 1):
    raise AssertionError('a 16-bit prefix spans two rounding thresholds')
  base = np.where(finite, counts[0], 0).astype(np.uint8)
  padded = np.append(thresholds, np.float32(np.inf))
  step = np.where(counts[1] > counts[0], padded[counts[0]], np.inf)
  return base, step.astype(np.float32)


def _absmax(blocks: jax.Array) -> jax.Array:
  """``max |x|`` of each row, as ``max(max x, -min x)`` (exact).

  One two-output reduction: XLA:CPU fuses the producer of ``blocks`` (a
  dequantized and updated moment) into it, where a plain ``max`` (or a max
  of ``abs``) goes to a library kernel that needs ``blocks`` written to
  memory first: 10x slower on 10M elements.
  """
  if blocks.shape[-1] == 0:
    return jnp.zeros(blocks.shape[:-1], jnp.float32)
  inf = np.float32(np.inf)
  high, low = lax.reduce(
    (blocks, blocks),
    (-inf, inf),
    lambda a, b: (jnp.maximum(a[0], b[0]), jnp.minimum(a[1], b[1])),
    (1,),
  )
  return jnp.maximum(high, -low)


def _nearest_codes(scaled: jax.Array, signed: bool) -> jax.Array:
  """The code of the map value nearest to each of ``scaled`` (in [-1, 1]).

  Equal to torchao's ``quantize_8bit_with_qmap`` (ties go up, and float32
  rounding of its midpoint test is reproduced: `_rounding_thresholds`).
  """
  base, step = (jnp.asarray(t) for t in _code_tables(signed))
  # Unsigned indices: no wrap-around of negative ones to compute.
  prefix = lax.bitcast_convert_type(scaled, jnp.uint32) >> 16
  up = scaled >= step.at[prefix].get(mode='promise_in_bounds')
  return base.at[prefix].get(mode='promise_in_bounds') + up.astype(jnp.uint8)


def quantize_blockwise(
  x: jax.Array, *, signed: bool = True, block_size: int = 256
) -> QuantizedArray:
  r"""Quantizes ``x`` block-wise to 8-bit codes of the dynamic map.

  With blocks :math:`B_j` of ``block_size`` consecutive elements of the
  flattened array and the map :math:`q` (`SIGNED_MAP` or `UNSIGNED_MAP`):

  .. math::
    a_j = \max_{i \in B_j} |x_i|, \qquad
    c_i = \arg\min_c |q_c - x_i / a_j| \quad (i \in B_j).

  Ties between two map values go to the larger. A block of zeros keeps
  ``absmax = 0`` (and decodes to zeros); a non-finite element makes its
  block's ``absmax`` non-finite, so the whole block decodes to NaN or inf
  rather than to a finite value. With ``signed=False``, negative values
  code as 0.

  Args:
    x: a floating array of any shape.
    signed: use the signed map (first moments) or the unsigned one (second
      moments, non-negative).
    block_size: elements per block, a power of two; the last block may be
      partial.

  Returns:
    A `QuantizedArray` with ``x``'s shape and dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo.quantization import (
    ...   dequantize_blockwise, quantize_blockwise)
    >>> q = quantize_blockwise(jnp.array([0.5, -1.0, 0.0, 0.02]))
    >>> q.codes.dtype, q.absmax
    (dtype('uint8'), Array([1.], dtype=float32))
    >>> dequantize_blockwise(q)
    Array([ 0.50078124, -0.99296874,  0.        ,  0.01984375], dtype=float32)

  References:
    Dettmers et al., `8-bit Optimizers via Block-wise Quantization
    <https://arxiv.org/abs/2110.02861>`_, 2022.

  Deviations: torchao clips ``absmax`` at 1e-12 (a block of tinier values
  codes relative to 1e-12); here it is the block's maximum, whatever it is.
  bitsandbytes' CPU kernel looks codes up in a 65,536-bin table instead of
  rounding exactly; these codes equal torchao's.
  """
  check_block_size(block_size)
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f'`x` must be a floating array, got dtype {x.dtype}.')
  flat = jnp.ravel(x).astype(jnp.float32)
  blocks, tail = _split(flat, block_size)
  absmax = _absmax(blocks)
  if tail.size or not blocks.size:
    absmax = jnp.concatenate([absmax, _absmax(tail[None])])
  # torchao divides (it does not multiply by a reciprocal): same codes.
  scale = _per_element(jnp.where(absmax == 0, 1.0, absmax), block_size, x.size)
  codes = _nearest_codes(flat / scale, signed).reshape(x.shape)
  return QuantizedArray(
    codes=codes,
    absmax=absmax,
    signed=bool(signed),
    block_size=int(block_size),
    dtype=x.dtype,
  )


def dequantize_blockwise(
  q: QuantizedArray, *, floor: jax.typing.ArrayLike | None = None
) -> jax.Array:
  r"""The array ``q`` stands for: ``map[codes] * absmax``, in ``q.dtype``.

  .. math::
    \hat x_i = \max(q_{c_i}, f) \, a_j \quad (i \in B_j)

  with the floor :math:`f` only when ``floor`` is given.

  Args:
    q: a `QuantizedArray`.
    floor: a lower bound on the decoded map value, relative to the block's
      ``absmax`` (for second moments: a code of 0 then decodes to ``floor *
      absmax``, not 0); None for none.

  Returns:
    The decoded array, ``q.codes.shape`` and ``q.dtype``.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo.quantization import (
    ...   dequantize_blockwise, quantize_blockwise)
    >>> q = quantize_blockwise(jnp.array([1.0, 1e-9]), signed=False)
    >>> dequantize_blockwise(q), dequantize_blockwise(q, floor=1e-6)
    (Array([1., 0.], dtype=float32), Array([1.e+00, 1.e-06], dtype=float32))
  """
  size = q.codes.size
  values = jnp.ravel(_qmap(q.signed)[q.codes])
  if floor is not None:
    values = jnp.maximum(values, floor)
  scale = _per_element(q.absmax, q.block_size, size)
  return (values * scale).reshape(q.codes.shape).astype(q.dtype)
