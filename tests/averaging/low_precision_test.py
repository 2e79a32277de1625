"""Averaging bfloat16 parameters: float32 accumulators by default."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo


def _ramp(tx, steps=1000):
  """bfloat16 weights walked from 1 to 2; the iterates and final state."""
  w = jnp.ones(1, jnp.bfloat16)
  state, update = tx.init(w), jax.jit(tx.update)
  seen = []
  for i in range(steps):
    target = 1.0 + (i + 1) / steps
    # sgd(1.0) on the gradient w - target moves w onto the target.
    updates, state = update((w - target).astype(w.dtype), state, w)
    w = optax.apply_updates(w, updates)
    seen.append(float(w[0]))
  return w, state, np.mean(seen)


def test_bf16_ramp_average_keeps_moving():
  # Before: a bfloat16 mean stopped at exactly 1.0 (true mean 1.5005).
  w, state, true_mean = _ramp(optax_zoo.swa(optax.sgd(1.0), start_step=0))
  got = optax_zoo.eval_params(state, w)
  assert got.dtype == jnp.bfloat16
  assert state.mean.dtype == jnp.float32
  # One bfloat16 rounding of the exact mean.
  np.testing.assert_allclose(float(got[0]), true_mean, atol=4e-3)
  # The option is honoured: a bfloat16 accumulator stalls as before.
  _, state16, _ = _ramp(
    optax_zoo.swa(optax.sgd(1.0), start_step=0, accumulator_dtype='bfloat16')
  )
  assert float(optax_zoo.eval_params(state16, w)[0]) < 1.1


def _mlp_problem():
  kx, kt, k1, k2 = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(kx, (256, 16))
  teacher = jax.random.normal(kt, (16, 4))
  y = jnp.tanh(x @ teacher)
  params = {
    'w1': 0.3 * jax.random.normal(k1, (16, 32)),
    'w2': 0.3 * jax.random.normal(k2, (32, 4)),
  }
  params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)

  def loss_fn(p):
    f32 = jax.tree.map(lambda a: a.astype(jnp.float32), p)
    return jnp.mean((jnp.tanh(x @ f32['w1']) @ f32['w2'] - y) ** 2)

  return params, loss_fn


def _train_mlp(tx, steps=300):
  params, loss_fn = _mlp_problem()
  state, grad = tx.init(params), jax.jit(jax.grad(loss_fn))
  update = jax.jit(tx.update)
  total = jax.tree.map(lambda p: np.zeros(p.shape), params)
  for _ in range(steps):
    updates, state = update(grad(params), state, params)
    params = optax.apply_updates(params, updates)
    total = jax.tree.map(
      lambda t, p: t + np.asarray(p, np.float64), total, params
    )
  true_mean = jax.tree.map(lambda t: t / steps, total)
  return params, state, true_mean, loss_fn


def _rel_error(got, want):
  num = sum(
    np.sum((np.asarray(g, np.float64) - w) ** 2)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)
  )
  den = sum(np.sum(w**2) for w in jax.tree.leaves(want))
  return float(np.sqrt(num / den))


@pytest.mark.parametrize('name', ['swa', 'swag', 'gadam'])
def test_bf16_mlp_average_is_the_mean_of_the_iterates(name):
  inner = optax.sgd(0.1, momentum=0.9)
  tx = {
    'swa': lambda: optax_zoo.swa(inner, start_step=0),
    'swag': lambda: optax_zoo.swag(inner, rank=2, start_step=0),
    'gadam': lambda: optax_zoo.gadam(3e-3, weight_decay=0.0, start_step=0),
  }[name]()
  params, state, true_mean, loss_fn = _train_mlp(tx)
  got = optax_zoo.eval_params(state, params)
  assert jax.tree.map(lambda g: g.dtype, got) == jax.tree.map(
    lambda p: p.dtype, params
  )
  # bfloat16 keeps 8 bits: the result is the mean rounded once (0.4%).
  assert _rel_error(got, true_mean) < 5e-3
  true_loss = loss_fn(jax.tree.map(jnp.asarray, true_mean))
  np.testing.assert_allclose(loss_fn(got), true_loss, rtol=2e-2)


def test_bf16_swag_samples_have_the_float64_spread():
  # Before: with bfloat16 moments the diagonal variance was mostly rounding
  # error and samples spread 2.3x too wide.
  w = jnp.full((64,), 1.0, jnp.bfloat16)
  tx = optax_zoo.swag(optax.sgd(1.0), rank=2, start_step=0)
  state, update = tx.init(w), jax.jit(tx.update)
  key, seen = jax.random.key(0), []
  for i in range(200):
    # Iterates 1 + 0.01 z: a small spread on a large mean, as weights have.
    target = 1.0 + 0.01 * jax.random.normal(jax.random.fold_in(key, i), (64,))
    updates, state = update((w - target).astype(w.dtype), state, w)
    w = optax.apply_updates(w, updates)
    seen.append(np.asarray(w, np.float64))
  want = np.std(seen, axis=0).mean()
  draw = jax.jit(
    jax.vmap(
      lambda k: optax_zoo.swag_sample(
        state, k, params=w, scale=1.0, diagonal_only=True
      )
    )
  )
  samples = np.asarray(draw(jax.random.split(jax.random.key(1), 2000)))
  got = (samples.astype(np.float64) - np.mean(seen, 0)).std(0).mean()
  assert samples.dtype == jnp.bfloat16
  np.testing.assert_allclose(got, want, rtol=0.15)
