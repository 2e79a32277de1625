"""Tests for private training (`optax_zoo.training.train_private`)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optax_zoo
from optax_zoo import privacy
from optax_zoo.training import MLP, digits, private, train_private

# A coarse PLD grid keeps every epsilon in these tests well under a second.
_PLD = 1e-2
_DELTA = 1e-5


@pytest.fixture(scope='module')
def data():
  return digits()


@pytest.fixture(scope='module')
def run(data):
  """60 private steps of a small MLP, unevenly evaluated, and its traces."""
  before = private._TRACES['step']
  result = train_private(
    MLP(64, (32,), rngs=nnx.Rngs(0)),
    optax.sgd(0.5),
    data,
    clip_norm=1.0,
    noise_multiplier=1.0,
    expected_batch_size=64,
    steps=60,
    eval_every=[10, 25],
    pld_discretization=_PLD,
  )
  return result, private._TRACES['step'] - before


def _epsilon(source, steps, sigma=1.0):
  return privacy.epsilon(
    noise_multiplier=sigma,
    sampling_rate=source.sampling_rate,
    steps=steps,
    delta=_DELTA,
    scheme=source.scheme,
    num_examples=source.num_examples,
    batch_size=source.batch_size,
    pld_discretization=_PLD,
  )


def test_trains_and_reports_the_accountants_epsilon(run):
  result, _ = run
  h = result.history
  assert h.steps.tolist() == [0, 10, 25, 60]
  assert h.train_loss[-1] < 0.8 * h.train_loss[1]
  assert h.test_accuracy[-1] > h.test_accuracy[0] + 0.3
  src = result.source
  assert src.scheme == privacy.SamplingScheme.TRUNCATED_POISSON
  expected = [_epsilon(src, s) for s in h.steps]
  np.testing.assert_allclose(result.epsilons, expected, rtol=1e-12)
  np.testing.assert_allclose(h.measurements['epsilon'], expected, rtol=1e-12)
  assert result.report.steps == 60 and not result.stopped_at_budget
  assert result.report.epsilon['pld'] == pytest.approx(expected[-1], 1e-12)
  assert 0 < h.measurements['clipped_fraction'][-1] <= 1


def test_step_is_traced_once(run):
  # Chunks of 10, 15 and 35 steps, one trace (and compilation) of the step.
  _, traces = run
  assert traces == 1


def test_report_prints(run, capsys):
  result, _ = run
  print(result.report)
  out = capsys.readouterr().out
  assert 'epsilon (pld): ' + f'{result.epsilons[-1]:.4f}' in out
  assert 'truncated_poisson' in out and 'steps: 60' in out
  assert 'noise multiplier: 1.0' in out and 'clip norm: 1.0' in out


def test_noiseless_huge_clip_step_is_sgd_on_sum_over_expected_size(data):
  model = MLP(64, (16,), rngs=nnx.Rngs(1))
  params0 = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
  lr, expected_size = 0.3, 40.0
  result = train_private(
    model,
    optax.sgd(lr),
    data,
    clip_norm=1e6,
    noise_multiplier=0.0,
    expected_batch_size=expected_size,
    steps=1,
    seed=3,
    pld_discretization=_PLD,
  )
  batch = next(iter(result.source))
  idx, mask = batch.indices[batch.mask], batch.mask
  assert 0 < mask.sum() < len(mask)  # a real Poisson batch, with padding
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)
  x, y = jnp.asarray(data.x_train[idx]), jnp.asarray(data.y_train[idx])

  def summed_loss(p):
    logits = nnx.merge(graphdef, p, rest)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()

  grad = jax.grad(summed_loss)(params0)
  want = jax.tree.map(lambda p, g: p - lr * g / expected_size, params0, grad)
  got = jax.tree.leaves(result.params)
  for w, g in zip(jax.tree.leaves(want), got, strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
  # ... and differs from the mean over the realized batch size.
  realized = jax.tree.map(lambda p, g: p - lr * g / len(idx), params0, grad)
  assert not np.allclose(
    jax.tree.leaves(realized)[0], got[0], rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize('method', ['ghost', 'vmap'])
def test_augmentation_multiplicity_averages_views_inside_the_clip(data, method):
  """One noiseless step: each example's gradient is its views' mean."""
  model = MLP(64, (16,), rngs=nnx.Rngs(1))
  params0 = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
  lr, expected_size, clip, k, seed = 0.3, 40.0, 0.05, 3, 3
  aug = optax_zoo.training.shift_and_noise(max_shift=2, noise_std=0.5)
  result = train_private(
    model,
    optax.sgd(lr),
    data,
    clip_norm=clip,
    noise_multiplier=0.0,
    expected_batch_size=expected_size,
    steps=1,
    seed=seed,
    method=method,
    augment_fn=aug,
    augmentation_multiplicity=k,
    pld_discretization=_PLD,
  )
  batch = next(iter(result.source))
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)
  # The views' keys: the step's key (seed stream 1, step 0), one per row of
  # the padded batch, then one per view.
  step_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), 0)
  row_keys = jax.random.split(step_key, len(batch.mask))
  total = jax.tree.map(jnp.zeros_like, params0)
  for row in np.flatnonzero(batch.mask):
    x = jnp.asarray(data.x_train[batch.indices[row]])
    y = jnp.asarray(data.y_train[batch.indices[row]])
    views = jnp.stack([aug(kk, x) for kk in jax.random.split(row_keys[row], k)])

    def loss(p, views=views, y=y):
      logits = nnx.merge(graphdef, p, rest)(views)
      labels = jnp.full((k,), y)
      return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels
      ).mean()

    g = jax.grad(loss)(params0)
    scale = jnp.minimum(1.0, clip / optax.tree.norm(g))
    total = jax.tree.map(lambda t, g, scale=scale: t + scale * g, total, g)
  want = jax.tree.map(lambda p, g: p - lr * g / expected_size, params0, total)
  for w, g in zip(
    jax.tree.leaves(want), jax.tree.leaves(result.params), strict=True
  ):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
  assert result.history.measurements['clipped_fraction'][-1] > 0


def test_stops_before_the_budget_and_evaluates_averages(data):
  # Calibrated for 60 steps at epsilon 4, stopped at epsilon 2.
  tx = optax_zoo.swa(optax.sgd(0.5), start_step=0)
  result = train_private(
    MLP(64, (32,), rngs=nnx.Rngs(0)),
    tx,
    data,
    clip_norm=1.0,
    target_epsilon=4.0,
    expected_batch_size=64,
    steps=60,
    eval_every=20,
    stop_at_epsilon=2.0,
    pld_discretization=_PLD,
  )
  src, sigma = result.source, result.noise_multiplier
  assert sigma == pytest.approx(
    privacy.calibrate_noise(
      target_epsilon=4.0,
      delta=_DELTA,
      sampling_rate=src.sampling_rate,
      steps=60,
      scheme=src.scheme,
      num_examples=src.num_examples,
      batch_size=src.batch_size,
      pld_discretization=_PLD,
    )
  )
  taken = result.step
  assert result.stopped_at_budget and 0 < taken < 60
  assert result.history.steps[-1] == taken == result.report.steps
  assert _epsilon(src, taken, sigma) <= 2.0 < _epsilon(src, taken + 1, sigma)
  assert result.epsilons[-1] <= 2.0
  # Evaluated on SWA's average of the private iterates, not the last ones.
  leaf = jax.tree.leaves(result.params)[0]
  assert not np.allclose(jax.tree.leaves(result.eval_params)[0], leaf)


def test_budget_below_one_step_trains_nothing(data):
  model = MLP(64, (8,), rngs=nnx.Rngs(0))
  before = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
  result = train_private(
    model,
    optax.sgd(0.1),
    data,
    clip_norm=1.0,
    noise_multiplier=0.5,
    expected_batch_size=64,
    steps=10,
    stop_at_epsilon=1e-3,
    pld_discretization=_PLD,
  )
  assert result.stopped_at_budget and result.step == 0
  assert result.report.steps == 0 and result.epsilons.tolist() == [0.0]
  for a, b in zip(
    jax.tree.leaves(before), jax.tree.leaves(result.params), strict=True
  ):
    np.testing.assert_array_equal(a, b)


def test_fixed_size_batches_are_accounted_replace_one(data):
  n = len(data.y_train)
  src = privacy.fixed_size_batches(n, batch_size=32, steps=10, seed=0)
  result = train_private(
    MLP(64, (8,), rngs=nnx.Rngs(0)),
    optax.sgd(0.1),
    data,
    clip_norm=1.0,
    noise_multiplier=1.0,
    batches=src,
    steps=10,
    accountant='rdp',
  )
  assert result.report.scheme == 'fixed_size'
  assert result.report.neighboring_relation == 'replace_one'
  want = privacy.epsilon(
    noise_multiplier=1.0,
    sampling_rate=None,
    steps=10,
    delta=_DELTA,
    accountant='rdp',
    scheme='fixed_size',
    num_examples=n,
    batch_size=32,
  )
  assert result.epsilons[-1] == pytest.approx(want, rel=1e-12)
  assert result.report.epsilon['rdp'] == pytest.approx(want, rel=1e-12)
  assert isinstance(result.report.epsilon['pld'], str)  # PLD refuses it


class _WithBatchNorm(nnx.Module):
  def __init__(self, rngs):
    self.dense = nnx.Linear(64, 10, rngs=rngs)
    self.norm = nnx.BatchNorm(10, rngs=rngs)

  def __call__(self, x):
    return self.norm(self.dense(x))


def test_batchnorm_is_refused(data):
  with pytest.raises(ValueError, match=r"BatchNorm at 'norm'"):
    train_private(
      _WithBatchNorm(nnx.Rngs(0)),
      optax.sgd(0.1),
      data,
      clip_norm=1.0,
      noise_multiplier=1.0,
      expected_batch_size=64,
      steps=5,
    )


def test_shuffled_batches_are_refused(data):
  src = privacy.shuffled_batches(len(data.y_train), batch_size=64, steps=5)
  with pytest.raises(ValueError, match='shuffled batches cannot be accounted'):
    train_private(
      MLP(64, (8,), rngs=nnx.Rngs(0)),
      optax.sgd(0.1),
      data,
      clip_norm=1.0,
      noise_multiplier=1.0,
      batches=src,
      steps=5,
    )


@pytest.mark.parametrize(
  'kwargs, match',
  [
    ({'noise_multiplier': 1.0, 'target_epsilon': 1.0}, 'exactly one of'),
    ({'noise_multiplier': None}, 'exactly one of'),
    ({'sampling_rate': 0.1}, 'exactly one of `sampling_rate`'),
    ({'clip_norm': 0.0}, 'clip_norm'),
    ({'noise_multiplier': -1.0}, 'noise_multiplier'),
    ({'stop_at_epsilon': 0.0}, 'stop_at_epsilon'),
    ({'expected_batch_size': 0.0}, 'expected_batch_size'),
    ({'method': 'fast'}, 'method'),
    ({'augmentation_multiplicity': 2}, 'needs an `augment_fn`'),
    ({'augmentation_multiplicity': 0}, 'augmentation_multiplicity'),
    ({'augment_fn': 'shift'}, 'augment_fn'),
  ],
)
def test_bad_arguments_raise(data, kwargs, match):
  args = dict(
    clip_norm=1.0, noise_multiplier=1.0, expected_batch_size=64, steps=5
  )
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    train_private(MLP(64, (8,), rngs=nnx.Rngs(0)), optax.sgd(0.1), data, **args)
