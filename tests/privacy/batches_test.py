"""Tests of the labelled batch sources: Poisson (padded), shuffled, fixed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_zoo
from optax_zoo.privacy import SamplingScheme


def _sizes(source):
  return np.array([int(b.mask.sum()) for b in source])


def test_poisson_batches_keep_one_shape_with_a_prefix_mask():
  source = optax_zoo.poisson_batches(
    200, sampling_rate=0.05, max_batch_size=40, steps=50, seed=0
  )
  for batch in source:
    n = int(batch.mask.sum())
    assert batch.indices.shape == batch.mask.shape == (40,)
    assert batch.indices.dtype == np.int32
    np.testing.assert_array_equal(batch.mask, np.arange(40) < n)
    real = batch.indices[:n]
    assert len(set(real.tolist())) == n and np.all((0 <= real) & (real < 200))
    assert np.all(batch.indices[n:] == 0)


def test_poisson_inclusion_rate_is_the_sampling_rate():
  # 400 steps of Binomial(100, 0.1): total 4000 +- 60 (one sd); 5 sd here.
  q, n, steps = 0.1, 100, 400
  source = optax_zoo.poisson_batches(
    n, sampling_rate=q, max_batch_size=n, steps=steps, seed=1
  )
  counts = np.zeros(n)
  for batch in source:
    counts[batch.indices[batch.mask]] += 1
  sd = np.sqrt(steps * n * q * (1 - q))
  assert abs(counts.sum() - steps * n * q) < 5 * sd
  # every example with its own rate: no example far off q (binomial 400, q)
  assert np.all(np.abs(counts - steps * q) < 5 * np.sqrt(steps * q * (1 - q)))
  assert source.expected_batch_size == pytest.approx(q * n)


def test_truncation_caps_the_batch_and_changes_the_label():
  capped = optax_zoo.poisson_batches(
    100, sampling_rate=0.5, max_batch_size=10, steps=20, seed=0
  )
  assert capped.scheme == SamplingScheme.TRUNCATED_POISSON
  assert np.all(_sizes(capped) == 10)  # Binomial(100, 0.5) always > 10
  whole = optax_zoo.poisson_batches(
    100, sampling_rate=0.5, max_batch_size=100, steps=2, seed=0
  )
  assert whole.scheme == SamplingScheme.POISSON


def test_poisson_batches_can_be_empty_and_the_step_stays_finite():
  source = optax_zoo.poisson_batches(
    50, sampling_rate=0.01, max_batch_size=8, steps=30, seed=0
  )
  assert np.any(_sizes(source) == 0)
  tx = optax_zoo.dp_aggregate(
    clip_norm=1.0,
    noise_multiplier=1.0,
    expected_batch_size=source.expected_batch_size,
    key=0,
  )
  out, _ = jax.jit(tx.update)(jnp.zeros(4), tx.init(jnp.zeros(4)))
  assert np.all(np.isfinite(out))


def test_padded_poisson_step_is_jitted_once_and_ignores_padding():
  # With no noise and a huge clip norm, the private step is the plain sum of
  # the real rows' gradients over the expected batch size; padding rows
  # (index 0, a real example) contribute exactly zero; one compilation.
  data = jax.random.normal(jax.random.key(0), (60, 3))
  source = optax_zoo.poisson_batches(
    60, sampling_rate=0.1, max_batch_size=16, steps=6, seed=2
  )
  tx = optax_zoo.dp_aggregate(
    clip_norm=1e6,
    noise_multiplier=0.0,
    expected_batch_size=source.expected_batch_size,
    key=0,
  )
  loss = lambda w, x: 0.5 * jnp.sum((w - x) ** 2)
  traces = []

  @jax.jit
  def step(w, x, mask):
    traces.append(1)
    clipped_sum, _ = optax_zoo.clipped_grad_sum(
      loss, w, x, clip_norm=1e6, mask=mask
    )
    return tx.update(clipped_sum, tx.init(w))[0]

  w = jnp.ones(3)
  for batch in source:
    out = step(w, data[batch.indices], jnp.asarray(batch.mask))
    real = data[batch.indices[batch.mask]]
    expected = jnp.sum(w - real, axis=0) / source.expected_batch_size
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
  assert len(traces) == 1


def test_shuffled_batches_visit_every_example_once_per_epoch():
  source = optax_zoo.shuffled_batches(10, batch_size=3, steps=6, seed=0)
  assert source.scheme == SamplingScheme.SHUFFLE
  batches = [b.indices.tolist() for b in source]
  assert all(len(b) == 3 for b in batches)
  first = [i for b in batches[:3] for i in b]
  second = [i for b in batches[3:] for i in b]
  assert len(set(first)) == 9 and len(set(second)) == 9  # remainder dropped
  assert first != second  # reshuffled


def test_fixed_size_batches_are_full_distinct_subsets():
  source = optax_zoo.fixed_size_batches(20, batch_size=5, steps=4, seed=0)
  assert source.scheme == SamplingScheme.FIXED_SIZE
  for batch in source:
    assert batch.mask.all() and len(set(batch.indices.tolist())) == 5


@pytest.mark.parametrize(
  'make, name',
  [
    (
      lambda: optax_zoo.shuffled_batches(4, batch_size=5, steps=1),
      'num_examples',
    ),
    (
      lambda: optax_zoo.fixed_size_batches(4, batch_size=5, steps=1),
      'num_examples',
    ),
    (
      lambda: optax_zoo.poisson_batches(
        4, sampling_rate=0.5, max_batch_size=5, steps=1
      ),
      'num_examples',
    ),
    (
      lambda: optax_zoo.poisson_batches(
        10, sampling_rate=0.0, max_batch_size=5, steps=1
      ),
      'sampling_rate',
    ),
    (
      lambda: optax_zoo.poisson_batches(
        10, sampling_rate=1.5, max_batch_size=5, steps=1
      ),
      'sampling_rate',
    ),
  ],
)
def test_bad_sizes_raise_naming_the_argument(make, name):
  with pytest.raises(ValueError, match=name):
    make()
