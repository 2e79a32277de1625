"""Compressors: their laws by statistical tests, payload layouts, edge cases.

Tier 3 (statistics): each unbiased compressor's mean over many keys is the
input within a z-test bound, its variance factor holds, and a test of the
rounding law accepts the right law and rejects wrong ones.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import optax_zoo

DRAWS = 20000
Z = 5.0  # |z| bound per coordinate: false alarms ~6e-7 each


def _enc(c, key, x):
  return jax.jit(c.compress)(key, x)


def _dec(c, payload, shape, dtype):
  return jax.jit(c.decompress, static_argnums=(1, 2))(
    payload, tuple(shape), dtype
  )


def _rt(c, key, x):
  """``c(key, x)`` compiled: one program instead of op-by-op dispatch."""
  return jax.jit(c)(key, x)


def _draws(compressor, x, n=DRAWS, seed=0):
  keys = jax.random.split(jax.random.key(seed), n)
  return np.asarray(
    jax.jit(jax.vmap(lambda k: compressor(k, x)))(keys), np.float64
  )


def _natural_law(x):
  """Lower power of two and the probability of rounding up, float64."""
  a = np.abs(np.asarray(x, np.float64))
  low = np.where(
    a < 2.0**-126, 0.0, 2.0 ** np.floor(np.log2(np.maximum(a, 1e-300)))
  )
  width = np.where(low == 0, 2.0**-126, low)
  return low, (a - low) / width, width


# Magnitudes across binades, exact powers of two, negatives, a subnormal.
_X = np.array(
  [1.3, -1.3, 3.0, -0.7, 1.0, -4.0, 1e-3, 123.4, 5e-39, -2.5e-20, 0.75, 1.9],
  np.float32,
)


def test_natural_compression_is_unbiased():
  x = jnp.asarray(_X)
  samples = _draws(optax_zoo.natural_compressor(), x)
  _, p, width = _natural_law(_X)
  var = p * (1 - p) * width**2
  mean = samples.mean(axis=0)
  exact = var == 0
  np.testing.assert_array_equal(mean[exact], np.float64(_X[exact]))
  z = (mean[~exact] - _X[~exact]) / np.sqrt(var[~exact] / DRAWS)
  assert np.all(np.abs(z) < Z), z


def test_natural_compression_sends_only_the_two_neighbours():
  x = jnp.asarray(_X)
  samples = _draws(optax_zoo.natural_compressor(), x, n=2000)
  low, _, width = _natural_law(_X)
  mag = np.abs(samples)
  assert np.all((mag == low) | (mag == low + width))
  assert np.all((np.sign(samples) == np.sign(_X)) | (samples == 0))


def _up_counts(samples, x):
  low, _, _ = _natural_law(x)
  return (np.abs(samples) > low).sum(axis=0)


def _law_pvalue(counts, n, p):
  """Chi-square goodness of fit of per-coordinate up-counts to law ``p``."""
  p = np.clip(p, 1e-12, 1 - 1e-12)
  chi2 = np.sum((counts - n * p) ** 2 / (n * p * (1 - p)))
  return stats.chi2.sf(chi2, df=len(counts))


def test_rounding_law_accepts_the_paper_and_rejects_wrong_laws():
  # Inside one binade, p = (|x| - 2^a) / 2^a; the wrong laws are a fair
  # coin and round-to-nearest (deterministic).
  x = np.array([1.1, 1.25, 1.5, 1.7, 1.95, -2.6, 5.5, 0.3], np.float32)
  samples = _draws(optax_zoo.natural_compressor(), jnp.asarray(x))
  counts = _up_counts(samples, x)
  _, p, _ = _natural_law(x)
  assert _law_pvalue(counts, DRAWS, p) > 1e-3
  assert _law_pvalue(counts, DRAWS, np.full_like(p, 0.5)) < 1e-12
  assert _law_pvalue(counts, DRAWS, (p >= 0.5).astype(float)) < 1e-12
  # A slightly wrong law (p + 0.02) is rejected too.
  assert _law_pvalue(counts, DRAWS, np.clip(p + 0.02, 0, 1)) < 1e-6


def test_natural_compression_variance_factor():
  c = optax_zoo.natural_compressor()
  assert c.variance_factor(10) == 0.125 and c.unbiased
  # Worst case |x| = 4/3 2^a: E||C(x) - x||^2 = ||x||^2 / 8 exactly.
  worst = jnp.asarray(np.array([4 / 3, -8 / 3, 4 / 3 * 2**-10], np.float32))
  err = ((_draws(c, worst) - np.float64(worst)) ** 2).sum(axis=1)
  ratio, se = (
    err.mean() / np.sum(np.float64(worst) ** 2),
    err.std() / np.sqrt(DRAWS) / np.sum(np.float64(worst) ** 2),
  )
  assert abs(ratio - 1 / 8) < Z * se and ratio <= 1 / 8 + Z * se
  # Uniformly spread over a binade the factor is
  # E[(x - 1)(2 - x)] / E[x^2] = (1/6) / (7/3) = 1/14.
  spread = jnp.linspace(1.0, 2.0, 64, endpoint=False, dtype=jnp.float32)
  err = ((_draws(c, spread) - np.float64(spread)) ** 2).sum(axis=1)
  ratio = err.mean() / np.sum(np.float64(spread) ** 2)
  se = err.std() / np.sqrt(DRAWS) / np.sum(np.float64(spread) ** 2)
  assert ratio <= 1 / 8
  assert abs(ratio - 1 / 14) < Z * se + 2e-3  # 2e-3: the grid, not 1/14


@pytest.mark.parametrize('shape', [(1,), (8,), (9,), (3, 5)])
def test_natural_payload_is_uint8_exponents_and_packed_signs(shape):
  c = optax_zoo.natural_compressor()
  d = math.prod(shape)
  x = jax.random.normal(jax.random.key(1), shape)
  payload = _enc(c, jax.random.key(2), x)
  assert set(payload) == {'exponent', 'sign'}
  assert payload['exponent'].dtype == jnp.uint8
  assert payload['exponent'].shape == (d,)
  assert payload['sign'].dtype == jnp.uint8
  assert payload['sign'].shape == (-(-d // 8),)
  assert c.payload_bytes(shape) == d + -(-d // 8)
  assert c.payload_bytes(shape, jnp.bfloat16) == d + -(-d // 8)
  # Decoding is bit-exact +-2^(code - 127), the sign bit little-endian.
  code = np.asarray(payload['exponent'], np.int64)
  sign = np.unpackbits(np.asarray(payload['sign']), bitorder='little')[:d]
  want = np.where(code == 0, 0.0, (1 - 2.0 * sign) * 2.0 ** (code - 127))
  got = np.asarray(_dec(c, payload, shape, jnp.float32)).reshape(-1)
  np.testing.assert_array_equal(got, want.astype(np.float32))
  np.testing.assert_array_equal(sign, np.signbit(np.asarray(x)).reshape(-1))


def test_natural_is_9_bits_per_coordinate():
  c = optax_zoo.natural_compressor()
  assert c.bits_per_coordinate((1024,)) == 9.0
  assert c.bits_per_coordinate((64, 64), jnp.bfloat16) == 9.0
  params = {'w': jnp.zeros((4, 8)), 'b': jnp.zeros(3)}
  assert c.tree_payload_bytes(params) == (32 + 4) + (3 + 1)
  assert c.wire_bytes(params, 8) == 7 * 40


def test_compressors_are_deterministic_given_a_key():
  x = jax.random.normal(jax.random.key(0), (257,))
  for c in (
    optax_zoo.natural_compressor(),
    optax_zoo.natural_dithering_compressor(3),
    optax_zoo.random_k_compressor(5),
  ):
    a = _enc(c, jax.random.key(7), x)
    b = _enc(c, jax.random.key(7), x)
    other = _enc(c, jax.random.key(8), x)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
    assert any(not np.array_equal(a[k], other[k]) for k in a), c.name


def test_natural_zero_negative_tiny_and_huge_values():
  c = optax_zoo.natural_compressor()
  fmax = np.finfo(np.float32).max
  x = jnp.array(
    [0.0, -0.0, -1.0, -3.0, 2.0**127, fmax, -fmax, 2.0**-126, 1e-45, 1e-40],
    jnp.float32,
  )
  s = _draws(c, x, n=4000)
  assert np.all(s[:, 0] == 0) and np.all(s[:, 1] == 0)
  assert not np.signbit(s[0, 0]) and np.signbit(s[0, 1])
  assert np.all(s[:, 2] == -1.0)
  assert set(np.unique(s[:, 3])) == {-2.0, -4.0}
  # The top binade never rounds up to 2^128 (inf): it saturates.
  assert np.all(s[:, 4] == 2.0**127) and np.all(s[:, 5] == 2.0**127)
  assert np.all(s[:, 6] == -(2.0**127))
  assert np.all(s[:, 7] == 2.0**-126)
  # Subnormals: 0 or 2^-126, unbiased.
  for j in (8, 9):
    assert set(np.unique(s[:, j])) <= {0.0, 2.0**-126}
    p = float(np.float32(x[j])) / 2.0**-126
    se = np.sqrt(p * (1 - p) / len(s))
    assert abs(np.mean(s[:, j] > 0) - p) < Z * se + 1e-12


def test_natural_non_finite_decodes_to_nan():
  c = optax_zoo.natural_compressor()
  x = jnp.array([jnp.nan, jnp.inf, -jnp.inf, 1.0])
  payload = _enc(c, jax.random.key(0), x)
  np.testing.assert_array_equal(payload['exponent'][:3], [255, 255, 255])
  y = np.asarray(_dec(c, payload, x.shape, x.dtype))
  assert np.all(np.isnan(y[:3])) and y[3] == 1.0


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16])
def test_natural_low_precision_input(dtype):
  c = optax_zoo.natural_compressor()
  x = jnp.array([1.3, -3.0, 0.1, 1000.0, 60000.0], dtype)
  s_jax = jax.vmap(lambda k: c(k, x))(
    jax.random.split(jax.random.key(0), DRAWS)
  )
  assert s_jax.dtype == dtype
  s = np.asarray(s_jax, np.float64)
  xf = np.asarray(x, np.float64)
  low, p, width = _natural_law(xf)
  mag = np.abs(s)
  assert np.all((mag == low) | (mag == low + width) | (xf >= 2.0**15))
  if dtype == jnp.float16:  # 60000 is in float16's top binade: no overflow
    assert np.all(s[:, 4] == 2.0**15)
  ok = slice(0, 4)
  se = np.sqrt(p[ok] * (1 - p[ok]) * width[ok] ** 2 / DRAWS)
  assert np.all(np.abs(s[:, ok].mean(axis=0) - xf[ok]) < Z * se + 1e-12)


def _dithering_law(x, levels, norm):
  """Natural dithering's two neighbours and P(up) per coordinate, float64."""
  xf = np.asarray(x, np.float64)
  scale = np.max(np.abs(xf)) if norm == math.inf else np.linalg.norm(xf)
  y = np.abs(xf) / scale
  grid = np.concatenate([[0.0], 2.0 ** np.arange(1 - levels, 1)])
  j = np.clip(np.searchsorted(grid, y, side='right') - 1, 0, levels - 1)
  lo, hi = grid[j], grid[j + 1]
  p = (y - lo) / (hi - lo)
  return scale * np.sign(xf) * lo, scale * np.sign(xf) * hi, p


