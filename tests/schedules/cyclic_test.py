"""The SWA and FGE schedules against the formulas of their papers."""

import numpy as np
import pytest

from optax_zoo.schedules import fge_schedule, swa_schedule


def _fge_reference(lr_1, lr_2, epoch, cycle, iteration):
  """utils.cyclic_learning_rate of dnn-mode-connectivity, one value."""
  t = ((epoch % cycle) + iteration) / cycle
  if t < 0.5:
    return lr_1 * (1.0 - 2.0 * t) + lr_2 * 2.0 * t
  return lr_1 * (2.0 * t - 1.0) + lr_2 * (2.0 - 2.0 * t)


def test_fge_schedule_is_the_papers_formula():
  # An "epoch" of 5 steps: step n is epoch n // 5 at fraction (n % 5) / 5.
  per_epoch, cycle = 5, 4
  sched = fge_schedule(0.05, 0.0005, cycle * per_epoch)
  for n in range(60):
    want = _fge_reference(
      0.05, 0.0005, n // per_epoch, cycle, (n % per_epoch) / per_epoch
    )
    assert float(sched(n)) == pytest.approx(want, rel=1e-5)


def test_swa_schedule_is_train_py_then_constant_or_cyclic():
  lr_init, swa_lr, swa_start = 0.1, 0.05, 100
  sched = swa_schedule(lr_init, swa_lr, swa_start)
  for n in range(0, 200, 7):
    t = n / swa_start
    factor = (
      1.0
      if t <= 0.5
      else 1.0 - (1.0 - swa_lr / lr_init) * (t - 0.5) / 0.4
      if t <= 0.9
      else swa_lr / lr_init
    )
    assert float(sched(n)) == pytest.approx(lr_init * factor, rel=1e-5)
  cyc = swa_schedule(lr_init, 0.01, swa_start, cycle_steps=4)
  # The paper: alpha(i) = (1 - t(i)) a1 + t(i) a2, t(i) = (mod(i-1, c)+1)/c.
  got = [float(cyc(swa_start + i - 1)) for i in range(1, 9)]
  want = [
    (1 - ((i - 1) % 4 + 1) / 4) * lr_init + ((i - 1) % 4 + 1) / 4 * 0.01
    for i in range(1, 9)
  ]
  np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize(
  'call, name',
  [
    (lambda: fge_schedule(0.05, 0.0005, 1), 'cycle_steps'),
    (lambda: fge_schedule(-0.05, 0.0005, 4), 'lr_1'),
    (lambda: swa_schedule(0.1, 0.0, 10), 'swa_value'),
    (lambda: swa_schedule(0.1, 0.01, 0), 'swa_start'),
  ],
)
def test_bad_schedule_arguments_raise(call, name):
  with pytest.raises(ValueError, match=name):
    call()
