"""Tests for `ScaleInvariantCNN` and its mask."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import optax_zoo
from optax_zoo.training import ScaleInvariantCNN, scale_invariant_mask


def _split(**kwargs):
  model = ScaleInvariantCNN(rngs=nnx.Rngs(0), **kwargs)
  model.train()  # BatchNorm on batch statistics, as in training
  return nnx.split(model, nnx.Param, ...)


def _loss_fn(graphdef, rest):
  x = jax.random.normal(jax.random.key(1), (64, 40))
  y = jnp.arange(64) % 10

  @jax.jit
  def loss(params):
    logits = nnx.merge(graphdef, params, rest, copy=True)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return loss


def _scaled(params, mask, scale_fn):
  return jax.tree.map(lambda p, m: scale_fn(p) * p if m else p, params, mask)


def test_mask_selects_the_convolution_kernels():
  _, params, _ = _split()
  mask = scale_invariant_mask(params)
  picked = jax.tree_util.tree_flatten_with_path(mask)[0]
  kernels = {jax.tree_util.keystr(k) for k, m in picked if m}
  assert len(kernels) == 4 and all('convs' in k for k in kernels)
  assert sum(jax.tree.leaves(mask)) == 4  # of the 6 leaves: head w and b
  head = params['head']['kernel'][...]
  np.testing.assert_allclose(np.linalg.norm(head), 10.0, rtol=1e-6)


def test_loss_is_invariant_to_scaling_the_masked_weights():
  graphdef, params, rest = _split()
  mask = scale_invariant_mask(params)
  loss = _loss_fn(graphdef, rest)
  base = float(loss(params))
  rng = np.random.default_rng(0)
  for joint in (0.5, 3.0):
    got = loss(_scaled(params, mask, lambda p, s=joint: s))
    np.testing.assert_allclose(float(got), base, rtol=1e-4)

  # Each output filter (last axis) on its own scale: BatchNorm is per channel.
  def per_filter(p):
    return jnp.asarray(rng.uniform(0.5, 2.0, p.shape[-1]), p.dtype)

  np.testing.assert_allclose(
    float(loss(_scaled(params, mask, per_filter))), base, rtol=1e-4
  )
  # The head is not scale-invariant: the same test on it must see a change.
  head_mask = jax.tree.map(lambda m: not m, mask)
  assert abs(float(loss(_scaled(params, head_mask, lambda p: 2.0))) - base) > (
    1e-2
  )


def test_sphere_training_moves_the_kernels_only_and_keeps_their_norm():
  graphdef, params, rest = _split(channels=4, depth=2)
  loss = _loss_fn(graphdef, rest)
  tx = optax_zoo.sphere_sgd(
    effective_lr=0.05, mask=scale_invariant_mask, learning_rate=0.0
  )
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    value, grads = jax.value_and_grad(loss)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, value

  start = jax.tree.map(jnp.copy, params)
  values = []
  for _ in range(30):
    params, state, value = step(params, state)
    values.append(float(value))
  mask = scale_invariant_mask(params)
  norm = jnp.sqrt(
    sum(
      jnp.sum(p**2)
      for p, m in zip(
        jax.tree.leaves(params), jax.tree.leaves(mask), strict=True
      )
      if m
    )
  )
  np.testing.assert_allclose(float(norm), float(state.norm0), rtol=1e-6)
  jax.tree.map(np.testing.assert_array_equal, params['head'], start['head'])
  assert values[-1] < values[0] - 0.1