def _dithering_sample_ok(samples, x, levels, norm):
  """Whether draws follow natural dithering's law, by its mean and variance.

  Per coordinate the law is two-point (lo w.p. 1 - p, hi w.p. p): the
  sample mean and the sample variance are each z-tested against it.
  """
  lo, hi, p = _dithering_law(x, levels, norm)
  n = len(samples)
  on_grid = np.all(
    np.isclose(samples, lo, rtol=1e-6) | np.isclose(samples, hi, rtol=1e-6)
  )
  mean = lo + p * (hi - lo)
  var = p * (1 - p) * (hi - lo) ** 2
  random = var > 0
  exact = np.allclose(samples[:, ~random], mean[~random], rtol=1e-6)
  z_mean = (samples.mean(0) - mean)[random] / np.sqrt(var[random] / n)
  # Var of the sample variance of a two-point law: (mu4 - var^2) / n.
  pq = (p * (1 - p))[random]
  mu4 = (hi - lo)[random] ** 4 * pq * (1 - 3 * pq)
  z_var = (samples.var(0)[random] - var[random]) / np.sqrt(
    (mu4 - var[random] ** 2) / n
  )
  return bool(
    on_grid
    and exact
    and np.all(np.abs(z_mean) < Z)
    and np.all(np.abs(z_var) < Z)
  )


