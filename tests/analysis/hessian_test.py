"""Spectra, traces and densities against the dense Hessian in float64."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from optax_zoo import analysis
from tests.analysis.problems import (
  dense_hessian,
  make_problem,
  mlp_logits,
  mlp_loss,
)


@pytest.fixture(scope='module')
def problem():
  # One float64 problem and its dense Hessian for the whole module: every
  # analysis call compiles its own loop, so the tests share what they can.
  with jax.enable_x64(True):
    params, batch = make_problem(np.float64)
    params = jax.tree.map(jnp.asarray, params)
    fun = functools.partial(mlp_loss, batch=batch)
    yield fun, params, batch, np.asarray(dense_hessian(fun, params))


def _dense_by_magnitude(h):
  w, u = np.linalg.eigh(h)
  order = np.argsort(-np.abs(w))
  return w[order], u[:, order]


@pytest.mark.parametrize('method', ['lanczos', 'power'])
def test_top_eigenvalues_match_dense(problem, method):
  fun, params, _, hessian = problem
  values, vectors = _dense_by_magnitude(hessian)
  k = 1 if method == 'power' else 3
  out = analysis.top_hessian_eigenvalues(
    fun,
    params,
    key=jax.random.key(0),
    k=k,
    method=method,
    tol=1e-12,
    max_iters=2000,
  )
  np.testing.assert_allclose(out.eigenvalues, values[:k], rtol=1e-7)
  flat = jax.vmap(lambda t: ravel_pytree(t)[0])(out.eigenvectors)
  overlaps = np.abs(np.sum(np.asarray(flat) * vectors[:, :k].T, axis=1))
  np.testing.assert_allclose(overlaps, 1.0, atol=1e-5)
  assert out.eigenvectors['w1'].shape == (k, *params['w1'].shape)


def test_lanczos_stops_early_at_loose_tolerance(problem):
  fun, params, _, hessian = problem
  values, _ = _dense_by_magnitude(hessian)
  # k=3 as above, so the compiled loop is reused.
  out = analysis.top_hessian_eigenvalues(
    fun, params, key=jax.random.key(1), k=3, tol=1e-3
  )
  assert out.num_matvecs < 43
  np.testing.assert_allclose(out.eigenvalues[0], values[0], rtol=1e-3)


def test_power_deflation_finds_the_next_eigenvalues(problem):
  scales = jnp.array([5.0, -4.0, 2.0, 1.0, 0.5])
  fun = lambda p: 0.5 * jnp.sum(scales * p**2)
  out = analysis.top_hessian_eigenvalues(
    fun,
    jnp.ones(5),
    key=jax.random.key(0),
    k=3,
    method='power',
    tol=1e-12,
    max_iters=2000,
  )
  np.testing.assert_allclose(out.eigenvalues, [5.0, -4.0, 2.0], rtol=1e-6)


def test_trace_within_its_standard_error(problem):
  fun, params, _, hessian = problem
  exact = np.trace(hessian)
  est = analysis.hessian_trace(
    fun, params, key=jax.random.key(0), num_samples=400
  )
  assert abs(float(est.trace) - exact) < 4 * float(est.stderr)
  assert float(est.stderr) < 0.1 * abs(exact)


def test_density_integrates_to_one_where_the_eigenvalues_are(problem):
  fun, params, _, hessian = problem
  dense = np.linalg.eigvalsh(hessian)
  sd = analysis.spectral_density(
    fun, params, key=jax.random.key(0), num_probes=30, lanczos_steps=43
  )
  grid, density = np.asarray(sd.grid), np.asarray(sd.density)
  dx = grid[1] - grid[0]
  np.testing.assert_allclose(density.sum() * dx, 1.0, atol=1e-3)
  np.testing.assert_allclose(sd.weights.sum(axis=1), 1.0, atol=1e-10)
  # With as many steps as parameters the nodes are the exact eigenvalues and
  # only the probe weights are random: compare the distribution functions.
  cdf = np.cumsum(density) * dx
  for t in np.quantile(dense, [0.25, 0.5, 0.75]):
    assert abs(np.interp(t, grid, cdf) - np.mean(dense <= t)) < 0.15
  # Repeated eigenvalues (the softmax's null space) appear once: compare as
  # sets.
  gaps = np.abs(np.asarray(sd.nodes[0])[:, None] - dense[None, :])
  atol = 1e-8 * np.abs(dense).max()
  assert gaps.min(axis=0).max() < atol and gaps.min(axis=1).max() < atol
  # Fewer steps: Gauss quadrature nodes lie inside the spectrum and the
  # extreme ones converge first.
  few = analysis.spectral_density(
    fun, params, key=jax.random.key(0), num_probes=30, lanczos_steps=12
  )
  assert dense.min() - 1e-9 <= float(few.nodes.min())
  np.testing.assert_allclose(few.nodes.max(), dense.max(), rtol=1e-6)


def test_batches_average_to_the_full_data_hessian(problem):
  _, params, (x, y), hessian = problem
  # Unequal batch sizes: the average must be weighted by size.
  batches = [(x[:10], y[:10]), (x[10:], y[10:])]
  est = analysis.hessian_trace(
    mlp_loss, params, batches=batches, key=jax.random.key(0), num_samples=3
  )
  flat = ravel_pytree(params)[0]
  probes = jax.random.rademacher(jax.random.key(0), (3, flat.size), flat.dtype)
  np.testing.assert_allclose(
    est.samples, np.einsum('pi,ij,pj->p', probes, hessian, probes), rtol=1e-10
  )


@pytest.mark.parametrize(
  'split', [(12, 12), (10, 14)], ids=['stacked', 'unrolled']
)
def test_second_call_on_new_params_and_data_does_not_retrace(split):
  traces = []

  def loss(params, batch):
    traces.append(1)  # runs once per trace of the loss, not per call
    return mlp_loss(params, batch)

  params, (x, y) = make_problem(np.float32)
  cut = split[0]
  for shift in (0.0, 0.5):
    batches = [(x[:cut] + shift, y[:cut]), (x[cut:] + shift, y[cut:])]
    moved = jax.tree.map(lambda p, s=shift: p + s, params)
    analysis.hessian_trace(
      loss, moved, batches=batches, key=jax.random.key(0), num_samples=2
    )
    if shift == 0.0:
      first = len(traces)
  assert first > 0
  assert len(traces) == first


def test_ggn_matches_dense_jacobian_form(problem):
  _, params, (x, y), _ = problem
  flat, unravel = ravel_pytree(params)
  model = lambda f: mlp_logits(unravel(f), x).ravel()
  loss = lambda z: optax.softmax_cross_entropy_with_integer_labels(
    z.reshape(len(y), -1), y
  ).mean()
  jac = jax.jacobian(model)(flat)
  dense = jac.T @ jax.hessian(loss)(model(flat)) @ jac
  probe = jax.random.normal(jax.random.key(0), flat.shape, flat.dtype)
  got = analysis.ggn_vp(
    lambda p: mlp_logits(p, x),
    lambda z: optax.softmax_cross_entropy_with_integer_labels(z, y).mean(),
    params,
    unravel(probe),
  )
  np.testing.assert_allclose(ravel_pytree(got)[0], dense @ probe, rtol=1e-10)
  # The same operator through the spectral tools, over stacked equal batches.
  est = analysis.hessian_trace(
    lambda p, b: mlp_logits(p, b[0]),
    params,
    batches=[(x[:12], y[:12]), (x[12:], y[12:])],
    ggn_loss_fn=lambda z, b: optax.softmax_cross_entropy_with_integer_labels(
      z, b[1]
    ).mean(),
    key=jax.random.key(0),
    num_samples=2,
  )
  probes = jax.random.rademacher(jax.random.key(0), (2, flat.size), flat.dtype)
  np.testing.assert_allclose(
    est.samples, np.einsum('pi,ij,pj->p', probes, dense, probes), rtol=1e-10
  )


def test_nnx_state_params():
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = jnp.ones((4, 3))
  fun = lambda p: jnp.sum(nnx.merge(graphdef, p, rest)(x) ** 2)
  out = analysis.top_hessian_eigenvalues(
    fun, params, key=jax.random.key(0), method='power', tol=1e-6
  )
  assert jax.tree.structure(
    jax.tree.map(lambda v: v[0], out.eigenvectors)
  ) == jax.tree.structure(params)
  # f = sum((x W + b)^2) with 4 equal rows: top eigenvalue 2 * 4 * (3 + 1).
  np.testing.assert_allclose(out.eigenvalues[0], 32.0, rtol=1e-3)


def test_hvp_is_the_dense_product(problem):
  fun, params, _, hessian = problem
  flat, unravel = ravel_pytree(params)
  probe = jnp.arange(flat.size, dtype=flat.dtype)
  got = ravel_pytree(analysis.hvp(fun, params, unravel(probe)))[0]
  np.testing.assert_allclose(got, hessian @ probe, rtol=1e-10)


@pytest.mark.parametrize(
  ('call', 'match'),
  [
    (
      lambda f, p: analysis.top_hessian_eigenvalues(
        f, p, key=jax.random.key(0), k=4
      ),
      '`k` must be an integer in \\[1, 3\\], got 4',
    ),
    (
      lambda f, p: analysis.top_hessian_eigenvalues(
        lambda q: q**2, p, key=jax.random.key(0)
      ),
      '`fun` must return a scalar',
    ),
    (
      lambda f, p: analysis.hessian_trace(
        f, p, key=jax.random.key(0), num_samples=0
      ),
      '`num_samples` must be an integer >= 1, got 0',
    ),
    (
      lambda f, p: analysis.top_hessian_eigenvalues(
        f, p, key=jax.random.key(0), method='arnoldi'
      ),
      '`method` must be one of',
    ),
    (
      lambda f, p: analysis.top_hessian_eigenvalues(
        f, p, key=jax.random.key(0), tol=0.0
      ),
      '`tol` must be positive',
    ),
    (
      lambda f, p: analysis.spectral_density(
        f, p, key=jax.random.key(0), num_probes=0
      ),
      '`num_probes` must be an integer >= 1',
    ),
    (
      lambda f, p: analysis.hessian_trace(f, p, key=0),
      '`key` must be a jax.random key',
    ),
  ],
)
def test_bad_input_raises(call, match):
  with pytest.raises(ValueError, match=match):
    call(lambda p: jnp.sum(p**4), jnp.ones(3))
