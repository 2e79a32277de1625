"""FLOPs accounting of sparse models (RigL paper, Appendix H)."""

from __future__ import annotations

import pytest

from optax_zoo import sparsity as sp


def test_inference_flops_scale_with_density_per_layer():
  flops = [sp.dense_flops((784, 300)), sp.dense_flops((3, 3, 16, 32), 64)]
  assert flops == [2 * 784 * 300, 2 * 9 * 512 * 64]
  assert sp.inference_flops(flops, [0.1, 0.5]) == pytest.approx(
    0.1 * flops[0] + 0.5 * flops[1]
  )


def test_training_flops_per_method():
  flops, dens = [1000.0, 200.0], [0.1, 0.5]
  f_s = 0.1 * 1000 + 0.5 * 200
  kw = dict(total_steps=1000)
  assert sp.training_flops(flops, dens, method='dense', **kw) == 3 * 1200e3
  for method in ('static', 'set'):
    assert sp.training_flops(flops, dens, method=method, **kw) == 3 * f_s * 1e3
  # Updates at 0, 100, ..., 700 (< 750): 8 of them.
  got = sp.training_flops(
    flops, dens, method='rigl', update_every=100, end_fraction=0.75, **kw
  )
  assert got == pytest.approx(3 * f_s * 992 + (2 * f_s + 1200) * 8)
  # Throughout training: the paper's average with Delta T = 99 steps
  # between updates.
  got = sp.training_flops(
    flops, dens, method='rigl', update_every=100, end_fraction=1.0, **kw
  )
  per_step = (3 * f_s * 99 + 2 * f_s + 1200) / 100
  assert got == pytest.approx(per_step * 1000)


def test_bad_flops_arguments_raise():
  with pytest.raises(ValueError, match='method'):
    sp.training_flops([1.0], [0.5], method='pruning', total_steps=10)
  with pytest.raises(ValueError, match='densities'):
    sp.inference_flops([1.0, 2.0], [0.5])
  with pytest.raises(ValueError, match='densities'):
    sp.inference_flops([1.0], [1.5])
  with pytest.raises(ValueError, match='total_steps'):
    sp.training_flops([1.0], [0.5], method='rigl', total_steps=0)
