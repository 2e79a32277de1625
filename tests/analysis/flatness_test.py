"""SAM sharpness, m-sharpness, average sharpness and local energy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from optax_zoo import analysis
from optax_zoo.training import MLP

DIM = 5
# Eigenvalues spread enough for projected ascent to converge fast.
EIGS = np.array([4.0, 2.0, 1.0, 0.5, 0.25])


def _quadratic(seed=0, num_batches=2, batch_size=4):
  """H (SPD), per-example linear terms b and the minimum of the mean loss.

  ``L(w, batch) = 0.5 w^T H w + mean_i(b_i)^T w``: the chunk losses differ
  through their linear terms, so m-sharpness differs from the plain one.
  """
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
  h = q @ np.diag(EIGS) @ q.T
  b = rng.normal(size=(num_batches, batch_size, DIM))
  w_min = -np.linalg.solve(h, b.reshape(-1, DIM).mean(0))
  return h, b, w_min


def _loss_fn(h):
  def loss_fn(w, batch):
    return 0.5 * w @ (jnp.asarray(h, w.dtype) @ w) + jnp.mean(batch, 0) @ w

  return loss_fn


def _np_loss(h, bbar, w):
  return 0.5 * w @ h @ w + bbar @ w


def _trust_region_max(h, g, rho):
  """max_{||e|| <= rho} g^T e + 0.5 e^T H e, by bisection on the multiplier.

  The maximizer is e = (mu I - H)^{-1} g with mu > lambda_max and ||e|| = rho.
  """
  lam, vec = np.linalg.eigh(h)
  gc = vec.T @ g
  norm = lambda mu: np.linalg.norm(gc / (mu - lam))
  lo, hi = lam[-1] + 1e-14, lam[-1] + np.linalg.norm(g) / rho + 1.0
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if norm(mid) > rho else (lo, mid)
  e = vec @ (gc / (hi - lam))
  return g @ e + 0.5 * e @ h @ e


def test_one_step_sam_and_asam_match_closed_form():
  with jax.enable_x64(True):
    h, b, _ = _quadratic()
    bbar = b.reshape(-1, DIM).mean(0)
    w = np.random.default_rng(1).normal(size=DIM)
    g = h @ w + bbar
    loss_fn = _loss_fn(h)
    rho, eta = 0.3, 0.1
    out = analysis.sam_sharpness(
      loss_fn, jnp.asarray(w), jnp.asarray(b), rho=rho
    )
    e = rho * g / np.linalg.norm(g)
    want = _np_loss(h, bbar, w + e) - _np_loss(h, bbar, w)
    np.testing.assert_allclose(out.value, want, rtol=1e-12)
    np.testing.assert_allclose(out.base_loss, _np_loss(h, bbar, w), rtol=1e-12)
    t = np.abs(w) + eta
    e = rho * t**2 * g / np.linalg.norm(t * g)
    want = _np_loss(h, bbar, w + e) - _np_loss(h, bbar, w)
    out = analysis.sam_sharpness(
      loss_fn, jnp.asarray(w), jnp.asarray(b), rho=rho, adaptive=True, eta=eta
    )
    np.testing.assert_allclose(out.value, want, rtol=1e-12)


def test_projected_ascent_reaches_the_max_over_the_ball():
  with jax.enable_x64(True):
    h, b, w_min = _quadratic()
    loss_fn = _loss_fn(h)
    rho = 0.2
    # At the minimum the gradient is rounding noise: a random start plus
    # ascent finds 0.5 rho^2 lambda_max.
    out = analysis.sam_sharpness(
      loss_fn,
      jnp.asarray(w_min),
      jnp.asarray(b),
      rho=rho,
      steps=60,
      key=jax.random.key(3),
    )
    np.testing.assert_allclose(out.value, 0.5 * rho**2 * EIGS[0], rtol=1e-8)
    # Away from it: the trust-region maximum, above one step's value.
    w = w_min + np.random.default_rng(2).normal(size=DIM) * 0.05
    g = h @ w + b.reshape(-1, DIM).mean(0)
    want = _trust_region_max(h, g, rho)
    one = analysis.sam_sharpness(
      loss_fn, jnp.asarray(w), jnp.asarray(b), rho=rho
    )
    many = analysis.sam_sharpness(
      loss_fn, jnp.asarray(w), jnp.asarray(b), rho=rho, steps=60
    )
    assert float(one.value) < want * (1 - 1e-3)
    np.testing.assert_allclose(many.value, want, rtol=1e-8)


def test_m_equal_to_batch_size_is_the_plain_measure_on_one_batch():
  h, b, w_min = _quadratic(num_batches=1)
  loss_fn = _loss_fn(h)
  w = jnp.asarray(w_min + 0.1, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  for kwargs in ({}, {'steps': 4}, {'adaptive': True, 'eta': 0.01}):
    plain = analysis.sam_sharpness(loss_fn, w, b, rho=0.1, **kwargs)
    chunked = analysis.sam_sharpness(loss_fn, w, b, rho=0.1, m=4, **kwargs)
    np.testing.assert_allclose(chunked.value, plain.value, rtol=1e-6)
    assert chunked.m == 4 and plain.m is None


def test_m_sharpness_is_the_average_over_chunks():
  h, b, w_min = _quadratic(num_batches=2, batch_size=4)
  loss_fn = _loss_fn(h)
  w = np.asarray(w_min + 0.1)
  rho, m = 0.1, 2
  out = analysis.sam_sharpness(
    loss_fn,
    jnp.asarray(w, jnp.float32),
    jnp.asarray(b, jnp.float32),
    rho=rho,
    m=m,
  )
  chunks = b.reshape(-1, m, DIM)  # 4 chunks of 2 consecutive examples
  by_hand = []
  for chunk in chunks:
    g = h @ w + chunk.mean(0)
    e = rho * g / np.linalg.norm(g)
    by_hand.append(
      _np_loss(h, chunk.mean(0), w + e) - _np_loss(h, chunk.mean(0), w)
    )
  np.testing.assert_allclose(out.value, np.mean(by_hand), rtol=1e-5)
  plain = analysis.sam_sharpness(
    loss_fn, jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32), rho=rho
  )
  assert abs(float(out.value) - float(plain.value)) > 1e-2  # m matters
  # Multi-step: the same as measuring each chunk as its own data set.
  out = analysis.sam_sharpness(
    loss_fn,
    jnp.asarray(w, jnp.float32),
    jnp.asarray(b, jnp.float32),
    rho=rho,
    m=m,
    steps=5,
    adaptive=True,
    eta=0.1,
  )
  each = [
    analysis.sam_sharpness(
      loss_fn,
      jnp.asarray(w, jnp.float32),
      jnp.asarray(c[None], jnp.float32),
      rho=rho,
      steps=5,
      adaptive=True,
      eta=0.1,
    ).value
    for c in chunks
  ]
  np.testing.assert_allclose(out.value, np.mean(each), rtol=1e-5)


def test_adaptive_ball_limits():
  h, b, w_min = _quadratic()
  loss_fn = _loss_fn(h)
  b = jnp.asarray(b, jnp.float32)
  w = jnp.asarray(w_min + 0.3, jnp.float32)
  plain = analysis.sam_sharpness(loss_fn, w, b, rho=0.1, steps=3)
  # T_w = |w| + eta ~ eta I: the ball of radius rho / eta is SAM's ball.
  eta = 1e4
  big = analysis.sam_sharpness(
    loss_fn, w, b, rho=0.1 / eta, steps=3, adaptive=True, eta=eta
  )
  np.testing.assert_allclose(big.value, plain.value, rtol=1e-3)
  small = analysis.sam_sharpness(
    loss_fn, w, b, rho=0.1, steps=3, adaptive=True, eta=0.0
  )
  assert abs(float(small.value) - float(plain.value)) > 1e-2
  # Equal magnitudes c: the adaptive ball with eta = 0 is SAM's of radius
  # rho * c.
  signs = jnp.array([1.0, -1.0, 1.0, 1.0, -1.0])
  equal = analysis.sam_sharpness(
    loss_fn, 2.0 * signs, b, rho=0.1, steps=3, adaptive=True
  )
  scaled = analysis.sam_sharpness(loss_fn, 2.0 * signs, b, rho=0.2, steps=3)
  np.testing.assert_allclose(equal.value, scaled.value, rtol=1e-5)


def test_average_sharpness_is_half_sigma_squared_trace():
  h, b, w_min = _quadratic()
  loss_fn = _loss_fn(h)
  w = w_min + 0.2
  g = h @ w + b.reshape(-1, DIM).mean(0)
  sigma, n = 0.1, 4000
  out = analysis.average_sharpness(
    loss_fn,
    jnp.asarray(w, jnp.float32),
    jnp.asarray(b, jnp.float32),
    sigma=sigma,
    key=jax.random.key(0),
    num_samples=n,
  )
  # One draw is sigma g^T z + 0.5 sigma^2 z^T H z: mean 0.5 sigma^2 tr H,
  # variance sigma^2 |g|^2 + sigma^4 tr(H^2) / 2. Four standard errors of
  # the mean fail by chance with probability 6e-5.
  want = 0.5 * sigma**2 * np.trace(h)
  se = np.sqrt(sigma**2 * g @ g + sigma**4 * np.trace(h @ h) / 2) / np.sqrt(n)
  assert abs(float(out.value) - want) < 4 * se
  np.testing.assert_allclose(out.stderr, se, rtol=0.1)
  # Adaptive: the noise sigma z |w| gives 0.5 sigma^2 sum_i H_ii w_i^2.
  out = analysis.average_sharpness(
    loss_fn,
    jnp.asarray(w, jnp.float32),
    jnp.asarray(b, jnp.float32),
    sigma=sigma,
    key=jax.random.key(1),
    num_samples=n,
    adaptive=True,
  )
  want = 0.5 * sigma**2 * np.sum(np.diag(h) * w**2)
  d = np.diag(np.abs(w))
  se = np.sqrt(
    sigma**2 * np.sum((g * w) ** 2)
    + sigma**4 * np.trace(d @ h @ d @ d @ h @ d) / 2
  ) / np.sqrt(n)
  assert abs(float(out.value) - want) < 4 * se


def test_local_energy_is_half_sigma_squared_weighted_diagonal():
  h, b, w_min = _quadratic()
  loss_fn = _loss_fn(h)
  w = w_min + 0.2
  g = h @ w + b.reshape(-1, DIM).mean(0)
  sigma, n = 0.1, 4000
  out = analysis.local_energy(
    loss_fn,
    jnp.asarray(w, jnp.float32),
    jnp.asarray(b, jnp.float32),
    sigma=sigma,
    key=jax.random.key(2),
    num_samples=n,
  )
  want = 0.5 * sigma**2 * np.sum(np.diag(h) * w**2)
  d = np.diag(w)
  # Same variance formula with the noise sigma z * w (see the test above).
  se = np.sqrt(
    sigma**2 * np.sum((g * w) ** 2)
    + sigma**4 * np.trace(d @ h @ d @ d @ h @ d) / 2
  ) / np.sqrt(n)
  assert abs(float(out.value) - want) < 4 * se
  assert out.num_samples == n and out.adaptive is None
  # With positive weights z * w = z * |w| draw by draw: the same numbers.
  pos = jnp.abs(jnp.asarray(w, jnp.float32)) + 0.1
  kw = dict(sigma=sigma, key=jax.random.key(5), num_samples=16)
  a = analysis.local_energy(loss_fn, pos, jnp.asarray(b, jnp.float32), **kw)
  c = analysis.average_sharpness(
    loss_fn, pos, jnp.asarray(b, jnp.float32), adaptive=True, **kw
  )
  np.testing.assert_allclose(a.value, c.value, rtol=1e-6)
  np.testing.assert_array_equal(a.key_data, jax.random.key_data(kw['key']))


def test_results_state_their_settings():
  h, b, w_min = _quadratic(num_batches=2, batch_size=4)
  loss_fn = _loss_fn(h)
  w, b = jnp.asarray(w_min, jnp.float32), jnp.asarray(b, jnp.float32)
  out = analysis.sam_sharpness(
    loss_fn, w, b, rho=0.05, steps=2, m=2, key=jax.random.key(7)
  )
  assert (out.rho, out.steps, out.m, out.step_size) == (0.05, 2, 2, 0.1)
  assert (out.num_batches, out.batch_size) == (2, 4)
  np.testing.assert_array_equal(
    out.key_data, jax.random.key_data(jax.random.key(7))
  )
  assert out.sigma is None and out.stderr is None
  np.testing.assert_allclose(out.value, out.perturbed_loss - out.base_loss)
  out = analysis.average_sharpness(
    loss_fn, w, b, sigma=0.1, key=jax.random.key(0), num_samples=3
  )
  assert (out.sigma, out.num_samples, out.rho, out.steps) == (
    0.1,
    3,
    None,
    None,
  )
  assert out.adaptive is False


def test_nnx_mlp_under_jit():
  model = MLP(4, hidden=(8,), num_classes=3, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  key_x, key_y = jax.random.split(jax.random.key(0))
  batches = (
    jax.random.normal(key_x, (2, 8, 4)),
    jax.random.randint(key_y, (2, 8), 0, 3),
  )

  traces = []

  def loss_fn(params, batch):
    traces.append(None)
    x, y = batch
    logits = nnx.merge(graphdef, params, rest)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def measure(params, key):
    return (
      analysis.sam_sharpness(loss_fn, params, batches, rho=0.05),
      analysis.sam_sharpness(
        loss_fn,
        params,
        batches,
        rho=0.05,
        steps=3,
        m=4,
        adaptive=True,
        eta=0.01,
      ),
      analysis.average_sharpness(
        loss_fn, params, batches, sigma=0.01, key=key, num_samples=8
      ),
      analysis.local_energy(
        loss_fn, params, batches, sigma=0.01, key=key, num_samples=8
      ),
    )

  results = measure(params, jax.random.key(1))
  # New parameters and key: no retracing (nor recompiling).
  count = len(traces)
  moved = jax.tree.map(lambda p: p * 1.1, params)
  measure(moved, jax.random.key(2))
  assert len(traces) == count
  for r in results:
    assert np.isfinite(float(r.value))
    np.testing.assert_allclose(r.num_batches, 2)
  assert float(results[0].value) > 0
  # One SAM step in the direction of the gradient raises the loss by about
  # rho |g| (first order).
  grad = jax.grad(
    lambda p: jnp.mean(jax.lax.map(lambda bt: loss_fn(p, bt), batches))
  )(params)
  gnorm = float(optax.tree.norm(grad))
  np.testing.assert_allclose(results[0].value, 0.05 * gnorm, rtol=0.1)


def test_more_steps_never_lower_the_worst_case():
  h, b, w_min = _quadratic()
  loss_fn = _loss_fn(h)
  w = jnp.asarray(w_min + 0.3, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  values = [
    float(analysis.sam_sharpness(loss_fn, w, b, rho=0.5, steps=s).value)
    for s in (1, 2, 8)
  ]
  assert values[0] <= values[1] <= values[2]
  assert values[2] > values[0] * (1 + 1e-3)


@pytest.mark.parametrize(
  ('fn', 'kwargs', 'name'),
  [
    ('sam', {'rho': 0.0}, 'rho'),
    ('sam', {'rho': -1.0}, 'rho'),
    ('sam', {'rho': 0.1, 'steps': 0}, 'steps'),
    ('sam', {'rho': 0.1, 'm': 3}, 'm'),
    ('sam', {'rho': 0.1, 'm': 0}, 'm'),
    ('sam', {'rho': 0.1, 'step_size': 0.0}, 'step_size'),
    ('sam', {'rho': 0.1, 'eta': -1.0}, 'eta'),
    ('avg', {'sigma': 0.0, 'num_samples': 2}, 'sigma'),
    ('avg', {'sigma': 0.1, 'num_samples': 0}, 'num_samples'),
    ('avg', {'sigma': 0.1, 'num_samples': 2, 'key': 0}, 'key'),
    ('energy', {'sigma': -0.1, 'num_samples': 2}, 'sigma'),
    ('energy', {'sigma': 0.1, 'num_samples': 0}, 'num_samples'),
  ],
)
def test_bad_input_raises(fn, kwargs, name):
  h, b, w_min = _quadratic()
  loss_fn = _loss_fn(h)
  w, b = jnp.asarray(w_min, jnp.float32), jnp.asarray(b, jnp.float32)
  f = {
    'sam': analysis.sam_sharpness,
    'avg': analysis.average_sharpness,
    'energy': analysis.local_energy,
  }[fn]
  if fn != 'sam':
    kwargs = {'key': jax.random.key(0), **kwargs}
  with pytest.raises(ValueError, match=f'`{name}`'):
    f(loss_fn, w, b, **kwargs)


def test_batches_without_common_leading_axis_raise():
  h, _, w_min = _quadratic()
  loss_fn = lambda w, batch: _loss_fn(h)(w, batch[0])
  w = jnp.asarray(w_min, jnp.float32)
  bad = (jnp.zeros((2, 4, DIM)), jnp.zeros((3, 4)))
  with pytest.raises(ValueError, match=r'`batches`.*leading axis'):
    analysis.sam_sharpness(loss_fn, w, bad, rho=0.1)
  with pytest.raises(ValueError, match='`batches`'):
    analysis.local_energy(
      loss_fn,
      w,
      (jnp.zeros(3),),
      sigma=0.1,
      key=jax.random.key(0),
      num_samples=2,
    )
  with pytest.raises(ValueError, match='`batches`'):
    analysis.average_sharpness(
      loss_fn,
      w,
      (jnp.zeros((2, 4, DIM)), jnp.zeros((2, 3))),
      sigma=0.1,
      key=jax.random.key(0),
      num_samples=2,
    )


def test_zero_gradient_gives_zero_perturbation_not_nan():
  loss_fn = lambda w, batch: 0.5 * jnp.sum(w**2) + 0.0 * jnp.sum(batch)
  batches = jnp.zeros((1, 2, 3))
  for kwargs in ({}, {'adaptive': True, 'eta': 0.1}, {'m': 1, 'steps': 3}):
    out = analysis.sam_sharpness(
      loss_fn, jnp.zeros(3), batches, rho=0.1, **kwargs
    )
    assert float(out.value) == 0.0
  # A random start escapes the critical point: 0.5 rho^2 for H = I.
  out = analysis.sam_sharpness(
    loss_fn, jnp.zeros(3), batches, rho=0.1, key=jax.random.key(0)
  )
  np.testing.assert_allclose(out.value, 0.005, rtol=1e-5)


def _sqrt_loss(w, batch):
  # The where-gradient trap: at w = 0 the unused branch's derivative is inf,
  # and inf * 0 gives a NaN gradient.
  root = jnp.where(w > 0, jnp.sqrt(w), 0.0)
  return jnp.sum(root) + jnp.sum(w**2) + 0 * jnp.sum(batch)


@pytest.mark.parametrize('kwargs', [{}, {'steps': 3}, {'m': 1}])
def test_nan_gradient_gives_nan_not_a_flat_point(kwargs):
  w = jnp.array([0.0, 1.0, 2.0])
  assert np.isnan(jax.grad(lambda x: _sqrt_loss(x, 0.0))(w)).any()
  result = analysis.sam_sharpness(
    _sqrt_loss, w, jnp.ones((1, 2, 3)), rho=0.1, **kwargs
  )
  assert np.isnan(result.value)


def test_bfloat16_params_are_measured_in_float32():
  loss = lambda w, b: jnp.sum(w.astype(jnp.float32) ** 2) + 0 * jnp.sum(b)
  batches, key = jnp.ones((2, 2, 3)), jax.random.key(0)
  for dtype in (jnp.bfloat16, jnp.float32):
    w = jnp.ones(3, dtype)
    sam = analysis.sam_sharpness(loss, w, batches, rho=0.1, m=1, steps=2)
    noisy = analysis.local_energy(
      loss, w, batches, sigma=0.1, key=key, num_samples=8
    )
    assert sam.value.dtype == noisy.value.dtype == jnp.float32
    # L(w + e) - L(w) for e = rho g / |g|, w = 1: 2 rho sqrt(3) + rho^2,
    # to the bfloat16 rounding of w + e.
    np.testing.assert_allclose(sam.value, 0.2 * 3**0.5 + 0.01, rtol=2e-2)