def test_natural_dithering_is_unbiased_within_its_variance_factor():
  x = np.array([0.05, -0.3, 1.0, 2.2, -0.01, 0.0, 0.7, -1.6], np.float32)
  rng = np.random.default_rng(0)
  for norm in (2.0, math.inf):
    c = optax_zoo.natural_dithering_compressor(3, norm=norm)
    s = _draws(c, jnp.asarray(x))
    xf = np.float64(x)
    assert _dithering_sample_ok(s, x, 3, norm), norm
    err = ((s - xf) ** 2).sum(axis=1)
    ratio = err.mean() / np.sum(xf**2)
    assert ratio <= c.variance_factor(8), (norm, ratio)
    # The same test rejects wrong laws drawn in NumPy: rounding to the
    # nearest level (deterministic, variance too small), a fair coin
    # between the two levels (biased) and an unbiased rounding between 0
    # and the upper level (unbiased, variance too large: z ~ 2000).
    lo, hi, p = _dithering_law(x, 3, norm)
    u = rng.random((DRAWS, len(x)))
    nearest = np.broadcast_to(np.where(p >= 0.5, hi, lo), u.shape)
    coin = np.where(u < 0.5, hi, lo)
    p_skip = np.divide(xf, hi, out=np.zeros_like(xf), where=hi != 0)
    skip = np.where(u < p_skip, hi, 0.0)
    assert np.allclose(skip.mean(0), xf, atol=Z * np.abs(hi) / DRAWS**0.5)
    for name, wrong in (('nearest', nearest), ('coin', coin), ('skip', skip)):
      assert not _dithering_sample_ok(wrong, x, 3, norm), (norm, name)
    # ... and accepts the right law drawn in NumPy.
    assert _dithering_sample_ok(np.where(u < p, hi, lo), x, 3, norm), norm


