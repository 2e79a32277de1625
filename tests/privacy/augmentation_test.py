"""Augmentation multiplicity (De et al. 2022) and the 1-D augmentation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from optax_zoo import training
from optax_zoo.privacy import augmentation_multiplicity, model_clipped_grad_sum
from optax_zoo.training.models import CNN1D, MLP

B, K, L = 6, 3, 40


def _loss(model, ex):  # a batch mean over the example's leading axis
  x, y = ex
  return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def _batch():
  k1, k2 = jax.random.split(jax.random.key(0))
  return (
    3.0 * jax.random.normal(k1, (B, L)),
    jax.random.randint(k2, (B,), 0, 10),
  )


AUG = training.shift_and_noise(max_shift=3, noise_std=0.5)


def _views(key, ex):
  x, y = ex
  return AUG(key, x[0])[None], y


def _by_hand(model, batch, key, clip):
  """Per example: K views from its key, mean gradient, clip, sum.

  A Python loop over examples and views (independent of the vectorized
  code under test); each view's gradient is one jitted function of the
  same shapes, compiled once.
  """
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def view_grad(params, k, x, y):
    view = (AUG(k, x)[None], y[None])
    return jax.grad(lambda p: _loss(nnx.merge(graphdef, p, rest), view))(params)

  keys = jax.random.split(key, B)
  total = jax.tree.map(jnp.zeros_like, params)
  for i in range(B):
    grads = [
      view_grad(params, k, batch[0][i], batch[1][i])
      for k in jax.random.split(keys[i], K)
    ]
    mean = jax.tree.map(lambda *g: sum(g) / K, *grads)
    norm = optax.tree.norm(mean)
    scale = jnp.minimum(1.0, clip / norm)
    total = jax.tree.map(lambda t, g, s=scale: t + s * g, total, mean)
  return total


@pytest.mark.parametrize('method', ['vmap', 'ghost'])
@pytest.mark.parametrize(
  'make',
  [
    lambda: MLP(L, (8,), rngs=nnx.Rngs(0)),
    lambda: CNN1D(channels=4, rngs=nnx.Rngs(0)),
  ],
  ids=['mlp', 'cnn1d'],
)
def test_multiplicity_clips_the_mean_gradient_of_the_views(make, method):
  model = make()
  batch, key, clip = _batch(), jax.random.key(7), 0.5
  loss = augmentation_multiplicity(_loss, _views, K)
  got, stats = jax.jit(
    lambda b, k: model_clipped_grad_sum(
      model, loss, b, clip_norm=clip, keep_batch_dim=True, key=k, method=method
    )
  )(batch, key)
  want = _by_hand(model, batch, key, clip)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
  assert 0 < int(stats.num_clipped) <= B
  # One view is not K views: the multiplicity is not a no-op.
  one = augmentation_multiplicity(_loss, _views, 1)
  g1, _ = jax.jit(
    lambda b, k: model_clipped_grad_sum(
      model, one, b, clip_norm=clip, keep_batch_dim=True, key=k
    )
  )(batch, key)
  assert not np.allclose(
    jax.tree.leaves(g1)[0], jax.tree.leaves(got)[0], rtol=1e-3
  )


def test_shift_and_noise_is_a_circular_shift_plus_gaussian_noise():
  x = jnp.arange(float(L))
  shift_only = training.shift_and_noise(max_shift=4, noise_std=0.0)
  keys = jax.random.split(jax.random.key(0), 2000)
  shifted = jax.vmap(shift_only, (0, None))(keys, x)
  shifts = -np.asarray(shifted[:, 0]) % L  # out[0] = x[-s mod L]
  assert set(np.unique(shifts).astype(int)) == {*range(5), *range(L - 4, L)}
  for row, s in zip(np.asarray(shifted[:20]), shifts[:20], strict=True):
    np.testing.assert_array_equal(row, np.roll(np.asarray(x), int(s)))
  noisy = training.shift_and_noise(max_shift=0, noise_std=0.3)
  noise = jax.vmap(noisy, (0, None))(keys, x) - x
  assert abs(float(noise.std()) - 0.3) < 0.01
  assert abs(float(noise.mean())) < 0.01


@pytest.mark.parametrize(
  'bad', [{'max_shift': -1}, {'max_shift': 1.5}, {'noise_std': -0.1}]
)
def test_shift_and_noise_rejects_bad_arguments(bad):
  kwargs = {'max_shift': 2, 'noise_std': 0.1, **bad}
  with pytest.raises(ValueError, match=next(iter(bad))):
    training.shift_and_noise(**kwargs)


def test_multiplicity_rejects_bad_arguments():
  with pytest.raises(ValueError, match='multiplicity'):
    augmentation_multiplicity(_loss, _views, 0)
  with pytest.raises(ValueError, match='augment_fn'):
    augmentation_multiplicity(_loss, 'flip', 2)
