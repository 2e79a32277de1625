"""Stochastic Block-ADMM and DeepFacto's NMF layer."""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo as oz
from optax_zoo._src import test_utils as tu


def _linear(w, x):
  return x @ w


def _squares(out, y):
  return 0.5 * jnp.sum((out - y) ** 2, axis=1)


def _regression(n=32, d_in=3, d_out=2, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d_in)).astype(np.float32)
  a = rng.normal(size=(d_in, d_out))
  y = (x @ a + 0.3 * rng.normal(size=(n, d_out))).astype(np.float32)
  return x, y


def test_linear_blocks_reach_the_least_squares_solution():
  # Three linear blocks, 3 -> 4 -> 4 -> 2, full batch, near-exact block
  # solves (20 inner SGD steps per W-step, 20 z-steps): the fixed point of
  # the Lagrangian is a stationary point of the end-to-end loss, and a deep
  # linear network's are the least-squares solution.
  x, y = _regression()
  a, *_ = np.linalg.lstsq(x, y, rcond=None)
  best = np.mean(_squares(x @ a, y))
  admm = oz.block_admm(
    [_linear] * 3,
    loss_fn=_squares,
    rho=1.0,
    inner=optax.sgd(0.1),
    z_learning_rate=0.3,
    w_steps=20,
    z_steps=20,
  )
  rng = np.random.default_rng(1)
  params = [
    jnp.asarray(0.5 * rng.normal(size=s), jnp.float32)
    for s in ((3, 4), (4, 4), (4, 2))
  ]
  state = admm.init(params, x)
  ids = jnp.arange(len(x))
  start = float(np.mean(_squares(admm.predict(state.params, x), y)))
  for _ in range(200):
    state, metrics = admm.step(state, x, y, ids)
  composed = state.params[0] @ state.params[1] @ state.params[2]
  loss = float(np.mean(_squares(admm.predict(state.params, x), y)))
  assert start > 5 * best  # the run has a gap to close
  np.testing.assert_allclose(loss, best, rtol=1e-4)
  np.testing.assert_allclose(composed, a, atol=1e-3)
  assert metrics['residual'].shape == (2,)
  assert float(jnp.max(metrics['residual'])) < 1e-3
  # The constraint holds per example: z_b = f_b(z_{b-1}).
  np.testing.assert_allclose(state.z[0], x @ state.params[0], atol=1e-3)
  assert int(state.count) == 200


def test_minibatch_step_touches_only_its_examples():
  x, y = _regression(n=16)
  admm = oz.block_admm(
    [_linear, _linear],
    loss_fn=_squares,
    rho=2.0,
    inner=optax.adam(1e-2),
    z_learning_rate=0.1,
  )
  params = [jnp.full((3, 4), 0.1), jnp.full((4, 2), 0.1)]
  state = admm.init(params, x)
  ids = jnp.array([1, 5, 7])
  new, _ = admm.step(state, x[ids], y[ids], ids)
  rest = np.setdiff1d(np.arange(16), ids)
  np.testing.assert_array_equal(new.z[0][rest], state.z[0][rest])
  np.testing.assert_array_equal(new.duals[0][rest], state.duals[0][rest])
  assert not np.allclose(new.z[0][ids], state.z[0][ids])
  assert not np.allclose(new.duals[0][ids], 0.0)


def test_nmf_layer_keeps_factors_non_negative_and_fits():
  # DeepFacto: encoder (ReLU features) -> NMF layer -> linear classifier,
  # trained by Block-ADMM through the reconstruction constraint. Inexact
  # block solves need enough inner steps: with 2 W- and 2 z-steps the
  # residuals grow instead (dual ascent outruns the primal steps).
  rng = np.random.default_rng(0)
  n, d, feats, rank = 64, 6, 8, 4
  x = rng.normal(size=(n, d)).astype(np.float32)
  labels = (x[:, 0] > 0).astype(np.int32)
  encoder = lambda w, x: jax.nn.relu(x @ w)
  nmf = oz.nmf_block(code_steps=30)
  ce = optax.softmax_cross_entropy_with_integer_labels
  admm = oz.block_admm(
    [encoder, nmf, _linear],
    loss_fn=ce,
    rho=1.0,
    inner=optax.adam(1e-2),
    z_learning_rate=0.1,
    w_steps=20,
    z_steps=20,
  )
  params = [
    jnp.asarray(rng.normal(size=(d, feats)) / np.sqrt(d), jnp.float32),
    jnp.asarray(rng.uniform(size=(rank, feats)), jnp.float32),
    jnp.zeros((rank, 2)),
  ]
  state = admm.init(params, x)
  ids = jnp.arange(n)

  def reconstruction(state):
    return float(jnp.linalg.norm(state.z[0] - state.z[1] @ state.params[1]))

  first = reconstruction(state)
  for _ in range(60):
    state, metrics = admm.step(state, x, labels, ids)
  assert float(jnp.min(state.params[1])) >= 0.0
  assert float(jnp.min(state.z[1])) >= 0.0
  assert reconstruction(state) < 0.01 * first
  assert float(jnp.max(metrics['residual'])) < 0.01
  assert np.all(np.isfinite(np.asarray(metrics['residual'])))
  accuracy = jnp.mean(jnp.argmax(admm.predict(state.params, x), -1) == labels)
  assert float(accuracy) > 0.8