def test_natural_dithering_law_accepts_the_right_law_and_rejects_wrong_ones():
  # y = |x| / ||x||_inf; levels 0, 1/4, 1/2, 1 (s = 3): y = 0.3 lies in
  # [1/4, 1/2] and rounds up with probability (0.3 - 1/4) / (1/4) = 0.2;
  # y = 0.1 in [0, 1/4] with probability 0.4; y = 0.8 with 0.6.
  x = jnp.array([0.3, 0.1, -0.8, 1.0])
  c = optax_zoo.natural_dithering_compressor(3, norm=math.inf)
  s = np.abs(_draws(c, x))[:, :3]
  counts = np.array(
    [(s[:, 0] == 0.5).sum(), (s[:, 1] == 0.25).sum(), (s[:, 2] == 1.0).sum()]
  )
  assert np.all(np.isin(s, [0.0, 0.25, 0.5, 1.0]))
  assert _law_pvalue(counts, DRAWS, np.array([0.2, 0.4, 0.6])) > 1e-3
  assert _law_pvalue(counts, DRAWS, np.array([0.5, 0.5, 0.5])) < 1e-12
  # Deterministic rounding to the nearest level: 0.3 -> 1/4, 0.1 -> 0,
  # 0.8 -> 1.
  assert _law_pvalue(counts, DRAWS, np.array([0.0, 0.0, 1.0])) < 1e-12


