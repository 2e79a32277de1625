"""pnm and adapnm against the authors' code and pytorch_optimizer.

pytorch_optimizer's PNM is the official algorithm; its AdaPNM adds eps before
dividing by sqrt(1 - b2^t) where the official code adds it after, so it is
compared live only at eps=0, where the two agree, and the official code is
transcribed in NumPy for every configuration.

Measured worst relative deviations over 150 steps (float32):
  pnm     official / pytorch_optimizer  defaults       1.5e-07 / 1.3e-07
  pnm     official / pytorch_optimizer  decoupled_wd   5.5e-07 / 6.2e-07
  pnm     official / pytorch_optimizer  l2_wd          2.4e-07 / 1.4e-07
  adapnm  official / pytorch_optimizer  defaults       3.5e-06 / 3.5e-06
  adapnm  official / pytorch_optimizer  no_amsgrad     3.6e-06 / 3.6e-06
  adapnm  official / pytorch_optimizer  decoupled_wd   1.6e-06 / 1.8e-06
  adapnm  official / pytorch_optimizer  l2_wd_no_ams   2.9e-06 / 2.9e-06
  adapnm  official, gradients ~1e-8 from zero, 30 steps (either amsgrad)
          5.3e-06
(pytorch_optimizer at eps=0; at its own eps it is within 2.2e-6 on these
order-one gradients too, but 43 times off on the tiny ones.) Most of the
adapnm deviation is float32's 1 - 0.999**t in our bias correction (as in
optax.adam); the references compute it in float64.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_zoo
from tests.reference import parity

PNM_LR, ADAPNM_LR, STEPS = 5e-2, 1e-2, 150
PNM_CONFIGS = {
  'defaults': {},
  'decoupled_wd': {'b1': 0.8, 'b0': 0.5, 'weight_decay': 0.1},
  'l2_wd': {'weight_decay': 0.1, 'decoupled': False},
}
ADAPNM_CONFIGS = {
  'defaults': {},
  'no_amsgrad': {'amsgrad': False},
  'decoupled_wd': {
    'b1': 0.8,
    'b2': 0.99,
    'b0': 0.5,
    'eps': 1e-6,
    'weight_decay': 0.1,
  },
  'l2_wd_no_amsgrad': {
    'weight_decay': 0.1,
    'decoupled': False,
    'amsgrad': False,
  },
}


class OfficialPN:
  """zeke-xie/Positive-Negative-Momentum:pnm_optim/{pnm,adapnm}.py in NumPy.

  ``step`` transcribes ``PNM.step`` when ``adaptive`` is False and
  ``AdaPNM.step`` otherwise; ``b0`` is the code's ``betas[1]`` (PNM) or
  ``betas[2]`` (AdaPNM).
  """

  def __init__(
    self,
    params,
    lr,
    *,
    adaptive,
    b1=0.9,
    b2=0.999,
    b0=1.0,
    eps=1e-8,
    weight_decay=0.0,
    amsgrad=True,
    decoupled=True,
  ):
    self.p = {k: v.astype(np.float32).copy() for k, v in params.items()}
    zeros = lambda: {k: np.zeros_like(v) for k, v in self.p.items()}
    # 'pos' is the buffer updated at odd steps, 'neg' at even steps.
    self.pos, self.neg, self.v, self.v_max = zeros(), zeros(), zeros(), zeros()
    self.lr, self.adaptive = lr, adaptive
    self.b1, self.b2, self.b0, self.eps = b1, b2, b0, eps
    self.wd, self.amsgrad, self.decoupled = weight_decay, amsgrad, decoupled
    self.t = 0

  def step(self, grads):
    self.t += 1
    noise_norm = math.sqrt((1 + self.b0) ** 2 + self.b0**2)
    for k in self.p:
      g = grads[k]
      if self.decoupled:
        self.p[k] = self.p[k] * (1 - self.lr * self.wd)
      else:
        g = g + self.wd * self.p[k]
      odd = self.t % 2 == 1
      this, other = (self.pos, self.neg) if odd else (self.neg, self.pos)
      this[k] = self.b1**2 * this[k] + (1 - self.b1**2) * g
      pn = (this[k] * (1 + self.b0) - self.b0 * other[k]) / noise_norm
      if not self.adaptive:
        self.p[k] = self.p[k] - self.lr * pn
        continue
      self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
      if self.amsgrad:
        self.v_max[k] = np.maximum(self.v_max[k], self.v[k])
      v = self.v_max[k] if self.amsgrad else self.v[k]
      denom = np.sqrt(v) / math.sqrt(1 - self.b2**self.t) + self.eps
      step_size = self.lr / (1 - self.b1**self.t)
      self.p[k] = self.p[k] - step_size * pn / denom
    return {k: v.copy() for k, v in self.p.items()}


def _parity(tx, reference):
  params = parity.initial_params()
  return parity.run_parity(
    tx,
    reference(params),
    params,
    parity.noisy_quadratic_grads(),
    steps=STEPS,
  )


def _official(adaptive, lr, kwargs):
  return lambda params: OfficialPN(params, lr, adaptive=adaptive, **kwargs)


def _torch(make, kwargs, lr, *, adaptive):
  """A pytorch_optimizer PNM or AdaPNM with our hyperparameters."""
  betas = (kwargs.get('b1', 0.9), kwargs.get('b0', 1.0))
  extra = {}
  if adaptive:
    betas = (betas[0], kwargs.get('b2', 0.999), betas[1])
    extra = {'ams_bound': kwargs.get('amsgrad', True), 'eps': kwargs['eps']}
  return lambda params: parity.TorchReference(
    params,
    lambda p: make(
      p,
      lr=lr,
      betas=betas,
      weight_decay=kwargs.get('weight_decay', 0.0),
      weight_decouple=kwargs.get('decoupled', True),
      **extra,
    ),
  )


@pytest.mark.parametrize('config', sorted(PNM_CONFIGS))
def test_pnm_matches_official_code(config):
  kwargs = PNM_CONFIGS[config]
  worst = _parity(
    optax_zoo.pnm(PNM_LR, **kwargs), _official(False, PNM_LR, kwargs)
  )
  parity.assert_parity(worst)
  parity.assert_within_registered('pnm', worst)


@pytest.mark.parametrize('config', sorted(PNM_CONFIGS))
def test_pnm_matches_pytorch_optimizer(config):
  pytest.importorskip('torch')
  pytorch_optimizer = pytest.importorskip('pytorch_optimizer')
  kwargs = PNM_CONFIGS[config]
  reference = _torch(pytorch_optimizer.PNM, kwargs, PNM_LR, adaptive=False)
  worst = _parity(optax_zoo.pnm(PNM_LR, **kwargs), reference)
  parity.assert_parity(worst)
  parity.assert_within_registered('pnm', worst)


@pytest.mark.parametrize('config', sorted(ADAPNM_CONFIGS))
def test_adapnm_matches_official_code(config):
  kwargs = ADAPNM_CONFIGS[config]
  worst = _parity(
    optax_zoo.adapnm(ADAPNM_LR, **kwargs), _official(True, ADAPNM_LR, kwargs)
  )
  parity.assert_parity(worst)
  parity.assert_within_registered('adapnm', worst)


@pytest.mark.parametrize('config', sorted(ADAPNM_CONFIGS))
def test_adapnm_matches_pytorch_optimizer_at_zero_eps(config):
  pytest.importorskip('torch')
  pytorch_optimizer = pytest.importorskip('pytorch_optimizer')
  # pytorch_optimizer divides (sqrt(v + 1e-15) + eps) by sqrt(1 - b2^t); the
  # official code adds eps after the division. At eps=0 they agree up to the
  # 1e-15 under the root.
  kwargs = {**ADAPNM_CONFIGS[config], 'eps': 0.0}
  reference = _torch(pytorch_optimizer.AdaPNM, kwargs, ADAPNM_LR, adaptive=True)
  worst = _parity(optax_zoo.adapnm(ADAPNM_LR, **kwargs), reference)
  parity.assert_parity(worst)
  parity.assert_within_registered('adapnm', worst)


@pytest.mark.parametrize('amsgrad', [True, False])
def test_adapnm_eps_placement_matches_official_code(amsgrad):
  # Gradients of the size of eps: adding eps after the bias correction
  # (official) or before it (pytorch_optimizer, off by a factor 43 here)
  # differ by order one. The 5e-6 left is float32's 1 - 0.999 in the
  # step-1 bias correction.
  params = parity.zeros_like(parity.initial_params())
  worst = parity.run_parity(
    optax_zoo.adapnm(ADAPNM_LR, amsgrad=amsgrad),
    OfficialPN(params, ADAPNM_LR, adaptive=True, amsgrad=amsgrad),
    params,
    parity.tiny_noise_grads(),
    steps=30,
  )
  parity.assert_parity(worst)
  parity.assert_within_registered('adapnm', worst)


def test_odd_and_even_steps_update_their_own_buffer_in_a_fixed_layout():
  tx = optax_zoo.scale_by_adapnm(amsgrad=False)
  params = {'w': jnp.zeros((2, 3)), 'b': jnp.zeros(3, jnp.bfloat16)}
  state = tx.init(params)
  assert state.nu_max is None
  layout = jax.tree.map(lambda x: (x.shape, x.dtype), state)
  traces = []

  @jax.jit
  def update(grads, state):
    traces.append(1)
    return tx.update(grads, state)

  for step in range(1, 5):
    grads = jax.tree.map(lambda p, s=step: jnp.full_like(p, s), params)
    previous = state
    _, state = update(grads, state)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == layout
    updated, kept = ('mu_odd', 'mu_even') if step % 2 else ('mu_even', 'mu_odd')
    # The other buffer is untouched; this one moved toward the new gradient.
    jax.tree.map(
      np.testing.assert_array_equal,
      getattr(state, kept),
      getattr(previous, kept),
    )
    assert not np.array_equal(
      getattr(state, updated)['w'], getattr(previous, updated)['w']
    )
  assert len(traces) == 1


@pytest.mark.parametrize('name', ['pnm', 'adapnm'])
def test_l2_weight_decay_keeps_nan(name):
  tx = getattr(optax_zoo, name)(1e-2, weight_decay=0.1, decoupled=False)
  params = jnp.ones(2)
  grads = jnp.array([jnp.nan, 1.0])
  updates, _ = tx.update(grads, tx.init(params), params)
  assert np.isnan(updates[0]) and np.isfinite(updates[1])


def test_adapnm_without_amsgrad_keeps_nan():
  tx = optax_zoo.adapnm(1e-2, amsgrad=False)
  params = jnp.ones(2)
  grads = jnp.array([jnp.nan, 1.0])
  updates, _ = tx.update(grads, tx.init(params), params)
  assert np.isnan(updates[0]) and np.isfinite(updates[1])


@pytest.mark.parametrize(
  ('factory', 'bad'),
  [
    (optax_zoo.scale_by_pnm, {'b0': -1.0}),
    (optax_zoo.scale_by_pnm, {'b1': 1.0}),
    (optax_zoo.scale_by_adapnm, {'b0': float('nan')}),
    (optax_zoo.scale_by_adapnm, {'b2': 1.0}),
    (optax_zoo.scale_by_adapnm, {'eps': -1.0}),
    (optax_zoo.scale_by_adapnm, {'amsgrad': None}),
    (lambda **kw: optax_zoo.adapnm(1e-2, **kw), {'decoupled': 'no'}),
  ],
)
def test_bad_hyperparameters_raise(factory, bad):
  with pytest.raises(ValueError, match=next(iter(bad))):
    factory(**bad)
