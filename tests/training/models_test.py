"""Tests for the NNX models."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from optax_zoo.training import CNN1D, MLP, ResNet1D
from optax_zoo.training import models as models_lib


def _num_params(model):
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _normal(*shape):
  return np.random.default_rng(0).standard_normal(shape, np.float32)


# Eager NNX calls compile op by op; one jit per call is much faster.
_apply = nnx.jit(lambda model, x: model(x))


@pytest.mark.parametrize(
  ('make', 'length', 'num_classes'),
  [
    (lambda rngs: MLP(40, rngs=rngs), 40, 10),
    (lambda rngs: MLP(64, (16, 8, 4), 3, rngs=rngs), 64, 3),
    (lambda rngs: CNN1D(rngs=rngs), 40, 10),
    (lambda rngs: CNN1D(3, channels=8, in_length=64, rngs=rngs), 64, 3),
    (lambda rngs: ResNet1D(rngs=rngs), 40, 10),
    (lambda rngs: ResNet1D(3, channels=8, num_blocks=3, rngs=rngs), 64, 3),
  ],
)
def test_models_map_features_to_logits(make, length, num_classes):
  # Abstract evaluation: checks shapes without compiling every init op.
  logits = nnx.eval_shape(lambda: make(nnx.Rngs(0))(jnp.zeros((5, length))))
  assert logits.shape == (5, num_classes)
  assert logits.dtype == jnp.float32


def test_cnn_has_the_reference_parameter_count():
  # mnist1d's ConvBase: 150 + 1900 + 1900 conv weights and biases, 1260 head.
  assert _num_params(nnx.eval_shape(lambda: CNN1D(rngs=nnx.Rngs(0)))) == 5210


def test_mlp_is_plain_relu_layers():
  model = nnx.eval_shape(lambda: MLP(40, (100, 100), rngs=nnx.Rngs(0)))
  assert _num_params(model) == 40 * 100 + 100 + 100 * 100 + 100 + 1010


@pytest.mark.parametrize(
  ('length', 'c_in', 'kernel', 'stride'),
  [(40, 1, 5, 2), (19, 25, 3, 2), (10, 25, 3, 2), (20, 8, 3, 1)],
)
def test_matmul_convolution_equals_lax_conv(length, c_in, kernel, stride):
  x, w = _normal(3, length, c_in), _normal(kernel, c_in, 7)
  expected = jax.lax.conv_general_dilated(
    x, w, (stride,), ((1, 1),), dimension_numbers=('NWC', 'WIO', 'NWC')
  )
  conv = jax.jit(models_lib._conv1d_as_matmul, static_argnums=(2, 3))
  got = conv(x, w, (stride,), ((1, 1),))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_resnet_batchnorm_uses_batch_statistics_only_in_train_mode():
  model = ResNet1D(channels=8, rngs=nnx.Rngs(0))
  x = 3.0 + 2.0 * _normal(16, 40)
  before = jax.tree.map(jnp.copy, nnx.state(model, nnx.BatchStat))
  model.train()
  train_logits = _apply(model, x)
  after = nnx.state(model, nnx.BatchStat)
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before, after)
  assert all(jax.tree.leaves(changed))
  model.eval()
  eval_logits = _apply(model, x)
  assert not np.allclose(train_logits, eval_logits, atol=1e-3)
  frozen = jax.tree.map(jnp.copy, nnx.state(model, nnx.BatchStat))
  _apply(model, x)
  jax.tree.map(np.testing.assert_array_equal, frozen, after)


def test_resnet_skip_flag_changes_the_function_not_the_parameters():
  with_skip = ResNet1D(channels=8, skip=True, rngs=nnx.Rngs(0))
  without = ResNet1D(channels=8, skip=False, rngs=nnx.Rngs(0))
  jax.tree.map(
    np.testing.assert_array_equal,
    nnx.state(with_skip, nnx.Param),
    nnx.state(without, nnx.Param),
  )
  x = _normal(4, 40)
  with_skip.eval()
  without.eval()
  assert not np.allclose(_apply(with_skip, x), _apply(without, x), atol=1e-3)


def test_mlp_dropout_is_random_in_training_and_off_in_eval():
  x = jnp.ones((4, 40))
  model = MLP(40, dropout=0.5, rngs=nnx.Rngs(0))
  model.train()
  first, second = _apply(model, x), _apply(model, x)
  assert not np.allclose(first, second)  # a fresh mask each call
  model.eval()
  plain = MLP(40, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(_apply(model, x), _apply(plain, x), rtol=1e-6)


def test_mlp_dropout_steps_draw_fresh_masks_in_the_training_loop():
  from optax_zoo import training

  data = training.digits()
  histories = training.train_seeds(
    lambda rngs: MLP(64, (32,), dropout=0.3, rngs=rngs),
    optax.adam(1e-2),
    data,
    seeds=[0, 1],
    steps=40,
    eval_every=20,
    progress=False,
  ).histories
  assert histories[0].final_accuracy > 0.5
  assert histories[0].final_accuracy != histories[1].final_accuracy


@pytest.mark.parametrize('rate', [-0.1, 1.0])
def test_mlp_rejects_dropout_outside_unit_interval(rate):
  with pytest.raises(ValueError, match='dropout'):
    MLP(40, dropout=rate, rngs=nnx.Rngs(0))


def test_ws_conv_standardizes_each_output_channel_over_its_fan_in():
  conv = models_lib.WSConv1D(3, 4, 5, 2, rngs=nnx.Rngs(0))
  conv.kernel.value = 3.0 + 2.0 * conv.kernel.value  # any mean and scale
  conv.gain.value = jnp.array([1.0, 2.0, 0.5, 1.0])
  w = np.asarray(conv.standardized_kernel(), np.float64)
  fan_in = 5 * 3
  np.testing.assert_allclose(w.mean(axis=(0, 1)), 0.0, atol=1e-6)
  np.testing.assert_allclose(
    np.sqrt(fan_in * w.var(axis=(0, 1))), [1.0, 2.0, 0.5, 1.0], rtol=1e-4
  )
  # The convolution uses the standardized kernel (and the bias).
  conv.bias.value = jnp.arange(4.0)
  x = _normal(2, 11, 3)
  want = models_lib._conv1d_as_matmul(
    x, jnp.asarray(w, jnp.float32), (2,), ((1, 1),)
  ) + jnp.arange(4.0)
  np.testing.assert_allclose(conv(x), want, rtol=1e-5, atol=1e-5)


def test_ws_gn_cnn_is_private_friendly_and_left_to_the_vmap_path():
  from optax_zoo.privacy import check_private_model, unsupported_layers

  model = CNN1D(rngs=nnx.Rngs(0), weight_standardization=True, norm_groups=5)
  assert model(jnp.zeros((2, 40))).shape == (2, 10)
  check_private_model(model)  # GroupNorm normalizes within one example
  problems = unsupported_layers(model)
  assert any('WSConv1D' in p for p in problems)
  assert any('GroupNorm' in p for p in problems)
  # One example's output does not depend on the rest of the batch.
  x = _normal(4, 40)
  np.testing.assert_allclose(model(x)[:1], model(x[:1]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
  'bad',
  [
    {'norm_groups': 4},
    {'norm_groups': 0},
    {'weight_standardization': 1},
  ],
)
def test_cnn_rejects_bad_normalization_arguments(bad):
  with pytest.raises(ValueError, match=next(iter(bad))):
    CNN1D(rngs=nnx.Rngs(0), **bad)
