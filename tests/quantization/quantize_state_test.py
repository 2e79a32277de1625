"""quantize_state over several inner optimizers, its state size, its mask,
and the failure case with its guard."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from optax_zoo import quantization as q
from optax_zoo._src import test_utils as tu

_PARAMS = {'w': jnp.linspace(-1.0, 1.0, 64 * 80).reshape(64, 80), 'b': 0.1}


def _state_bytes(tx, params) -> float:
  """State bytes per parameter from shapes alone (nothing allocated)."""
  state = jax.eval_shape(tx.init, params)
  size = sum(p.size for p in jax.tree.leaves(params))
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)) / size


def test_adam_state_is_2_03_bytes_per_parameter_on_10m_parameters():
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  params = {
    'embed': f32(5120, 512),
    **{
      f'dense{i}': {'kernel': f32(1024, 1536), 'bias': f32(1536)}
      for i in (0, 1, 2, 3)
    },
    'head': f32(1024, 1000),
  }
  size = sum(p.size for p in jax.tree.leaves(params))
  assert 9.5e6 < size < 1.05e7
  for tx in (q.adam8bit(1e-3), q.quantize_state(optax.adam(1e-3))):
    assert _state_bytes(tx, params) <= 2.04
  state = jax.eval_shape(q.adam8bit(1e-3).init, params)
  mu = state[0].inner_state.mu
  assert mu['dense0']['kernel'].codes.dtype == jnp.uint8
  # 1536 < min_size = 4096: the bias stays float32.
  assert mu['dense0']['bias'].dtype == jnp.float32
  bf16_mu = optax.adam(1e-3, mu_dtype=jnp.bfloat16)
  assert _state_bytes(bf16_mu, params) == pytest.approx(6.0)


def test_first_update_equals_the_inner_optimizers():
  # Zero moments decode exactly and the update uses the unrounded new
  # moments, so the first step is the 32-bit one bit for bit.
  tx = q.quantize_state(optax.adam(0.1), min_size=0)
  grads = jax.tree.map(lambda p: jnp.sin(7 * p) + 0.5, _PARAMS)
  got, _ = tx.update(grads, tx.init(_PARAMS), _PARAMS)
  want, _ = optax.adam(0.1).update(grads, optax.adam(0.1).init(_PARAMS))
  tu.assert_trees_equal(got, want)


INNER = {
  'adamw': lambda: optax_zoo.adamw(0.01),
  'adan': lambda: optax_zoo.adan(0.01),
  'lamb': lambda: optax_zoo.lamb(0.01),
  'lion': lambda: optax.lion(1e-3),
  'sgd_momentum': lambda: optax_zoo.sgd(0.01, momentum=0.9),
}


@pytest.mark.parametrize('name', sorted(INNER))
def test_quantizes_the_moments_of_any_optimizer(name):
  inner = INNER[name]()
  tx = q.quantize_state(inner, min_size=1024)
  state = tx.init(_PARAMS)
  quantized = [
    x
    for x in jax.tree.leaves(state, is_leaf=lambda x: hasattr(x, 'codes'))
    if hasattr(x, 'codes')
  ]
  # Every moment of w (5120 elements), none of the scalar b.
  n_moments = sum(
    1 for x in jax.tree.leaves(inner.init(_PARAMS)) if np.shape(x) == (64, 80)
  )
  assert len(quantized) == n_moments >= 1
  assert {x.signed for x in quantized} == (
    {True, False} if name in ('adamw', 'adan', 'lamb') else {True}
  )

  def run(tx):
    @jax.jit
    def step(params, state, i):
      grads = jax.tree.map(
        lambda p: p - 0.3 + 0.1 * jnp.cos(p * 50 + i), params
      )
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state

    params, state = _PARAMS, tx.init(_PARAMS)
    for i in range(10):
      params, state = step(params, state, i)
    return params

  full, low = run(inner), run(tx)
  moved = np.linalg.norm(full['w'] - _PARAMS['w'])
  # The quantized trajectory follows the full-precision one.
  assert np.linalg.norm(low['w'] - full['w']) < 0.05 * moved


def test_mask_keeps_moments_in_full_precision():
  mask = {'w': False, 'b': True}
  state = q.adam8bit(1e-3, min_size=0, mask=mask).init(_PARAMS)
  assert state[0].inner_state.mu['w'].dtype == jnp.float32
  state = q.adam8bit(1e-3, min_size=0).init(_PARAMS)
  assert state[0].inner_state.mu['w'].codes.shape == (64, 80)


def _mixed_scale_run(tx, steps=60):
  """Largest single update on 16,384 coordinates whose gradient scales
  span 1e7 inside every block (log-uniform from 1e-7 to 1)."""
  rng = np.random.default_rng(0)
  scale = 10.0 ** rng.uniform(-7, 0, 16384)
  noise = rng.standard_normal((steps, 16384))
  grads = jnp.asarray(scale * noise, jnp.float32)
  params = jnp.zeros(16384)

  def step(carry, g):
    state, params = carry
    updates, state = tx.update(g, state, params)
    return (state, params + updates), jnp.max(jnp.abs(updates))

  _, largest = jax.lax.scan(step, (tx.init(params), params), grads)
  return float(jnp.max(largest))


def test_tiny_second_moments_diverge_and_the_floor_bounds_them():
  lr = 1e-3
  full = _mixed_scale_run(optax.adam(lr))
  plain = _mixed_scale_run(q.adam8bit(lr))
  floor = float(q.UNSIGNED_MAP[1])
  guarded = _mixed_scale_run(q.adam8bit(lr, second_moment_floor=floor))
  assert full < 3 * lr
  # v rounds to a code of 0, the step becomes m / eps: thousands of lr.
  assert plain > 1000 * lr
  assert guarded < 3 * lr


def test_in_nnx_optimizer_equals_the_pure_array_run():
  # nnx.Optimizer hands `init` its Param variables and wraps every
  # variable of the state: the quantized moments must stay QuantizedArrays
  # of arrays across updates, not turn into nested State.
  from flax import nnx

  model = nnx.Linear(64, 80, rngs=nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  tx = q.adam8bit(0.1, min_size=0)
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  state = tx.init(params)
  for i in range(3):
    grads = jax.tree.map(lambda p, i=i: jnp.cos(p * 30 + i), params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    g = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(g, grads)
    opt.update(model, g)
  tu.assert_trees_equal(nnx.to_pure_dict(nnx.state(model, nnx.Param)), params)
  mu = nnx.as_pure(opt.opt_state)[0].inner_state.mu
  assert isinstance(mu['kernel'], q.QuantizedArray)
