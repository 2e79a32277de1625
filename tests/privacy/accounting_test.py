"""Tests of the accounting: epsilon, calibration, running accountant, report."""

from __future__ import annotations

import math

import dp_accounting
import pytest
from jax_privacy import accounting as jp_accounting

import optax_zoo
from optax_zoo.privacy import SamplingScheme

# The issue's measurement (MNIST-sized): sigma 1, q 256/60000, 10,000 steps.
_MNIST = dict(
  noise_multiplier=1.0, sampling_rate=256 / 60000, steps=10_000, delta=1e-5
)
_COARSE = 1e-2  # PLD discretization for quick tests


def _direct(accountant, sigma, q, steps, delta):
  event = dp_accounting.SelfComposedDpEvent(
    dp_accounting.PoissonSampledDpEvent(
      q, dp_accounting.GaussianDpEvent(sigma)
    ),
    steps,
  )
  config = (
    jp_accounting.RdpAccountantConfig()
    if accountant == 'rdp'
    else jp_accounting.PldAccountantConfig()
  )
  return config.create_accountant().compose(event).get_epsilon(delta)


@pytest.mark.parametrize('accountant', ['pld', 'rdp'])
def test_epsilon_equals_dp_accounting_used_directly(accountant):
  for sigma, q, steps in [(1.0, 256 / 60000, 10_000), (0.8, 0.02, 500)]:
    ours = optax_zoo.epsilon(
      noise_multiplier=sigma,
      sampling_rate=q,
      steps=steps,
      delta=1e-5,
      accountant=accountant,
    )
    assert ours == pytest.approx(
      _direct(accountant, sigma, q, steps, 1e-5), rel=1e-12
    )


def test_epsilon_matches_the_issue_measurement():
  assert optax_zoo.epsilon(**_MNIST, accountant='pld') == pytest.approx(
    2.3451, abs=1e-4
  )
  assert optax_zoo.epsilon(**_MNIST, accountant='rdp') == pytest.approx(
    2.5660, abs=1e-4
  )


def test_epsilon_edge_cases():
  kw = dict(sampling_rate=0.1, delta=1e-5, accountant='rdp')
  assert optax_zoo.epsilon(noise_multiplier=1.0, steps=0, **kw) == 0.0
  assert optax_zoo.epsilon(noise_multiplier=0.0, steps=5, **kw) == math.inf
  more = optax_zoo.epsilon(noise_multiplier=1.0, steps=20, **kw)
  assert more > optax_zoo.epsilon(noise_multiplier=1.0, steps=10, **kw)


@pytest.mark.parametrize(
  'accountant, extra, tol',
  [('rdp', {}, 1e-3), ('pld', {'pld_discretization': _COARSE}, 1e-2)],
)
def test_calibrate_noise_round_trips(accountant, extra, tol):
  kw = dict(sampling_rate=0.01, steps=1000, delta=1e-5, accountant=accountant)
  sigma = optax_zoo.calibrate_noise(target_epsilon=2.0, tol=tol, **kw, **extra)
  assert optax_zoo.epsilon(noise_multiplier=sigma, **kw, **extra) <= 2.0
  below = optax_zoo.epsilon(noise_multiplier=sigma - 2 * tol, **kw, **extra)
  assert below > 2.0


def test_calibrate_noise_recovers_the_issue_sigma():
  sigma = optax_zoo.calibrate_noise(
    target_epsilon=2.5660,
    delta=1e-5,
    sampling_rate=256 / 60000,
    steps=10_000,
    accountant='rdp',
  )
  assert sigma == pytest.approx(1.0, abs=2e-3)


def test_running_accountant_stops_before_the_budget():
  acc = optax_zoo.PrivacyAccountant(
    noise_multiplier=1.0, sampling_rate=0.05, delta=1e-5, accountant='rdp'
  )
  acc.step(10)
  acc.step()
  assert acc.steps == 11
  assert acc.epsilon() == optax_zoo.epsilon(
    noise_multiplier=1.0,
    sampling_rate=0.05,
    steps=11,
    delta=1e-5,
    accountant='rdp',
  )
  target = 4.0
  while not acc.would_exceed(target, 10):
    acc.step(10)
  assert acc.epsilon() <= target < acc.epsilon(steps=acc.steps + 10)
  assert acc.steps > 11
  report = acc.report(clip_norm=2.0)
  assert report.steps == acc.steps and report.clip_norm == 2.0
  assert report.epsilon['rdp'] == acc.epsilon()


def test_accountant_reads_the_batch_source_label():
  poisson = optax_zoo.poisson_batches(
    1000, sampling_rate=0.01, max_batch_size=1000, steps=100
  )
  acc = optax_zoo.PrivacyAccountant(noise_multiplier=1.0, source=poisson)
  acc.step(100)
  assert acc.epsilon(1e-5) == pytest.approx(
    _direct('pld', 1.0, 0.01, 100, 1e-5), rel=1e-12
  )
  shuffled = optax_zoo.shuffled_batches(1000, batch_size=10, steps=100)
  for name in ('pld', 'rdp'):
    with pytest.raises(ValueError, match='shuffled batches cannot be'):
      optax_zoo.PrivacyAccountant(
        noise_multiplier=1.0, source=shuffled, accountant=name
      )


