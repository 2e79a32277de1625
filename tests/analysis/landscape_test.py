"""Directions, surfaces, planes, barriers, CKA, noise scale and R_med."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax_zoo import analysis


def test_filter_normalization_matches_each_filter_norm():
  # Flax keeps output filters on the last axis of dense and conv kernels.
  keys = jax.random.split(jax.random.key(1), 3)
  params = {
    'conv': {'kernel': jax.random.normal(keys[0], (5, 2, 4)), 'bias': 0},
    'dense': {'kernel': jax.random.normal(keys[1], (8, 3))},
    'norm': {'scale': jax.random.normal(keys[2], (4,))},
  }
  params['conv']['bias'] = jnp.ones(4)
  d = analysis.random_direction(jax.random.key(0), params)
  for w, dw in zip(jax.tree.leaves(params), jax.tree.leaves(d), strict=True):
    if w.ndim <= 1:
      np.testing.assert_array_equal(dw, 0.0)
      continue
    axes = tuple(range(w.ndim - 1))
    np.testing.assert_allclose(
      np.sqrt(np.sum(np.asarray(dw) ** 2, axis=axes)),
      np.sqrt(np.sum(np.asarray(w) ** 2, axis=axes)),
      rtol=1e-5,
    )


def test_direction_options():
  params = {'w': jnp.arange(6.0).reshape(2, 3) + 1, 'b': jnp.ones(3)}
  key = jax.random.key(1)
  kept = analysis.random_direction(key, params, ignore=None)
  np.testing.assert_array_equal(kept['b'], params['b'])
  torch_layout = analysis.random_direction(key, params, filter_axis=0)
  np.testing.assert_allclose(
    jnp.linalg.norm(torch_layout['w'], axis=1),
    jnp.linalg.norm(params['w'], axis=1),
    rtol=1e-5,
  )
  layer = analysis.random_direction(key, params, normalization='layer')
  np.testing.assert_allclose(
    jnp.linalg.norm(layer['w']), jnp.linalg.norm(params['w']), rtol=1e-5
  )
  with pytest.raises(ValueError, match='`normalization` must be one of'):
    analysis.random_direction(key, params, normalization='channel')


def test_surface_matches_direct_evaluation_and_returns_pytrees():
  params = {'w': jnp.array([1.0, -1.0])}
  fun = lambda p: {'loss': jnp.sum(p['w'] ** 2), 'max': jnp.max(p['w'])}
  d1, d2 = {'w': jnp.array([1.0, 0.0])}, {'w': jnp.array([0.5, 1.0])}
  a, b = jnp.linspace(-1, 1, 5), jnp.linspace(-2, 2, 3)
  out = analysis.loss_surface(fun, params, [d1, d2], [a, b], batch_size=4)
  assert out['loss'].shape == (5, 3)
  for i, j in [(0, 0), (3, 2), (4, 1)]:
    moved = {'w': params['w'] + a[i] * d1['w'] + b[j] * d2['w']}
    np.testing.assert_allclose(out['loss'][i, j], fun(moved)['loss'])
  line = analysis.loss_surface(fun, params, [d1], [a])
  np.testing.assert_allclose(line['loss'], out['loss'][:, 1], rtol=1e-6)
  with pytest.raises(ValueError, match='length 1 or 2'):
    analysis.loss_surface(fun, params, [d1, d2], [a])


def test_plane_basis_is_orthonormal_and_places_the_points():
  keys = jax.random.split(jax.random.key(0), 3)
  pts = [
    {'a': jax.random.normal(k, (4,)), 'b': jax.random.normal(k, ())}
    for k in keys
  ]
  p = analysis.plane(*pts)
  flat = lambda t: jax.flatten_util.ravel_pytree(t)[0]
  basis = np.stack([flat(p.u), flat(p.v)])
  np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-6)
  for point, (x, y) in zip(pts, p.coords, strict=True):
    np.testing.assert_allclose(
      flat(p.origin) + x * basis[0] + y * basis[1], flat(point), atol=1e-5
    )
  with pytest.raises(ValueError, match='must not lie on the line'):
    analysis.plane(pts[0], pts[1], pts[1])


def test_interpolation_barrier():
  f = lambda p: jnp.sum(p**2)
  out = analysis.interpolate(f, jnp.array([-1.0]), jnp.array([1.0]))
  # The chord from 1 to 1 lies above the parabola: no barrier.
  np.testing.assert_allclose(out.barrier, 0.0, atol=1e-6)
  np.testing.assert_allclose(out.values, (2 * out.alphas - 1) ** 2, atol=1e-6)


def test_cka_invariances():
  x = jax.random.normal(jax.random.key(0), (64, 5))
  y = jax.random.normal(jax.random.key(1), (64, 3))
  np.testing.assert_allclose(analysis.cka(x, 2.0 * x + 1.0), 1.0, rtol=1e-5)
  assert 0.0 <= float(analysis.cka(x, y)) < 0.5
  with pytest.raises(ValueError, match='same examples'):
    analysis.cka(x, y[:10])


def test_noise_scale_recovers_the_known_value():
  # f(p, x) = mean |x - p|^2 with x ~ N(1, I): per-example gradients
  # 2 (p - x) have G = -2 at p = 0 and covariance 4 I, so B_simple = 1.
  x = jax.random.normal(jax.random.key(0), (8192, 4)) + 1.0
  fun = lambda p, x: jnp.mean(jnp.sum((x - p) ** 2, axis=-1))
  ns = analysis.gradient_noise_scale(fun, jnp.zeros(4), x, num_splits=64)
  np.testing.assert_allclose(ns.trace_cov, 16.0, rtol=0.1)
  np.testing.assert_allclose(ns.grad_sq, 16.0, rtol=0.1)
  state = analysis.noise_scale_init()
  for _ in range(3):
    state, b_simple = jax.jit(analysis.noise_scale_update)(state, ns)
  np.testing.assert_allclose(b_simple, ns.b_simple, rtol=1e-5)
  with pytest.raises(ValueError, match='`num_splits` must divide'):
    analysis.gradient_noise_scale(fun, jnp.zeros(4), x, num_splits=3)
  with pytest.raises(ValueError, match='`big_batch_size`'):
    analysis.noise_scale_from_norms(1.0, 1.0, 8, 8)


def test_hessian_diagonal_and_r_med():
  a = jnp.array([[2.0, 1.0, 0.0], [1.0, 4.0, 0.5], [0.0, 0.5, 9.0]])
  f = lambda p: 0.5 * p['w'] @ a @ p['w']
  params = {'w': jnp.zeros(3)}
  np.testing.assert_allclose(
    analysis.hessian_diagonal(f, params)['w'], [2.0, 4.0, 9.0]
  )
  est = analysis.hessian_diagonal(
    f, params, key=jax.random.key(0), num_samples=2000
  )
  np.testing.assert_allclose(est['w'], [2.0, 4.0, 9.0], atol=0.15)
  np.testing.assert_allclose(
    analysis.r_med(analysis.hessian_diagonal(f, params))['w'], 9.0 / 4.0
  )


def test_weight_distance():
  a = {'w': jnp.array([0.0, 1.0, 2.0, 3.0])}
  b = {'w': jnp.array([1.0, 2.0, 3.0, 4.0])}
  np.testing.assert_allclose(analysis.weight_distance(a, b)['w'], 1.0)
  tv = analysis.weight_distance(a, b, metric='tv', bins=4)['w']
  np.testing.assert_allclose(tv, 0.25)
  np.testing.assert_allclose(
    analysis.weight_distance(a, {'w': a['w'][::-1]}, metric='tv')['w'], 0.0
  )


def test_plots_render(tmp_path):
  matplotlib = pytest.importorskip('matplotlib')
  matplotlib.use('Agg')
  from optax_zoo.analysis import plotting

  f = lambda p: 0.5 * jnp.sum(jnp.arange(1.0, 5.0) * p**2)
  sd = analysis.spectral_density(f, jnp.ones(4), key=jax.random.key(0))
  plotting.plot_spectral_density(sd)
  a = jnp.linspace(-1, 1, 5)
  surface = analysis.loss_surface(
    f, jnp.zeros(4), [jnp.eye(4)[0], jnp.eye(4)[1]], [a, a]
  )
  ax = plotting.plot_contour((a, a), surface, points=[[0.0, 0.0]])
  plotting.plot_surface((a, a), surface)
  plotting.plot_line(a, surface[:, 2])
  ax.figure.savefig(tmp_path / 'contour.png')
  assert (tmp_path / 'contour.png').stat().st_size > 0
