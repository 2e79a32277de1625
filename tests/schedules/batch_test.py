"""legw_schedule and scale_lr_for_batch against the papers' definitions."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optax_zoo.schedules import legw_schedule, scale_lr_for_batch

_N = 51_200  # a data set size, to count epochs


@pytest.mark.parametrize('batch_size', [64, 128, 512, 2048])
def test_legw_warmup_epochs_grow_with_the_batch(batch_size):
  # You et al.: k times the batch, sqrt(k) times the peak rate, k times the
  # warmup epochs. The base recipe warms up 200 steps at batch 128.
  base_batch, base_warmup = 128, 200
  k = batch_size / base_batch
  sched = legw_schedule(0.1, base_batch, batch_size, base_warmup, 20_000)
  peak = 0.1 * math.sqrt(k)
  steps = np.arange(0, 400)
  lr = np.asarray(jax.vmap(sched)(steps))
  reached = int(np.argmax(lr >= peak * (1 - 1e-6)))
  base_epochs = base_warmup * base_batch / _N
  assert reached * batch_size / _N == pytest.approx(k * base_epochs)
  assert lr.max() == pytest.approx(peak, rel=1e-6)
  np.testing.assert_allclose(
    lr[:reached], peak * steps[:reached] / base_warmup, rtol=1e-6
  )


@pytest.mark.parametrize(
  'decay, f',
  [
    ('poly', lambda p: (1 - p) ** 2),
    ('cosine', lambda p: 0.5 * (1 + math.cos(math.pi * p))),
    ('constant', lambda p: 1.0),
  ],
)
def test_legw_decay_is_the_formula(decay, f):
  # k = 4: T = 10000 / 4 = 2500 steps at the large batch, W = 100.
  end = 0.0 if decay == 'constant' else 1e-3
  sched = jax.jit(
    legw_schedule(0.1, 128, 512, 100, 10_000, decay=decay, end_value=end)
  )
  peak, warmup, total = 0.2, 100, 2500
  for n in range(100, 2700, 37):
    p = min((n - warmup) / (total - warmup), 1.0)
    want = end + (peak - end) * f(p)
    assert float(sched(n)) == pytest.approx(want, rel=1e-5, abs=1e-9)


def test_legw_poly_power_and_uneven_total():
  # T = 1000 * 128 / 384 = 333.33 steps: the decay ends between steps.
  sched = legw_schedule(0.05, 128, 384, 10, 1000, power=1.0)
  peak, total = 0.05 * math.sqrt(3), 1000 / 3
  for n in (10, 100, 333, 334):
    want = peak * max(0.0, (total - n) / (total - 10))
    # float32 holds T to 2e-5 steps: 3e-5 relative on the last step's rate.
    assert float(sched(n)) == pytest.approx(want, rel=1e-5, abs=1e-7 * peak)


def test_legw_without_warmup_starts_at_the_peak():
  sched = legw_schedule(0.1, 256, 256, 0, 100)
  assert float(sched(0)) == pytest.approx(0.1)


def test_legw_peak_is_the_sqrt_rule():
  sched = legw_schedule(3e-4, 64, 1024, 50, decay='constant')
  assert float(sched(50)) == pytest.approx(
    scale_lr_for_batch(3e-4, 64, 1024, rule='sqrt'), rel=1e-6
  )


@pytest.mark.parametrize(
  'kwargs, name',
  [
    ({'base_learning_rate': 0.0}, 'base_learning_rate'),
    ({'base_batch_size': 0}, 'base_batch_size'),
    ({'batch_size': 1.5}, 'batch_size'),
    ({'base_warmup_steps': -1}, 'base_warmup_steps'),
    ({'base_total_steps': None}, 'base_total_steps'),
    ({'base_total_steps': 400}, 'base_total_steps'),  # 100 steps at k = 4
    ({'decay': 'linear'}, 'decay'),
    ({'power': 0.0}, 'power'),
    ({'end_value': 0.5}, 'end_value'),
  ],
)
def test_legw_bad_arguments_raise(kwargs, name):
  args = {
    'base_learning_rate': 0.1,
    'base_batch_size': 128,
    'batch_size': 512,
    'base_warmup_steps': 100,
    'base_total_steps': 10_000,
    **kwargs,
  }
  with pytest.raises(ValueError, match=name):
    legw_schedule(**args)


@pytest.mark.parametrize('rule, factor', [('linear', 8.0), ('sqrt', 8**0.5)])
def test_scale_lr_for_batch_rules(rule, factor):
  assert scale_lr_for_batch(0.01, 32, 256, rule=rule) == pytest.approx(
    0.01 * factor
  )
  base = optax.cosine_decay_schedule(0.01, 100)
  scaled = scale_lr_for_batch(base, 32, 256, rule=rule)
  for n in (0, 10, 99):
    assert float(scaled(n)) == pytest.approx(factor * float(base(n)))
  # Smaller batches scale down by the same rule.
  assert scale_lr_for_batch(0.01, 256, 32, rule=rule) == pytest.approx(
    0.01 / factor
  )


def test_scaled_schedule_is_jittable():
  scaled = scale_lr_for_batch(
    optax.linear_schedule(0.1, 0.0, 10), 16, 64, rule='linear'
  )
  got = jax.jit(jax.vmap(scaled))(jnp.arange(11))
  np.testing.assert_allclose(got, 0.4 * (1 - np.arange(11) / 10), atol=1e-7)


@pytest.mark.parametrize(
  'args, kwargs, name',
  [
    ((0.1, 32, 64), {'rule': 'quadratic'}, 'rule'),
    ((-0.1, 32, 64), {'rule': 'linear'}, 'learning_rate'),
    ((0.1, 0, 64), {'rule': 'linear'}, 'base_batch_size'),
    ((0.1, 32, -64), {'rule': 'sqrt'}, 'batch_size'),
  ],
)
def test_scale_lr_for_batch_bad_arguments_raise(args, kwargs, name):
  with pytest.raises(ValueError, match=name):
    scale_lr_for_batch(*args, **kwargs)