@pytest.mark.parametrize(('levels', 'width'), [(1, 1), (3, 2), (7, 3), (8, 4)])
def test_natural_dithering_payload(levels, width):
  c = optax_zoo.natural_dithering_compressor(levels)
  d = 37
  payload = _enc(c, jax.random.key(0), jnp.linspace(-1, 1, d))
  shapes = {k: (p.dtype, p.shape) for k, p in payload.items()}
  assert shapes == {
    'norm': (jnp.float32, ()),
    'levels': (jnp.uint8, (-(-d * width // 8),)),
    'sign': (jnp.uint8, (-(-d // 8),)),
  }
  assert c.payload_bytes((d,)) == 4 + -(-d * width // 8) + -(-d // 8)
  assert c.bits_per_coordinate((1024,)) == width + 1 + 32 / 1024


def test_natural_dithering_zero_nan_and_bf16():
  c = optax_zoo.natural_dithering_compressor(5)
  key = jax.random.key(0)
  np.testing.assert_array_equal(_rt(c, key, jnp.zeros(3)), np.zeros(3))
  assert np.all(np.isnan(_rt(c, key, jnp.array([1.0, jnp.nan, 2.0]))))
  # A non-finite norm decodes the whole leaf to NaN, for either norm (with
  # the inf-norm the inf itself used to come back as inf, the rest NaN).
  for cn in (c, optax_zoo.natural_dithering_compressor(3, norm=math.inf)):
    for bad in (jnp.inf, -jnp.inf):
      y = _rt(cn, key, jnp.array([1.0, bad, 2.0, 0.0]))
      assert np.all(np.isnan(y)), (cn.name, y)
  # Huge values: the scaled 2-norm does not overflow.
  assert np.all(np.isfinite(_rt(c, key, jnp.array([3e38, -3e38, 1.0]))))
  assert _rt(c, key, jnp.array([0.5, -1.5, 3.0], jnp.bfloat16)).dtype == (
    jnp.bfloat16
  )


def test_random_k_scaled_is_unbiased_with_its_variance():
  d, k = 10, 3
  x = jnp.arange(1.0, d + 1.0)
  c = optax_zoo.random_k_compressor(k)
  assert c.unbiased and c.variance_factor(d) == pytest.approx(d / k - 1)
  s = _draws(c, x)
  xf = np.float64(x)
  sd = xf * np.sqrt(d / k - 1)  # per coordinate: x^2 (d/k - 1)
  z = (s.mean(axis=0) - xf) / (sd / np.sqrt(DRAWS))
  assert np.all(np.abs(z) < Z), z
  # Exactly k coordinates, each kept with probability k/d.
  assert np.all((s != 0).sum(axis=1) == k)
  kept = (s != 0).sum(axis=0)
  assert _law_pvalue(kept, DRAWS, np.full(d, k / d)) > 1e-3
  assert _law_pvalue(kept, DRAWS, np.full(d, 0.5)) < 1e-12
  err = ((s - xf) ** 2).sum(axis=1)
  np.testing.assert_allclose(
    err.mean() / np.sum(xf**2),
    d / k - 1,
    rtol=Z * err.std() / err.mean() / np.sqrt(DRAWS),
  )


def test_random_k_unscaled_and_top_k_are_contractions():
  x = jnp.array([0.5, -3.0, 2.0, 0.1, -1.0])
  top = optax_zoo.top_k_compressor(2)
  assert not top.unbiased
  np.testing.assert_array_equal(
    _rt(top, jax.random.key(0), x), [0.0, -3.0, 2.0, 0.0, 0.0]
  )
  payload = _enc(top, jax.random.key(0), x)
  assert payload['values'].dtype == jnp.float32
  assert payload['indices'].dtype == jnp.int32
  assert top.payload_bytes((5,)) == 2 * 8
  assert top.payload_bytes((5,), jnp.bfloat16) == 2 * 6
  unscaled = optax_zoo.random_k_compressor(2, scaled=False)
  assert not unscaled.unbiased
  s = _draws(unscaled, x, n=4000)
  xf = np.float64(x)
  ratio = ((s - xf) ** 2).sum(axis=1).mean() / np.sum(xf**2)
  assert ratio == pytest.approx(1 - 2 / 5, rel=0.05)
  assert top.variance_factor(5) == pytest.approx(1 - 2 / 5)
  assert np.sum((np.asarray(_rt(top, None, x)) - xf) ** 2) <= (
    1 - 2 / 5
  ) * np.sum(xf**2)


def test_identity_compressor():
  c = optax_zoo.identity_compressor()
  x = jnp.array([1.5, -2.0], jnp.bfloat16)
  np.testing.assert_array_equal(_rt(c, jax.random.key(0), x), x)
  assert _rt(c, jax.random.key(0), x).dtype == jnp.bfloat16
  assert (
    c.payload_bytes((10,)) == 40 and c.payload_bytes((10,), jnp.bfloat16) == 20
  )
  assert c.variance_factor(3) == 0.0


@pytest.mark.parametrize(
  ('build', 'match'),
  [
    (lambda: optax_zoo.top_k_compressor(0), '`k`'),
    (lambda: optax_zoo.random_k_compressor(-1), '`k`'),
    (lambda: optax_zoo.top_k_compressor(2.5), '`k`'),
    (lambda: optax_zoo.random_k_compressor(2, scaled='yes'), '`scaled`'),
    (lambda: optax_zoo.natural_dithering_compressor(0), '`levels`'),
    (lambda: optax_zoo.natural_dithering_compressor(127), '`levels`'),
    (lambda: optax_zoo.natural_dithering_compressor(3, norm=1.0), '`norm`'),
  ],
)
def test_bad_construction_raises(build, match):
  with pytest.raises(ValueError, match=match):
    build()


def test_k_larger_than_the_leaf_raises_at_trace_time():
  for c in (optax_zoo.top_k_compressor(4), optax_zoo.random_k_compressor(4)):
    with pytest.raises(ValueError, match=r'`k`.*\[1, 3\]'):
      jax.jit(c.compress)(jax.random.key(0), jnp.ones(3))
    with pytest.raises(ValueError, match='`k`'):
      c.payload_bytes((3,))


def test_float64_input_is_rejected():
  with jax.enable_x64(True):
    x = jnp.ones(3, jnp.float64)
    with pytest.raises(ValueError, match='`x`'):
      optax_zoo.natural_compressor().compress(jax.random.key(0), x)


def test_sparsifiers_do_not_hide_non_finite_values():
  x = jnp.array([1.0, jnp.nan, 3.0, 2.0, 0.5])
  for c in (
    optax_zoo.top_k_compressor(1),
    optax_zoo.random_k_compressor(1),
    optax_zoo.random_k_compressor(2, scaled=False),
  ):
    for seed in range(3):
      y = _rt(c, jax.random.key(seed), x)
      assert not np.all(np.isfinite(y)), (c.name, seed)
