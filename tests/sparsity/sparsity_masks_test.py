"""Sparsity distributions (uniform, ER, ERK) and random masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from optax_zoo import sparsity as sp

_LENET = [(784, 300), (300, 100), (100, 10)]


def test_erk_on_lenet_300_100_matches_the_hand_computation():
  # By hand: raw densities (n_in + n_out) / (n_in n_out); eps from the
  # whole budget, 0.1 * 266200 = 26620 over 1084 + 400 + 110 = 1594, gives
  # the last layer 0.11 * 16.70 > 1, so it is dense and counts 1000 ones
  # (900 over its 10%); then eps = (26520 - 900) / (1084 + 400).
  eps = (0.1 * (235200 + 30000) - 0.9 * 1000) / (1084 + 400)
  expected = [1 - eps * 1084 / 235200, 1 - eps * 400 / 30000, 0.0]
  got = [1 - d for d in sp.sparsity_distribution(_LENET, 0.9, 'erk')]
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  np.testing.assert_allclose(got, [0.9204, 0.7698, 0.0], atol=1e-4)
  # Dense matrices: ER and ERK agree.
  assert sp.sparsity_distribution(_LENET, 0.9, 'erdos_renyi') == pytest.approx(
    sp.sparsity_distribution(_LENET, 0.9, 'erk')
  )


@pytest.mark.parametrize('distribution', sp.DISTRIBUTIONS)
@pytest.mark.parametrize('target', [0.0, 0.5, 0.9, 0.99])
def test_distributions_hold_the_overall_budget(distribution, target):
  shapes = [(3, 3, 8, 16), (3, 3, 16, 32), (512, 10), (10, 10)]
  densities = sp.sparsity_distribution(shapes, target, distribution)
  sizes = np.array([np.prod(s) for s in shapes], float)
  assert np.dot(densities, sizes) == pytest.approx((1 - target) * sizes.sum())
  assert all(0 < d <= 1 for d in densities)


def test_er_uses_fan_in_and_out_erk_every_dimension():
  shapes = [(3, 3, 8, 16), (5, 5, 16, 32)]
  er = sp.sparsity_distribution(shapes, 0.9, 'erdos_renyi')
  erk = sp.sparsity_distribution(shapes, 0.9, 'erk')
  raw_er = [(8 + 16) / (8 * 16), (16 + 32) / (16 * 32)]
  raw_erk = [(3 + 3 + 8 + 16) / (9 * 128), (5 + 5 + 16 + 32) / (25 * 512)]
  assert er[0] / er[1] == pytest.approx(raw_er[0] / raw_er[1])
  assert erk[0] / erk[1] == pytest.approx(raw_erk[0] / raw_erk[1])
  assert sp.sparsity_distribution(shapes, 0.9, 'uniform') == pytest.approx(
    [0.1, 0.1]
  )


def test_layers_kept_dense_count_against_the_budget():
  densities = sp.sparsity_distribution(_LENET, 0.8, 'uniform', dense=[1])
  assert densities[1] == 1.0
  # The other two share what is left: (0.2 * 266200 - 30000) / 236200.
  expected = (0.2 * 266200 - 30000) / 236200
  assert densities[0] == pytest.approx(expected)
  assert densities[2] == pytest.approx(expected)


def test_a_target_the_dense_layers_make_impossible_raises():
  with pytest.raises(ValueError, match='sparsity'):
    sp.sparsity_distribution(_LENET, 0.9, 'erk', dense=[0])
  with pytest.raises(ValueError, match='sparsity'):
    sp.sparsity_distribution(_LENET, 0.5, 'uniform', dense=[0, 1, 2])
  assert (
    sp.sparsity_distribution(_LENET, 0.0, 'erk', dense=[0, 1, 2]) == [1.0] * 3
  )


@pytest.mark.parametrize(
  'kwargs, name',
  [
    ({'sparsity': 1.0}, 'sparsity'),
    ({'sparsity': -0.5}, 'sparsity'),
    ({'distribution': 'random'}, 'distribution'),
    ({'dense': [7]}, 'dense'),
  ],
)
def test_bad_distribution_arguments_raise(kwargs, name):
  args = {'sparsity': 0.5, 'distribution': 'erk', **kwargs}
  with pytest.raises(ValueError, match=name):
    sp.sparsity_distribution(_LENET, **args)


@pytest.mark.parametrize('density', [0.0, 0.13, 0.25, 0.5, 0.77, 1.0])
def test_random_mask_has_exactly_round_density_times_size_ones(density):
  for seed in range(3):
    m = sp.random_mask(jax.random.key(seed), (7, 9), density)
    assert m.dtype == jnp.bool_ and m.shape == (7, 9)
    assert int(m.sum()) == round(density * 63)


def test_random_mask_positions_are_uniform():
  # Each of the 20 positions holds one of the 6 ones with probability 0.3:
  # the counts over 4000 masks must pass a chi-square test, and a mask
  # that favours the first positions must fail it.
  keys = jax.random.split(jax.random.key(0), 4000)
  masks = jax.vmap(lambda k: sp.random_mask(k, (4, 5), 0.3))(keys)
  counts = np.asarray(masks.reshape(4000, -1).sum(0))
  assert stats.chisquare(counts).pvalue > 1e-3
  biased = counts.copy()
  biased[:5] += 120
  biased[5:10] -= 120
  assert stats.chisquare(biased).pvalue < 1e-3


def test_init_masks_sparsifies_kernels_and_keeps_vectors_dense():
  params = {
    'conv': {'kernel': jnp.ones((3, 3, 4, 8)), 'bias': jnp.ones(8)},
    'dense': {'kernel': jnp.ones((32, 10)), 'bias': jnp.ones(10)},
    'scale': jnp.float32(1.0),
  }
  masks = sp.init_masks(jax.random.key(0), params, 0.8, 'erk')
  assert jax.tree.structure(masks) == jax.tree.structure(params)
  for m, p in zip(jax.tree.leaves(masks), jax.tree.leaves(params), strict=True):
    assert m.shape == p.shape and m.dtype == jnp.bool_
  assert bool(masks['conv']['bias'].all()) and bool(masks['scale'])
  shapes = [(3, 3, 4, 8), (32, 10)]
  want = sp.sparsity_distribution(shapes, 0.8, 'erk')
  kernels = [masks['conv']['kernel'], masks['dense']['kernel']]
  for m, d in zip(kernels, want, strict=True):
    assert int(m.sum()) == round(d * m.size)
  # A predicate: only the dense kernel, which then takes the whole target.
  only = lambda p: jax.tree.map(lambda x: x.ndim == 2, p)
  masks = sp.init_masks(jax.random.key(0), params, 0.8, mask=only)
  assert bool(masks['conv']['kernel'].all())
  assert int(masks['dense']['kernel'].sum()) == 64
  # Kept dense but counted: the conv kernel pays for the dense one.
  keep = {
    'conv': {'kernel': False, 'bias': False},
    'dense': True,
    'scale': False,
  }
  masks = sp.init_masks(
    jax.random.key(0), params, 0.4, 'uniform', keep_dense=keep
  )
  assert bool(masks['dense']['kernel'].all())
  # 0.6 * (288 + 320) ones in all, 320 of them the dense kernel's.
  assert int(masks['conv']['kernel'].sum()) == round(0.6 * 608 - 320)
  with pytest.raises(ValueError, match='sparsity'):
    sp.init_masks(jax.random.key(0), params, 0.5, keep_dense=keep)


def test_apply_masks_and_densities():
  params = {'w': jnp.arange(1.0, 7.0).reshape(2, 3), 'b': jnp.ones(2)}
  masks = {
    'w': jnp.array([[True, False, True], [False, False, True]]),
    'b': jnp.ones(2, bool),
  }
  out = sp.apply_masks(params, masks)
  np.testing.assert_array_equal(out['w'], [[1, 0, 3], [0, 0, 6]])
  np.testing.assert_array_equal(out['b'], [1, 1])
  assert float(sp.mask_densities(masks)['w']) == 0.5


def _reference_erk(shapes, sparsity, include_kernel):
  """google-research/rigl's integer budget: N - floor(s N) ones per layer."""
  dense = set()
  while True:
    rhs, divisor, raw = 0.0, 0.0, {}
    for i, shape in enumerate(shapes):
      n = int(np.prod(shape))
      zeros = int(np.floor(sparsity * n))
      if i in dense:
        rhs -= zeros
      else:
        rhs += n - zeros
        dims = shape if include_kernel else shape[-2:]
        raw[i] = np.sum(dims) / np.prod(dims)
        divisor += raw[i] * n
    eps = rhs / divisor
    top = max(raw.values())
    if top * eps <= 1:
      return [1.0 if i in dense else eps * raw[i] for i in range(len(shapes))]
    dense |= {i for i, r in raw.items() if r == top}


@pytest.mark.parametrize('distribution', ['erdos_renyi', 'erk'])
@pytest.mark.parametrize('target', [0.5, 0.8, 0.9, 0.95])
def test_within_a_weight_per_layer_of_the_reference_budget(
  distribution, target
):
  shapes = [(3, 3, 3, 16), (3, 3, 16, 32), (3, 3, 32, 64), (1024, 10), *_LENET]
  ours = sp.sparsity_distribution(shapes, target, distribution)
  ref = _reference_erk(shapes, target, distribution == 'erk')
  # Each layer's floor moves the reference's budget by less than a weight.
  sizes = np.array([np.prod(s) for s in shapes])
  assert np.sum(np.abs(np.subtract(ours, ref)) * sizes) < len(shapes)
  np.testing.assert_allclose(ours, ref, rtol=1e-3)
