"""acprop against a NumPy transcription of the authors' code."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from tests.reference import parity


class ACPropReference:
  """``ACProp.step`` of juntang-zhuang/ACProp-Optimizer,
  ``optimizers/ACProp.py``, with ``rectify=False, amsgrad=False,
  momentum_update=False`` (the paper's algorithm and the settings of the
  authors' ``main.py``), in float32 as PyTorch runs it.
  """

  def __init__(
    self,
    params,
    lr=1e-3,
    betas=(0.9, 0.999),
    eps=1e-16,
    weight_decay=0.0,
    weight_decouple=True,
  ):
    self.p = {k: v.copy() for k, v in params.items()}
    self.m = {k: np.zeros_like(v) for k, v in params.items()}
    self.s = {k: np.zeros_like(v) for k, v in params.items()}
    self.lr, self.betas, self.eps = lr, betas, eps
    self.wd, self.decouple = weight_decay, weight_decouple
    self.t = 0

  def step(self, grads):
    b1, b2 = self.betas
    self.t += 1
    bc1 = 1 - b1**self.t
    bc2 = 1 - b2 ** (self.t - 1)
    for k, p in self.p.items():
      g = grads[k].copy()
      if self.decouple:
        p *= np.float32(1.0 - self.lr * self.wd)
      elif self.wd != 0:
        g += np.float32(self.wd) * p
      m, s = self.m[k], self.s[k]
      m *= np.float32(b1)
      m += np.float32(1 - b1) * g
      if self.t > 1:
        s += np.float32(self.eps)  # in place: the state keeps the eps
        denom = np.sqrt(s) / np.float32(np.sqrt(bc2)) + np.float32(self.eps)
      if self.t <= 1:
        p -= np.float32(self.lr) * (m / np.float32(bc1))
      else:
        p -= np.float32(self.lr / bc1) * (g * np.float32(bc1) / denom)
      r = g - m
      s *= np.float32(b2)
      s += np.float32(1 - b2) * r * r
    return {k: v.copy() for k, v in self.p.items()}


CONFIGS = {
  'defaults': ({}, {}),
  'decoupled_wd': (
    {'b1': 0.8, 'b2': 0.99, 'eps': 1e-8, 'eps_root': 1e-8, 'weight_decay': 0.1},
    {'betas': (0.8, 0.99), 'eps': 1e-8, 'weight_decay': 0.1},
  ),
}


@pytest.mark.parametrize('config', sorted(CONFIGS))
def test_matches_official_code(config):
  ours, theirs = CONFIGS[config]
  params = parity.initial_params()
  worst = parity.run_parity(
    optax_zoo.acprop(1e-2, **ours),
    ACPropReference(params, lr=1e-2, **theirs),
    params,
    parity.noisy_quadratic_grads(),
    steps=150,
  )
  print(f'acprop {config}: worst relative deviation {worst:.3g}')
  parity.assert_parity(worst)
  parity.assert_within_registered('acprop', worst)


def test_l2_decay_chain_matches_official_weight_decouple_false():
  params = parity.initial_params()
  tx = optax.chain(
    optax.add_decayed_weights(0.1),
    optax_zoo.scale_by_acprop(eps=1e-8, eps_root=1e-8),
    optax.scale_by_learning_rate(1e-2),
  )
  ref = ACPropReference(
    params, lr=1e-2, eps=1e-8, weight_decay=0.1, weight_decouple=False
  )
  worst = parity.run_parity(
    tx, ref, params, parity.noisy_quadratic_grads(), steps=150
  )
  print(f'acprop l2 chain: worst relative deviation {worst:.3g}')
  parity.assert_parity(worst)
  parity.assert_within_registered('acprop', worst)


def test_optax_contrib_acprop_differs():
  # optax's residual uses m_{t-1} (optax issue #1132): visibly different
  # from the official code, which ours matches.
  if not hasattr(optax.contrib, 'acprop'):
    pytest.skip('optax.contrib.acprop is gone')
  params = parity.initial_params()
  worst = parity.run_parity(
    optax.contrib.acprop(1e-2),
    ACPropReference(params, lr=1e-2),
    params,
    parity.noisy_quadratic_grads(),
    steps=150,
  )
  print(f'optax.contrib.acprop: worst relative deviation {worst:.3g}')
  assert worst > 1e-3


def test_second_step_divides_by_the_centred_first_moment():
  tx = optax_zoo.scale_by_acprop(eps=0.0, eps_root=0.0)
  state = tx.init(jnp.zeros(2))
  g1 = jnp.array([2.0, -1.0])
  _, state = tx.update(g1, state)
  updates, _ = tx.update(jnp.ones(2), state)
  # s_1 = (1 - b2)(g_1 - m_1)^2 with m_1 = 0.1 g_1, debiased by 1 - b2.
  np.testing.assert_allclose(updates, 1 / np.abs(0.9 * g1), rtol=1e-5)


def test_nan_gradient_propagates_after_the_first_step():
  tx = optax_zoo.acprop(1e-2, weight_decay=0.1)
  params = jnp.ones(3)
  state = tx.init(params)
  _, state = tx.update(jnp.ones(3), state, params)
  updates, _ = jax.jit(tx.update)(jnp.array([1.0, jnp.nan, 1.0]), state, params)
  assert np.isnan(updates[1]) and np.all(np.isfinite(updates[::2]))


@pytest.mark.parametrize(
  'bad', [{'b1': 1.0}, {'b2': -0.1}, {'eps': -1.0}, {'eps_root': -1.0}]
)
def test_scale_by_acprop_rejects_bad_hyperparameters(bad):
  with pytest.raises(ValueError, match=next(iter(bad))):
    optax_zoo.scale_by_acprop(**bad)
