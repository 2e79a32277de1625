"""Tests of `dp_aggregate` and `dp_sgd`: the noise, the divisor, the state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

import optax_zoo
from optax_zoo._src import test_utils as tu

_SIGMA, _CLIP = 1.3, 0.7


def _agg(**kw):
  return optax_zoo.dp_aggregate(
    **{
      'clip_norm': _CLIP,
      'noise_multiplier': _SIGMA,
      'expected_batch_size': 1,
      'key': 0,
      **kw,
    }
  )


def _step(tx, updates, state=None):
  state = tx.init(updates) if state is None else state
  return jax.jit(tx.update)(updates, state)


def test_noise_is_gaussian_with_scale_sigma_times_clip_norm():
  # The noised sum minus the sum, over 20,000 coordinates, against
  # N(0, (sigma C)^2) by Kolmogorov-Smirnov (as jax-privacy's own test).
  # Power: a scale off by a third moves the CDF by ~0.07 at its widest,
  # against a critical value of 0.019 at p = 1e-6 for n = 20,000, so the
  # wrong scales are rejected with probability ~1 (fixed seeds here).
  clipped_sum = jnp.linspace(-3.0, 3.0, 20_000)
  for seed in (0, 1):
    out, _ = _step(_agg(key=seed), clipped_sum)
    noise = np.asarray(out - clipped_sum, np.float64)
    scale = _SIGMA * _CLIP
    assert scipy.stats.kstest(noise, 'norm', args=(0, scale)).pvalue > 0.01
    for wrong in (scale * 4 / 3, scale * 2 / 3):
      assert scipy.stats.kstest(noise, 'norm', args=(0, wrong)).pvalue < 1e-6


def test_divides_by_the_expected_batch_size_after_the_noise():
  clipped_sum = {'w': jnp.arange(6.0).reshape(2, 3), 'b': jnp.ones(3)}
  quiet, _ = _step(
    _agg(noise_multiplier=0.0, expected_batch_size=8), clipped_sum
  )
  tu.assert_trees_close(
    quiet, jax.tree.map(lambda x: x / 8, clipped_sum), rtol=0, atol=0
  )
  # Same key, other divisor: the noise is drawn once, then divided.
  out3, _ = _step(_agg(expected_batch_size=3), clipped_sum)
  out9, _ = _step(_agg(expected_batch_size=9), clipped_sum)
  tu.assert_trees_close(
    jax.tree.map(lambda x: 3 * x, out3),
    jax.tree.map(lambda x: 9 * x, out9),
    rtol=1e-5,
    atol=1e-6,
  )


def test_empty_batch_gives_a_finite_noise_only_step():
  zeros = jnp.zeros(5_000)
  out, _ = _step(_agg(expected_batch_size=50), zeros)
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(np.std(out), _SIGMA * _CLIP / 50, rtol=0.05)


def test_noise_key_is_in_the_state_and_split_every_step():
  tx = _agg()
  state = tx.init(jnp.zeros(100))
  assert state.rng_key.dtype == jnp.uint32
  out1, state1 = _step(tx, jnp.zeros(100), state)
  out2, state2 = _step(tx, jnp.zeros(100), state1)
  assert not np.array_equal(state1.rng_key, state.rng_key)
  assert int(state2.count) == 2
  assert abs(np.corrcoef(out1, out2)[0, 1]) < 0.3
  again, _ = _step(_agg(), jnp.zeros(100))
  np.testing.assert_array_equal(out1, again)
  other, _ = _step(_agg(key=jax.random.key(1)), jnp.zeros(100))
  assert not np.array_equal(out1, other)


@pytest.mark.parametrize('bad', [jnp.nan, jnp.inf])
def test_non_finite_sum_is_not_made_finite(bad):
  out, _ = _step(_agg(), jnp.array([1.0, bad, 2.0]))
  assert np.isfinite(out[0]) and not np.isfinite(out[1])


def test_chains_before_an_optax_zoo_optimizer():
  clipped_sum = jnp.array([4.0, -2.0, 1.0])
  tx = optax.chain(
    _agg(noise_multiplier=0.0, expected_batch_size=4), optax_zoo.adam(0.1)
  )
  out, _ = _step(tx, clipped_sum)
  ref, _ = _step(optax_zoo.adam(0.1), clipped_sum / 4)
  np.testing.assert_allclose(out, ref, rtol=1e-6)


def test_dp_sgd_is_dp_aggregate_then_sgd():
  clipped_sum = jnp.array([4.0, -2.0, 1.0])
  kw = dict(clip_norm=_CLIP, noise_multiplier=_SIGMA, expected_batch_size=5)
  tx = optax_zoo.dp_sgd(0.1, momentum=0.9, key=3, **kw)
  ref = optax.chain(
    optax_zoo.dp_aggregate(key=3, **kw), optax_zoo.sgd(0.1, momentum=0.9)
  )
  state, ref_state = tx.init(clipped_sum), ref.init(clipped_sum)
  for _ in range(2):
    out, state = _step(tx, clipped_sum, state)
    expected, ref_state = _step(ref, clipped_sum, ref_state)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_multisteps_adds_noise_once_to_the_mean_of_the_sums():
  # Documented behaviour: MultiSteps(dp_aggregate(sigma / k, B), k) is
  # dp_aggregate(sigma, k B) on the sum of the k clipped sums.
  k, b = 2, 4
  sums = [jnp.array([1.0, -2.0, 3.0]), jnp.array([0.5, 0.5, -1.0])]
  multi = optax.MultiSteps(
    _agg(noise_multiplier=_SIGMA / k, expected_batch_size=b), k
  )
  state = multi.init(sums[0])
  for s in sums:
    out, state = jax.jit(multi.update)(s, state)
  union, _ = _step(_agg(expected_batch_size=k * b), sums[0] + sums[1])
  np.testing.assert_allclose(out, union, rtol=1e-5, atol=1e-6)


def test_noise_multiplier_can_be_injected():
  tx = optax.inject_hyperparams(optax_zoo.dp_aggregate, static_args=('key',))(
    clip_norm=_CLIP, noise_multiplier=_SIGMA, expected_batch_size=1, key=0
  )
  state = tx.init(jnp.zeros(50))
  out, _ = jax.jit(tx.update)(jnp.zeros(50), state)
  state.hyperparams['noise_multiplier'] = jnp.asarray(2 * _SIGMA)
  doubled, _ = jax.jit(tx.update)(jnp.zeros(50), state)
  np.testing.assert_allclose(doubled, 2 * out, rtol=1e-5)


@pytest.mark.parametrize(
  'bad',
  [
    {'clip_norm': 0.0},
    {'clip_norm': -1.0},
    {'noise_multiplier': -0.1},
    {'expected_batch_size': 0},
    {'key': None},
  ],
)
def test_bad_arguments_raise_naming_them(bad):
  (name,) = bad
  with pytest.raises(ValueError, match=name):
    _agg(**bad)
