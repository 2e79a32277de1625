"""sgdr_schedule against torch's CosineAnnealingWarmRestarts and eq. (5)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax_zoo.schedules import sgdr_schedule


def _paper(n, t_0, t_mult, eta_max, eta_min, decay=1.0):
  """Eq. (5) of Loshchilov & Hutter (2017), restarts found by walking."""
  i, start, length = 0, 0, t_0
  while n >= start + length:
    start, length, i = start + length, length * t_mult, i + 1
  peak = eta_max * decay**i
  return eta_min + 0.5 * (peak - eta_min) * (
    1 + math.cos(math.pi * (n - start) / length)
  )


@pytest.mark.parametrize(
  't_0, t_mult, eta_min', [(10, 1, 0.0), (7, 2, 1e-3), (1, 2, 0.0), (3, 3, 0.0)]
)
def test_matches_torch_step_by_step(t_0, t_mult, eta_min):
  torch = pytest.importorskip('torch')
  param = torch.nn.Parameter(torch.zeros(1))
  opt = torch.optim.SGD([param], lr=0.1)
  sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
    opt, T_0=t_0, T_mult=t_mult, eta_min=eta_min
  )
  want = []
  for _ in range(2000):
    want.append(sched.get_last_lr()[0])
    opt.step()
    sched.step()
  ours = sgdr_schedule(0.1, t_0, t_mult, eta_min)
  got = jax.jit(jax.vmap(ours))(jnp.arange(2000))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_is_the_paper_formula_with_peak_decay_at_large_steps():
  sched = jax.jit(sgdr_schedule(0.5, 3, 2, 0.01, peak_decay=0.9))
  # Restarts at 3 (2^k - 1) and steps around them, up to 2^29.
  steps = sorted(
    {
      3 * (2**k - 1) + d
      for k in range(1, 28)
      for d in (-1, 0, 1)
      if 3 * (2**k - 1) + d >= 0
    }
  )
  got = np.array([float(sched(jnp.int32(n))) for n in steps])
  want = np.array([_paper(n, 3, 2, 0.5, 0.01, 0.9) for n in steps])
  np.testing.assert_allclose(got, want, rtol=2e-6)


def test_restarts_land_on_the_peak():
  sched = sgdr_schedule(1.0, 5, 3)  # cycles [0, 5), [5, 20), [20, 65), ...
  assert float(sched(0)) == pytest.approx(1.0)
  for start, length in ((5, 5), (20, 15), (65, 45), (200, 135)):
    assert float(sched(start)) == pytest.approx(1.0)
    last = math.sin(math.pi / (2 * length)) ** 2
    assert float(sched(start - 1)) == pytest.approx(last, rel=1e-5)


def test_float_steps_anneal_within_a_cycle():
  # As torch's step(epoch) with a fractional epoch: the second cycle of
  # T_0 = 10, T_mult = 2 starts at 10 and lasts 20.
  sched = sgdr_schedule(0.1, 10, 2)
  want = 0.05 * (1 + math.cos(math.pi * 2.5 / 20))
  assert float(sched(12.5)) == pytest.approx(want, rel=1e-6)


def test_does_not_recompile_across_steps():
  traces = []

  @jax.jit
  def lr(count):
    traces.append(1)
    return sgdr_schedule(1.0, 4, 2)(count)

  for n in range(20):
    lr(jnp.int32(n))
  assert len(traces) == 1


@pytest.mark.parametrize(
  'kwargs, name',
  [
    ({'first_cycle_steps': 0}, 'first_cycle_steps'),
    ({'first_cycle_steps': 2.5}, 'first_cycle_steps'),
    ({'cycle_mult': 0}, 'cycle_mult'),
    ({'cycle_mult': 1.5}, 'cycle_mult'),
    ({'end_value': -0.1}, 'end_value'),
    ({'end_value': 2.0}, 'peak_value'),
    ({'peak_value': -1.0, 'end_value': 0.0}, 'peak_value'),
    ({'peak_decay': 0.0}, 'peak_decay'),
    ({'peak_decay': 1.5}, 'peak_decay'),
  ],
)
def test_bad_arguments_raise(kwargs, name):
  args = {'peak_value': 1.0, 'first_cycle_steps': 10, **kwargs}
  with pytest.raises(ValueError, match=name):
    sgdr_schedule(**args)
