"""diffgrad against the authors' code and pytorch_optimizer's DiffGrad.

Measured worst relative deviations over 150 steps (float32):
  official, defaults                          4.0e-06
  official, b1=0.8 b2=0.99 eps=1e-6 wd=1e-2   4.1e-07
  pytorch_optimizer, defaults                 3.8e-06
  pytorch_optimizer, the same options         2.5e-07
  official, gradients ~1e-8 from zero, 30 steps  8.0e-06
At the defaults most of it is float32's 1 - 0.999**t in our bias correction
(as in optax.adam); the references compute it in float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from tests.reference import parity

LR = 1e-2
CONFIGS = {
  'defaults': {},
  'all_options': {'b1': 0.8, 'b2': 0.99, 'eps': 1e-6, 'weight_decay': 1e-2},
}


class OfficialDiffGrad:
  """shivram1987/diffGrad:diffGrad_v2.py, ``diffgrad.step``, in NumPy.

  diffGrad_v2.py (not diffGrad.py, whose previous gradient aliases the
  current one) with L2 weight decay added to the gradient.
  """

  def __init__(self, params, lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
    self.p = {k: v.astype(np.float32).copy() for k, v in params.items()}
    zeros = lambda: {k: np.zeros_like(v) for k, v in self.p.items()}
    self.m, self.v, self.prev = zeros(), zeros(), zeros()
    self.lr, self.b1, self.b2, self.eps, self.wd = lr, b1, b2, eps, weight_decay
    self.t = 0

  def step(self, grads):
    self.t += 1
    bc1, bc2 = 1 - self.b1**self.t, 1 - self.b2**self.t
    for k, p in self.p.items():
      g = grads[k] + self.wd * p
      self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
      self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
      denom = np.sqrt(self.v[k]) + self.eps
      dfc = 1 / (1 + np.exp(-np.abs(self.prev[k] - g)))
      self.prev[k] = g.copy()
      step_size = self.lr * np.sqrt(bc2) / bc1
      self.p[k] = p - step_size * self.m[k] * dfc / denom
    return {k: v.copy() for k, v in self.p.items()}


def _parity(reference, params, **kwargs):
  return parity.run_parity(
    optax_zoo.diffgrad(LR, **kwargs),
    reference,
    params,
    parity.noisy_quadratic_grads(),
    steps=150,
  )


@pytest.mark.parametrize('config', sorted(CONFIGS))
def test_matches_official_code(config):
  params = parity.initial_params()
  kwargs = CONFIGS[config]
  worst = _parity(OfficialDiffGrad(params, LR, **kwargs), params, **kwargs)
  parity.assert_parity(worst)
  parity.assert_within_registered('diffgrad', worst)


@pytest.mark.parametrize('config', sorted(CONFIGS))
def test_matches_pytorch_optimizer(config):
  pytest.importorskip('torch')
  pytorch_optimizer = pytest.importorskip('pytorch_optimizer')
  kwargs = CONFIGS[config]
  b1, b2 = kwargs.get('b1', 0.9), kwargs.get('b2', 0.999)
  params = parity.initial_params()
  # pytorch_optimizer decouples weight decay by default; the official
  # code's, and ours, is L2. It adds 1e-15 under the root, negligible here.
  reference = parity.TorchReference(
    params,
    lambda p: pytorch_optimizer.DiffGrad(
      p,
      lr=LR,
      betas=(b1, b2),
      eps=kwargs.get('eps', 1e-8),
      weight_decay=kwargs.get('weight_decay', 0.0),
      weight_decouple=False,
    ),
  )
  worst = _parity(reference, params, **kwargs)
  parity.assert_parity(worst)
  parity.assert_within_registered('diffgrad', worst)


def test_eps_placement_matches_official_code():
  # Gradients of the size of eps, where adding eps to the uncorrected root
  # (official code) and to the corrected one (paper) differ by order one.
  # The 8e-6 left is float32's 1 - 0.999 in the step-1 bias correction.
  params = parity.zeros_like(parity.initial_params())
  worst = parity.run_parity(
    optax_zoo.diffgrad(LR),
    OfficialDiffGrad(params, LR),
    params,
    parity.tiny_noise_grads(),
    steps=30,
  )
  parity.assert_parity(worst)
  parity.assert_within_registered('diffgrad', worst)


def test_friction_halves_a_steady_gradient():
  # Betas exact in binary, so that Adam's step is exactly the sign.
  tx = optax_zoo.scale_by_diffgrad(b1=0.5, b2=0.5, eps=0.0)
  g = jnp.array([3.0, -0.5])
  state = tx.init(jnp.zeros(2))
  first, state = tx.update(g, state)
  second, state = tx.update(g, state)
  # Step 1 compares with g_0 = 0; step 2 sees no change, so xi = 1/2 on
  # top of Adam's unit step for a constant gradient.
  want = jax.nn.sigmoid(jnp.abs(g)) * jnp.sign(g)
  np.testing.assert_allclose(first, want, rtol=1e-6)
  np.testing.assert_allclose(second, 0.5 * jnp.sign(g), rtol=1e-6)
  np.testing.assert_array_equal(state.prev_grad, g)


def test_mu_dtype_sets_the_first_moment_only():
  tx = optax_zoo.diffgrad(1e-2, mu_dtype=jnp.bfloat16)
  params = jnp.ones(3)
  state = tx.init(params)
  for _ in range(2):
    updates, state = jax.jit(tx.update)(params, state, params)
    params = optax.apply_updates(params, updates)
  inner = state[1]
  assert inner.mu.dtype == jnp.bfloat16
  assert inner.nu.dtype == inner.prev_grad.dtype == updates.dtype == jnp.float32


def test_nan_gradient_propagates_through_weight_decay():
  tx = optax_zoo.diffgrad(1e-2, weight_decay=1e-2)
  params = jnp.ones(2)
  updates, _ = tx.update(jnp.array([jnp.nan, 1.0]), tx.init(params), params)
  assert np.isnan(updates[0]) and np.isfinite(updates[1])
