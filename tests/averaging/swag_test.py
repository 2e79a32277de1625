"""SWAG against a NumPy transcription of swag.py, and its sampling law."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from tests.reference import parity

RANK = 4


class _NumpySWAG:
  """SWAG.collect_model and SWAG.sample of wjmaddox/swa_gaussian, flat."""

  def __init__(self, dim, max_num_models):
    self.mean = np.zeros(dim)
    self.sq_mean = np.zeros(dim)
    self.cov_mat_sqrt = np.zeros((0, dim))
    self.n_models = 0
    self.max_num_models = max_num_models

  def collect_model(self, w):
    n = self.n_models
    self.mean = self.mean * n / (n + 1.0) + w / (n + 1.0)
    self.sq_mean = self.sq_mean * n / (n + 1.0) + w**2 / (n + 1.0)
    dev = w - self.mean  # against the updated mean, as the reference
    self.cov_mat_sqrt = np.concatenate([self.cov_mat_sqrt, dev[None]])
    if self.cov_mat_sqrt.shape[0] > self.max_num_models:
      self.cov_mat_sqrt = self.cov_mat_sqrt[1:]
    self.n_models += 1

  def low_rank(self, scale):
    """The low-rank part of the covariance of `sample(scale)`."""
    d = self.cov_mat_sqrt
    return scale * d.T @ d / (self.max_num_models - 1)

  def covariance(self, scale):
    """The covariance of `sample(scale)`."""
    var = np.maximum(self.sq_mean - self.mean**2, 1e-30)
    return scale * np.diag(var) + self.low_rank(scale)


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def _noisy_grads(params, key):
  """Gradients of |p|^2 / 2 plus unit noise."""
  return jax.tree.map(lambda p: p + jax.random.normal(key, p.shape), params)


def _train(steps=30, start_step=5, every_k=2):
  params = {'w': jnp.linspace(-1.0, 1.0, 4).reshape(2, 2), 'b': jnp.ones(1)}
  tx = optax_zoo.swag(
    optax.sgd(0.1, momentum=0.5),
    rank=RANK,
    start_step=start_step,
    every_k=every_k,
  )
  state, update = tx.init(params), jax.jit(tx.update)
  ref = _NumpySWAG(5, RANK)
  for i in range(steps):
    grads = _noisy_grads(params, jax.random.key(i))
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    t = i + 1
    if t >= start_step and (t - start_step) % every_k == 0:
      ref.collect_model(_flat(params).astype(np.float64))
  return state, ref


def test_moments_and_deviations_match_the_reference():
  state, ref = _train()
  assert int(state.n_models) == ref.n_models == 13
  np.testing.assert_allclose(_flat(state.mean), ref.mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    _flat(state.sq_mean), ref.sq_mean, rtol=1e-5, atol=1e-6
  )
  measured = max(
    parity.relative_deviation(_flat(state.mean), ref.mean),
    parity.relative_deviation(_flat(state.sq_mean), ref.sq_mean),
  )
  parity.assert_within_registered(
    'swag', measured, 'moments, NumPy transcription'
  )
  # Our ring buffer holds the same last RANK columns in another order.
  cols = np.stack(
    [
      _flat(jax.tree.map(lambda d, j=j: d[j], state.deviations))
      for j in range(RANK)
    ]
  )
  np.testing.assert_allclose(
    cols.T @ cols, ref.cov_mat_sqrt.T @ ref.cov_mat_sqrt, rtol=1e-4, atol=1e-6
  )


def _samples(state, n, **kwargs):
  keys = jax.random.split(jax.random.key(1), n)
  draw = lambda k: jnp.concatenate(
    [
      jnp.ravel(x)
      for x in jax.tree.leaves(optax_zoo.swag_sample(state, k, **kwargs))
    ]
  )
  return np.asarray(jax.jit(jax.vmap(draw))(keys), np.float64)


def _max_z(samples, mean, cov):
  """Largest z-score of the sample mean and covariance entries."""
  n = samples.shape[0]
  z_mean = np.abs(samples.mean(0) - mean) / np.sqrt(np.diag(cov) / n)
  emp = np.cov(samples, rowvar=False)
  # Var of a Gaussian sample covariance entry: (S_ii S_jj + S_ij^2) / n.
  se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
  return max(z_mean.max(), (np.abs(emp - cov) / se).max())


@pytest.mark.parametrize('diagonal_only', [False, True])
def test_samples_have_the_stated_mean_and_covariance(diagonal_only):
  state, ref = _train()
  cov = ref.covariance(0.5)
  if diagonal_only:
    cov = np.diag(np.diag(ref.covariance(0.5) - _NumpySWAG.low_rank(ref, 0.5)))
  samples = _samples(state, 20000, diagonal_only=diagonal_only)
  assert _max_z(samples, ref.mean, cov) < 5.0
  # The test has power: the paper's scale 1/2 is not scale 1.
  assert _max_z(samples, ref.mean, 2 * cov) > 10.0


def test_sampling_before_any_snapshot_raises():
  state, _ = _train(steps=3, start_step=10)
  with pytest.raises(ValueError, match='snapshot'):
    optax_zoo.swag_sample(state, jax.random.key(0))
  with pytest.raises(ValueError, match='SWAGState'):
    optax_zoo.swag_sample(optax.sgd(0.1).init(jnp.ones(2)), jax.random.key(0))
  with pytest.raises(ValueError, match='rank'):
    optax_zoo.swag(optax.sgd(0.1), rank=0, start_step=0)


def test_bayesian_model_average_averages_sample_predictions():
  state, _ = _train()
  predict = lambda p: jax.nn.softmax(_flat_jnp(p))
  key = jax.random.key(3)
  got = optax_zoo.bayesian_model_average(predict, state, key, num_samples=3)
  keys = jax.random.split(key, 3)
  want = np.mean(
    [predict(optax_zoo.swag_sample(state, k)) for k in keys], axis=0
  )
  np.testing.assert_allclose(got, want, rtol=1e-6)


def _flat_jnp(tree):
  return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])