def test_truncated_poisson_goes_through_the_truncated_event():
  source = optax_zoo.poisson_batches(
    1000, sampling_rate=0.01, max_batch_size=15, steps=100
  )
  ours = optax_zoo.PrivacyAccountant(
    noise_multiplier=1.0, source=source, pld_discretization=1e-3
  )
  ours.step(100)
  event = dp_accounting.SelfComposedDpEvent(
    dp_accounting.TruncatedSubsampledGaussianDpEvent(
      dataset_size=1000,
      sampling_probability=0.01,
      truncated_batch_size=15,
      noise_multiplier=1.0,
    ),
    100,
  )
  direct = dp_accounting.pld.PLDAccountant(
    value_discretization_interval=1e-3
  ).compose(event)
  direct = direct.get_epsilon(1e-5)
  assert ours.epsilon(1e-5) == pytest.approx(direct, rel=1e-12)
  plain = _direct('pld', 1.0, 0.01, 100, 1e-5)
  assert ours.epsilon(1e-5) > plain  # truncation at 15 (mean 10) costs
  with pytest.raises(ValueError, match="'pld' only"):
    optax_zoo.PrivacyAccountant(
      noise_multiplier=1.0, source=source, accountant='rdp'
    )


def test_fixed_size_batches_use_replace_one_rdp_or_are_refused():
  kw = dict(
    noise_multiplier=1.0,
    sampling_rate=None,
    steps=100,
    delta=1e-5,
    scheme=SamplingScheme.FIXED_SIZE,
    num_examples=1000,
    batch_size=10,
  )
  event = dp_accounting.SelfComposedDpEvent(
    dp_accounting.SampledWithoutReplacementDpEvent(
      1000, 10, dp_accounting.GaussianDpEvent(1.0)
    ),
    100,
  )
  direct = dp_accounting.rdp.RdpAccountant(
    orders=jp_accounting.RdpAccountantConfig().orders,
    neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE,
  )
  ours = optax_zoo.epsilon(accountant='rdp', **kw)
  assert ours == pytest.approx(
    direct.compose(event).get_epsilon(1e-5), rel=1e-12
  )
  with pytest.raises(ValueError, match="'rdp' only"):
    optax_zoo.epsilon(accountant='pld', **kw)


def test_privacy_report_has_both_accountants_and_formats():
  source = optax_zoo.poisson_batches(
    60000, sampling_rate=256 / 60000, max_batch_size=60000, steps=10_000
  )
  report = optax_zoo.privacy_report(
    noise_multiplier=1.0, clip_norm=0.5, steps=10_000, delta=1e-5, source=source
  )
  assert report.epsilon['pld'] == pytest.approx(2.3451, abs=1e-4)
  assert report.epsilon['rdp'] == pytest.approx(2.5660, abs=1e-4)
  d = report.as_dict()
  assert d['scheme'] == 'poisson' and d['num_examples'] == 60000
  assert d['clip_norm'] == 0.5 and d['steps'] == 10_000
  text = str(report)
  for piece in ('2.3451', '2.5660', 'poisson', '60000', 'clip norm: 0.5'):
    assert piece in text
  shuffled = optax_zoo.privacy_report(
    noise_multiplier=1.0,
    clip_norm=1.0,
    steps=10,
    delta=1e-5,
    source=optax_zoo.shuffled_batches(100, batch_size=10, steps=10),
  )
  assert all(isinstance(e, str) for e in shuffled.epsilon.values())
  assert 'n/a' in str(shuffled)


@pytest.mark.parametrize(
  'bad',
  [
    {'noise_multiplier': -1.0},
    {'sampling_rate': 0.0},
    {'sampling_rate': 1.5},
    {'delta': 0.0},
    {'delta': 1.0},
    {'steps': -1},
    {'accountant': 'moments'},
    {
      'scheme': 'fixed_size',
      'accountant': 'rdp',
      'num_examples': 5,
      'batch_size': 10,
    },
  ],
)
def test_bad_input_raises_naming_the_argument(bad):
  kw = dict(noise_multiplier=1.0, sampling_rate=0.1, steps=10, delta=1e-5)
  name = 'num_examples' if 'scheme' in bad else next(iter(bad))
  with pytest.raises(ValueError, match=name):
    optax_zoo.epsilon(**{**kw, **bad})
  report_bad = {k: x for k, x in bad.items() if k != 'accountant'}
  if report_bad:
    with pytest.raises(ValueError, match=name):
      optax_zoo.privacy_report(clip_norm=1.0, **{**kw, **report_bad})
  if name in ('delta', 'sampling_rate', 'steps'):
    del kw['noise_multiplier']
    with pytest.raises(ValueError, match=name):
      optax_zoo.calibrate_noise(target_epsilon=1.0, **{**kw, **bad})


def test_clip_norm_must_be_positive_in_the_report():
  with pytest.raises(ValueError, match='clip_norm'):
    optax_zoo.privacy_report(
      noise_multiplier=1.0,
      clip_norm=0.0,
      steps=1,
      delta=1e-5,
      sampling_rate=0.1,
    )
