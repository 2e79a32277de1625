"""lambc against a NumPy transcription of the authors' code."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_zoo
from tests.reference import parity


class LambcReference:
  """``Lambc.step`` of jeffrey-fong/LAMBC, ``lamb_optim/lambc.py``
  (``adam=False``), in float32 as PyTorch runs it; the trust ratio is a
  Python float there (``.item()``). Counts the steps where the clip binds.
  """

  def __init__(
    self,
    params,
    lr=1e-3,
    betas=(0.9, 0.999),
    eps=1e-6,
    weight_decay=0.0,
    clip=True,
    clip_bound=1.0,
  ):
    self.p = {k: v.copy() for k, v in params.items()}
    self.m = {k: np.zeros_like(v) for k, v in params.items()}
    self.v = {k: np.zeros_like(v) for k, v in params.items()}
    self.lr, self.betas, self.eps, self.wd = lr, betas, eps, weight_decay
    self.clip, self.clip_bound = clip, clip_bound
    self.clipped = self.unclipped = 0

  def step(self, grads):
    b1, b2 = self.betas
    for k, p in self.p.items():
      g, m, v = grads[k], self.m[k], self.v[k]
      m *= np.float32(b1)
      m += np.float32(1 - b1) * g
      v *= np.float32(b2)
      v += np.float32(1 - b2) * g * g
      weight_norm = np.sqrt(np.sum(p**2))
      adam_step = m / (np.sqrt(v) + np.float32(self.eps))
      if self.wd != 0:
        adam_step += np.float32(self.wd) * p
      adam_norm = np.sqrt(np.sum(adam_step**2))
      if weight_norm == 0 or adam_norm == 0:
        trust_ratio = 1.0
      else:
        trust_ratio = float(weight_norm / adam_norm)
      if self.clip:
        if trust_ratio > self.clip_bound:
          self.clipped += 1
          trust_ratio = self.clip_bound
        else:
          self.unclipped += 1
      p -= np.float32(self.lr * trust_ratio) * adam_step
    return {k: v.copy() for k, v in self.p.items()}


CONFIGS = {
  'defaults': ({}, {}),
  'wd_and_bound': (
    {'b1': 0.8, 'b2': 0.99, 'eps': 1e-8, 'weight_decay': 0.05, 'clip_bound': 2},
    {'betas': (0.8, 0.99), 'eps': 1e-8, 'weight_decay': 0.05, 'clip_bound': 2},
  ),
}


@pytest.mark.parametrize('config', sorted(CONFIGS))
def test_matches_official_code(config):
  ours, theirs = CONFIGS[config]
  params = parity.initial_params()
  ref = LambcReference(params, lr=2e-2, **theirs)
  worst = parity.run_parity(
    optax_zoo.lambc(2e-2, **ours),
    ref,
    params,
    parity.noisy_quadratic_grads(),
    steps=150,
  )
  print(
    f'lambc {config}: worst relative deviation {worst:.3g} '
    f'(clipped {ref.clipped}, unclipped {ref.unclipped} layer-steps)'
  )
  parity.assert_parity(worst)
  parity.assert_within_registered('lambc', worst)
  assert ref.clipped > 0 and ref.unclipped > 0  # both branches exercised


def test_unbounded_clip_is_the_reference_lamb():
  params = parity.initial_params()
  worst = parity.run_parity(
    optax_zoo.lambc(2e-2, weight_decay=0.05, clip_bound=1e30),
    LambcReference(params, lr=2e-2, weight_decay=0.05, clip=False),
    params,
    parity.noisy_quadratic_grads(),
    steps=150,
  )
  print(f'lambc without clip: worst relative deviation {worst:.3g}')
  parity.assert_parity(worst)
  parity.assert_within_registered('lambc', worst)


def test_zero_norm_layer_gets_ratio_one_then_clip():
  tx = optax_zoo.scale_by_lambc(eps=0.0, clip_bound=0.5)
  params = {'zero': jnp.zeros(2), 'big': jnp.array([30.0, 40.0])}
  grads = {'zero': jnp.array([1.0, -1.0]), 'big': jnp.array([1.0, 1.0])}
  updates, _ = tx.update(grads, tx.init(params), params)
  # First-step r is sqrt(10) * sign(g); both ratios (1 and 50 / |r|)
  # exceed 0.5 and are clipped.
  r = np.sqrt(10.0)
  np.testing.assert_allclose(updates['zero'], [0.5 * r, -0.5 * r], rtol=1e-5)
  np.testing.assert_allclose(updates['big'], [0.5 * r, 0.5 * r], rtol=1e-5)


def test_nan_gradient_propagates_to_its_layer():
  tx = optax_zoo.lambc(1e-2)
  params = {'a': jnp.ones(3), 'b': jnp.ones(2)}
  grads = {'a': jnp.array([1.0, jnp.nan, 1.0]), 'b': jnp.ones(2)}
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  assert np.all(np.isnan(updates['a']))
  assert np.all(np.isfinite(updates['b']))


@pytest.mark.parametrize(
  'bad', [{'clip_bound': 0.0}, {'clip_bound': -1.0}, {'b1': 1.0}]
)
def test_scale_by_lambc_rejects_bad_hyperparameters(bad):
  with pytest.raises(ValueError, match=next(iter(bad))):
    optax_zoo.scale_by_lambc(**bad)
