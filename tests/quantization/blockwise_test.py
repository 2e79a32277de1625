"""Dynamic maps and block-wise (de)quantization (optax_zoo.quantization)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax_zoo import quantization as q


def _map(signed: bool, *, fused: bool) -> np.ndarray:
  """bitsandbytes' ``create_dynamic_map`` transcribed in NumPy.

  ``torch.linspace`` computes ``start + step * i`` (``end - step * (n - 1 -
  i)`` past the middle) with one rounding, a fused multiply-add; float32
  NumPy rounds twice (``fused=False``), which drifts by an ulp.
  """
  f = np.float32
  values = [0.0, 1.0]
  for i in range(7):
    n = 2**i + 1 if signed else 2 ** (i + 1) + 1
    step, idx = f(f(1.0) - f(0.1)) / f(n - 1), np.arange(n)
    if fused:
      up = (np.float64(f(0.1)) + np.float64(step) * idx).astype(f)
      down = (1.0 - np.float64(step) * (n - 1 - idx)).astype(f)
    else:
      up = f(0.1) + step * idx.astype(f)
      down = f(1.0) - step * (n - 1 - idx).astype(f)
    bounds = np.where(idx < n // 2, up, down).astype(f)
    means = ((bounds[:-1] + bounds[1:]) / f(2)).astype(f)
    decade = (f(10.0 ** (i - 6)) * means).astype(f)
    values += [*decade, *(-decade if signed else [])]
  return np.sort(np.array(values, f))


@pytest.mark.parametrize('signed', [True, False])
def test_maps_are_the_dynamic_maps(signed):
  shipped = q.SIGNED_MAP if signed else q.UNSIGNED_MAP
  assert shipped.dtype == np.float32 and len(np.unique(shipped)) == 256
  np.testing.assert_array_equal(shipped, _map(signed, fused=True))
  # Rounding twice moves some values by an ulp: why the constants ship.
  assert np.any(shipped != _map(signed, fused=False))
  assert shipped[-1] == 1.0 and 0.0 in shipped
  assert shipped[0] == (np.float32(-0.99296874) if signed else 0.0)


def _nearest(x: np.ndarray, block: int, qmap: np.ndarray):
  """Brute force: the map value nearest x / absmax per block (ties up)."""
  flat = x.astype(np.float32).ravel()
  pad = -flat.size % block
  blocks = np.pad(flat, (0, pad)).reshape(-1, block)
  absmax = np.abs(blocks).max(1)
  scaled = blocks / np.where(absmax == 0, 1, absmax)[:, None]
  dist = np.abs(scaled[..., None] - qmap)
  # The last minimum: a tie between two codes goes to the larger.
  codes = 255 - np.argmin(dist[..., ::-1], axis=-1)
  return codes.ravel()[: flat.size], absmax, scaled.ravel()[: flat.size]


@pytest.mark.parametrize('signed', [True, False])
@pytest.mark.parametrize(
  ('shape', 'block'), [((7, 300), 256), ((1000,), 64), ((3,), 256)]
)
def test_codes_are_nearest_within_half_a_gap(signed, shape, block):
  rng = np.random.default_rng(0)
  heavy = rng.standard_t(1, shape) * 10.0 ** rng.uniform(-6, 0, shape)
  qmap = q.SIGNED_MAP if signed else q.UNSIGNED_MAP
  for x in (rng.standard_normal(shape), heavy):
    x = (x if signed else x * x).astype(np.float32)
    quant = jax.jit(
      lambda x: q.quantize_blockwise(x, signed=signed, block_size=block)
    )(x)
    codes, absmax, scaled = _nearest(x, block, qmap)
    assert quant.codes.shape == shape and quant.codes.dtype == jnp.uint8
    np.testing.assert_array_equal(quant.absmax, absmax)
    # float32 rounding of the midpoint test may pick the other neighbour
    # of an exact tie; no code may be farther than the nearest.
    got = np.asarray(quant.codes).ravel()
    gap = np.abs(qmap[got] - scaled) - np.abs(qmap[codes] - scaled)
    assert np.mean(got == codes) > 0.999 and np.all(gap <= 1e-7)
    decoded = np.asarray(q.dequantize_blockwise(quant)).ravel()
    half_gap = np.max(np.diff(qmap)) / 2
    per_elem = np.repeat(absmax, block)[: x.size]
    assert np.all(np.abs(decoded - x.ravel()) <= half_gap * per_elem * 1.0001)


def test_zero_and_non_finite_blocks():
  x = jnp.zeros(512).at[300].set(jnp.nan)
  quant = q.quantize_blockwise(x)
  np.testing.assert_array_equal(quant.absmax[0], 0.0)
  decoded = np.asarray(q.dequantize_blockwise(quant))
  np.testing.assert_array_equal(decoded[:256], 0.0)
  assert np.all(np.isnan(decoded[256:]))


def test_keeps_dtype_and_applies_the_floor():
  x = jnp.array([1.0, 1e-9, 0.5], jnp.bfloat16)
  quant = q.quantize_blockwise(x, signed=False)
  assert quant.absmax.dtype == jnp.float32
  assert q.dequantize_blockwise(quant).dtype == jnp.bfloat16
  floored = q.dequantize_blockwise(quant, floor=1e-3)
  assert float(floored[1]) == pytest.approx(1e-3, rel=1e-2)


@pytest.mark.parametrize('block_size', [0, 100, 2.5])
def test_block_size_must_be_a_power_of_two(block_size):
  with pytest.raises(ValueError, match='block_size'):
    q.quantize_blockwise(jnp.ones(4), block_size=block_size)