def test_nmf_forward_solves_nnls():
  rng = np.random.default_rng(0)
  d = jnp.asarray(rng.uniform(size=(3, 6)), jnp.float32)
  h = jnp.asarray(rng.uniform(size=(5, 3)) * (rng.uniform(size=(5, 3)) > 0.4))
  codes = oz.nmf_block(code_steps=2000).forward(d, h @ d)
  np.testing.assert_allclose(codes, h, atol=1e-3)
  assert float(jnp.min(codes)) >= 0.0


@pytest.mark.parametrize(
  ('kwargs', 'name'),
  [
    ({'rho': 0.0}, 'rho'),
    ({'rho': -1.0}, 'rho'),
    ({'z_learning_rate': 0.0}, 'z_learning_rate'),
    ({'w_steps': 0}, 'w_steps'),
    ({'blocks': []}, 'blocks'),
    ({'inner': [optax.sgd(0.1)] * 3}, 'inner'),
    ({'mesh': 'one device'}, 'mesh'),
  ],
)
def test_bad_arguments_raise(kwargs, name):
  args = {
    'blocks': [_linear, _linear],
    'loss_fn': _squares,
    'rho': 1.0,
    'inner': optax.sgd(0.1),
    'z_learning_rate': 0.1,
  }
  if kwargs.get('mesh') == 'one device':
    kwargs = {'mesh': oz.worker_mesh(1, 'blocks')}
  with pytest.raises(ValueError, match=f'`{name}`'):
    oz.block_admm(**{**args, **kwargs})


def test_blocks_that_do_not_chain_raise_at_init():
  x, _ = _regression()
  admm = oz.block_admm(
    [_linear, _linear],
    loss_fn=_squares,
    rho=1.0,
    inner=optax.sgd(0.1),
    z_learning_rate=0.1,
  )
  with pytest.raises(ValueError, match='`blocks` do not chain: block 1'):
    admm.init([jnp.zeros((3, 4)), jnp.zeros((5, 2))], x)
  with pytest.raises(ValueError, match='`params`'):
    admm.init([jnp.zeros((3, 4))], x)
  flatten = lambda w, x: jnp.sum(x @ w)
  with pytest.raises(ValueError, match='example axis'):
    oz.block_admm(
      [flatten, _linear],
      loss_fn=_squares,
      rho=1.0,
      inner=optax.sgd(0.1),
      z_learning_rate=0.1,
    ).init([jnp.zeros((3, 4)), jnp.zeros((4, 2))], x)


_MESH_SCRIPT = textwrap.dedent(
  """
  import jax, jax.numpy as jnp, numpy as np, optax
  import optax_zoo as oz

  B, D, N, STEPS = 4, 3, 12, 3
  rng = np.random.default_rng(0)
  x = rng.normal(size=(N, D)).astype(np.float32)
  y = rng.normal(size=(N, D)).astype(np.float32)
  block = oz.ADMMBlock(forward=lambda w, a: jnp.tanh(a @ w))
  squares = lambda out, y: 0.5 * jnp.sum((out - y) ** 2, axis=1)
  params = [jnp.asarray(rng.normal(size=(D, D)), jnp.float32)
            for _ in range(B)]
  # SGD, not Adam: Adam's first step is the sign of the gradient, and at
  # the start the W-gradients are rounding noise around zero.
  kw = dict(loss_fn=squares, rho=0.5, inner=optax.sgd(0.1, momentum=0.9),
            z_learning_rate=0.2, w_steps=2, z_steps=3)
  mesh = oz.worker_mesh(B, 'blocks')
  one = oz.block_admm([block] * B, **kw)
  many = oz.block_admm([block] * B, mesh=mesh, **kw)
  s1, s2 = one.init(params, x), many.init(params, x)
  assert s2.z.shape == (B, N, D), s2.z.shape
  assert len(s2.z.sharding.device_set) == B, s2.z.sharding
  for t in range(STEPS):
    ids = jnp.asarray(rng.choice(N, 6, replace=False))
    s1, m1 = jax.block_until_ready(one.step(s1, x[ids], y[ids], ids))
    s2, m2 = jax.block_until_ready(many.step(s2, x[ids], y[ids], ids))
    np.testing.assert_allclose(m2['loss'], m1['loss'], rtol=1e-5)
    np.testing.assert_allclose(m2['residual'], m1['residual'], rtol=1e-4,
                               atol=1e-6)
  got = oz.to_host(s2)
  for b in range(B):
    np.testing.assert_allclose(got.params[b], s1.params[b], rtol=1e-5,
                               atol=1e-6)
  for b in range(B - 1):
    np.testing.assert_allclose(got.z[b], s1.z[b], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.duals[b], s1.duals[b], rtol=1e-5,
                               atol=1e-6)
  np.testing.assert_allclose(many.predict(s2.params, x),
                             one.predict(s1.params, x), rtol=1e-5, atol=1e-6)
  print('OK')
  """
)


def test_blocks_on_devices_equal_one_device():
  tu.run_on_cpu_devices(_MESH_SCRIPT)
