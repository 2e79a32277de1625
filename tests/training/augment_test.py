"""Tests for the 1-D augmentations and batch augmentation in the loop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from optax_zoo.training import (
  MLP,
  Dataset,
  batch_augmentation,
  compose,
  crop_and_resize,
  digits,
  gaussian_noise,
  make_train_fn,
  random_scale,
  random_shift,
  train,
  train_seeds,
)

AUGMENTATIONS = {
  'shift': random_shift(3),
  'scale': random_scale(0.5, 1.5),
  'noise': gaussian_noise(0.1),
  'crop': crop_and_resize(0.6),
  'composed': compose(
    random_shift(2), crop_and_resize(0.8), gaussian_noise(0.1)
  ),
}


@pytest.fixture(scope='module')
def small():
  data = digits()
  return Dataset(
    data.x_train[:256],
    data.y_train[:256],
    data.x_test[:64],
    data.y_test[:64],
    num_classes=10,
    name='digits-small',
  )


@pytest.mark.parametrize('name', sorted(AUGMENTATIONS))
@pytest.mark.parametrize('shape', [(12,), (12, 3)])
def test_augmentations_are_deterministic_in_the_key_and_keep_shape(name, shape):
  aug = jax.jit(AUGMENTATIONS[name])
  x = jax.random.normal(jax.random.key(1), shape).astype(jnp.bfloat16)
  a, b = aug(jax.random.key(0), x), aug(jax.random.key(0), x)
  c = aug(jax.random.key(7), x)
  assert a.shape == x.shape and a.dtype == x.dtype
  np.testing.assert_array_equal(
    np.asarray(a, np.float32), np.asarray(b, np.float32)
  )
  assert not np.array_equal(
    np.asarray(a, np.float32), np.asarray(c, np.float32)
  )


def test_shift_scale_and_crop_do_what_they_say():
  x = jnp.arange(10.0)
  keys = jax.random.split(jax.random.key(0), 50)
  shifted = jax.vmap(random_shift(2), (0, None))(keys, x)
  # Every row is a circular shift of x by at most 2.
  for row in np.asarray(shifted):
    s = int(row[0]) if row[0] <= 2 else int(row[0]) - 10
    assert abs(s) <= 2
    np.testing.assert_array_equal(row, np.roll(np.arange(10.0), -s))
  scaled = jax.vmap(random_scale(0.5, 2.0), (0, None))(keys, x)
  ratio = np.asarray(scaled[:, 1:] / x[1:])
  np.testing.assert_allclose(ratio, ratio[:, :1].repeat(9, 1), rtol=1e-6)
  assert 0.5 <= ratio.min() and ratio.max() <= 2.0
  # A crop of a linear ramp, resampled, is again a linear ramp inside it.
  cropped = np.asarray(jax.vmap(crop_and_resize(0.5), (0, None))(keys, x))
  diffs = np.diff(cropped, axis=1)
  np.testing.assert_allclose(diffs, diffs[:, :1].repeat(9, 1), atol=1e-5)
  assert cropped.min() >= 0 and cropped.max() <= 9
  assert np.all(cropped[:, -1] - cropped[:, 0] >= 0.5 * 9 - 1 - 1e-5)
  np.testing.assert_array_equal(crop_and_resize(1.0)(keys[0], x), x)


@pytest.mark.parametrize(
  'make',
  [
    lambda: random_shift(-1),
    lambda: random_scale(0.0, 1.0),
    lambda: random_scale(2.0, 1.0),
    lambda: gaussian_noise(-0.1),
    lambda: crop_and_resize(0.0),
    lambda: crop_and_resize(1.5),
    lambda: compose(),
    lambda: batch_augmentation(random_shift(1), 0),
    lambda: batch_augmentation(random_shift(1), 1.5),
    lambda: batch_augmentation('shift', 2),
  ],
)
def test_bad_augmentation_arguments_raise(make):
  with pytest.raises(ValueError):
    make()


def _mlp(rngs):
  return MLP(64, (16,), rngs=rngs)


def test_multiplicity_one_with_the_identity_is_the_plain_step(small):
  plain = train(_mlp(nnx.Rngs(0)), optax.adam(1e-2), small, steps=6)
  same = train(
    _mlp(nnx.Rngs(0)),
    optax.adam(1e-2),
    small,
    steps=6,
    batch_transform=batch_augmentation(random_shift(0), 1),
  )
  for a, b in zip(
    jax.tree.leaves(plain.params), jax.tree.leaves(same.params), strict=True
  ):
    np.testing.assert_array_equal(a, b)


def test_the_step_trains_on_the_mean_over_all_augmented_copies(small):
  """One step of batch augmentation against the gradient computed by hand."""
  m, aug = 3, compose(random_shift(2), gaussian_noise(0.3))
  transform = batch_augmentation(aug, m)
  graphdef, params, rest = nnx.split(_mlp(nnx.Rngs(0)), nnx.Param, ...)
  tx = optax.sgd(1.0)
  x, y = jnp.asarray(small.x_train), jnp.asarray(small.y_train)
  batches = jnp.arange(8, dtype=jnp.int32)[None]
  key = jax.random.key(5)
  train_fn = make_train_fn(graphdef, tx, batch_transform=transform)
  new, _, _, losses = train_fn(
    jax.tree.map(jnp.copy, params), rest, tx.init(params), x, y, batches, 4, key
  )
  # By hand: step 4's key, each example repeated m times, example-major.
  keys = jax.random.split(jax.random.fold_in(key, 4), 8 * m)
  xa = jax.vmap(aug)(keys, jnp.repeat(x[:8], m, axis=0))
  ya = jnp.repeat(y[:8], m)

  @jax.jit
  def by_hand(params):
    def loss(p):
      logits = nnx.merge(graphdef, p, rest)(xa)
      return optax.softmax_cross_entropy_with_integer_labels(logits, ya).mean()

    value, g = jax.value_and_grad(loss)(params)
    return value, jax.tree.map(lambda p, g: p - g, params, g)

  value, expected = by_hand(params)
  np.testing.assert_allclose(losses[0], value, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_keys_follow_the_step_not_the_chunking(small):
  """A random transform's run is the same however evaluation splits it."""
  transform = batch_augmentation(gaussian_noise(0.5), 2)
  runs = [
    train(
      _mlp(nnx.Rngs(0)),
      optax.adam(1e-2),
      small,
      steps=6,
      eval_every=every,
      seed=3,
      batch_transform=transform,
    )
    for every in (6, 2)
  ]
  for a, b in zip(
    jax.tree.leaves(runs[0].params),
    jax.tree.leaves(runs[1].params),
    strict=True,
  ):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  other_seed = train(
    _mlp(nnx.Rngs(0)),
    optax.adam(1e-2),
    small,
    steps=6,
    seed=4,
    batch_transform=transform,
  )
  assert not np.allclose(
    jax.tree.leaves(other_seed.params)[0], jax.tree.leaves(runs[0].params)[0]
  )


def test_train_seeds_gives_each_seed_the_keys_train_gives_it(small):
  transform = batch_augmentation(gaussian_noise(0.5), 2)
  stacked = train_seeds(
    _mlp,
    optax.adam(1e-2),
    small,
    seeds=[1, 2],
    steps=4,
    batch_transform=transform,
  )
  alone = train(
    _mlp(nnx.Rngs(2)),
    optax.adam(1e-2),
    small,
    steps=4,
    seed=2,
    batch_transform=transform,
  )
  for a, b in zip(
    jax.tree.leaves(stacked.seed(1).params),
    jax.tree.leaves(alone.params),
    strict=True,
  ):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
