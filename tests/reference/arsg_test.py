"""arsg against a NumPy transcription of the official code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_zoo
from tests.reference import parity


class ArsgReference:
  """rationalspark/NAMSG ``torch/arsg.py``, ``Arsg.step``, in float64.

  Like the original, all parameters live in one flat vector with
  unnormalized moments (``m = b1 m + g``); its lookahead (``nLA``) and
  gradient accumulation are off, as by default.
  """

  def __init__(
    self,
    params,
    lr=1e-3,
    betas=(0.999, 0.99),
    eps=1e-8,
    weight_decay=0.0,
    mu=0.1,
    adaptive=True,
    amsgrad=True,
  ):
    self.names = sorted(params)
    self.shapes = {k: params[k].shape for k in self.names}
    self.data = np.concatenate([params[k].ravel() for k in self.names])
    self.data = self.data.astype(np.float64)
    self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
    self.wd, self.mu = weight_decay, mu
    self.adaptive, self.amsgrad = adaptive, adaptive and amsgrad
    self.step_count = 1
    self.exp_avg = np.zeros_like(self.data)
    self.exp_avg_sq = np.zeros_like(self.data)
    self.max_exp_avg_sq = np.full_like(self.data, eps / (1 - self.b2))

  def step(self, grads):
    grad = np.concatenate([grads[k].ravel() for k in self.names])
    grad = grad.astype(np.float64) + self.wd * self.data
    lr, b1, b2, mu, eps = self.lr, self.b1, self.b2, self.mu, self.eps
    self.exp_avg = b1 * self.exp_avg + grad
    if self.adaptive:
      self.exp_avg_sq = b2 * self.exp_avg_sq + grad * grad
    if self.amsgrad:
      self.max_exp_avg_sq = np.maximum(self.max_exp_avg_sq, self.exp_avg_sq)
      denom = np.sqrt(self.max_exp_avg_sq)
      amp = (1 - b1) * (1 - mu)
      step_size = lr * amp / (1 - b2) ** 0.5
      self.data -= step_size * (self.exp_avg + mu / amp * grad) / denom
    elif self.adaptive:
      bc1 = 1 - b1**self.step_count
      bc2 = 1 - b2**self.step_count
      amp = (1 - b1) * (1 - mu) / bc1
      amp_denom = ((1 - b2) / bc2) ** 0.5
      denom = np.sqrt(self.exp_avg_sq) + eps / amp_denom
      step_size = lr * amp / amp_denom
      self.data -= step_size * (self.exp_avg + mu / amp * grad) / denom
    else:
      step_size = lr * (1 - b1) * (1 - mu)
      self.data -= step_size * (self.exp_avg + mu / (1 - mu) / (1 - b1) * grad)
    self.step_count += 1
    out, start = {}, 0
    for k in self.names:
      size = int(np.prod(self.shapes[k]))
      out[k] = self.data[start : start + size].reshape(self.shapes[k])
      start += size
    return out


# (our kwargs, the reference's): the defaults (at a rate that moves the
# parameters), then every option. Worst deviations measured (float32 against
# the float64 transcription, 150 steps): 9.1e-7, 3.3e-7, 6.1e-7, 3.7e-7.
CONFIGS = [
  ({}, {}),
  (
    {'b1': 0.9, 'b2': 0.999, 'eps': 1e-4, 'mu': 0.3, 'weight_decay': 1e-2},
    {'betas': (0.9, 0.999), 'eps': 1e-4, 'mu': 0.3, 'weight_decay': 1e-2},
  ),
  (
    {'b1': 0.9, 'eps': 1e-6, 'weight_decay': 1e-2, 'amsgrad': False},
    {'betas': (0.9, 0.99), 'eps': 1e-6, 'weight_decay': 1e-2, 'amsgrad': 0},
  ),
  (
    {'b1': 0.9, 'mu': 0.5, 'weight_decay': 1e-2, 'adaptive': False},
    {'betas': (0.9, 0.99), 'mu': 0.5, 'weight_decay': 1e-2, 'adaptive': 0},
  ),
]


@pytest.mark.parametrize(('ours', 'theirs'), CONFIGS)
def test_matches_the_official_code(ours, theirs):
  lr = 1e-2
  params = parity.initial_params()
  worst = parity.run_parity(
    optax_zoo.arsg(lr, **ours),
    ArsgReference(params, lr=lr, **theirs),
    params,
    parity.noisy_quadratic_grads(),
    steps=150,
  )
  parity.assert_parity(worst)
  parity.assert_within_registered('arsg', worst)


def test_mu_zero_is_amsgrad_without_bias_correction():
  g = jnp.array([0.5, -2.0, 3.0])
  tx = optax_zoo.scale_by_arsg(b1=0.9, b2=0.99, eps=0.0, mu=0.0)
  state = tx.init(g)
  m = v = v_max = np.zeros(3)
  for t in range(3):
    grad = np.asarray(g) * (t + 1) * (-1) ** t
    updates, state = tx.update(jnp.asarray(grad, jnp.float32), state)
    m = 0.9 * m + 0.1 * grad
    v = 0.99 * v + 0.01 * grad**2
    v_max = np.maximum(v_max, v)
    np.testing.assert_allclose(updates, m / np.sqrt(v_max), rtol=1e-6)


def test_rsg_state_has_no_second_moment():
  state = optax_zoo.scale_by_arsg(adaptive=False).init(jnp.zeros(3))
  assert state.nu is None and state.nu_max is None
  state = optax_zoo.scale_by_arsg(amsgrad=False).init(jnp.zeros(3))
  assert state.nu is not None and state.nu_max is None


@pytest.mark.parametrize('flags', [{'amsgrad': False}, {'adaptive': False}])
def test_nan_gradient_propagates_in_every_mode(flags):
  tx = optax_zoo.arsg(1e-2, **flags)
  params = jnp.ones(3)
  updates, _ = jax.jit(tx.update)(
    jnp.array([1.0, jnp.nan, 1.0]), tx.init(params), params
  )
  assert np.isnan(updates[1]) and np.all(np.isfinite(updates[np.array([0, 2])]))


@pytest.mark.parametrize(
  ('kwargs', 'match'), [({'mu': -0.1}, '`mu`'), ({'eps': -1.0}, '`eps`')]
)
def test_bad_hyperparameters_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optax_zoo.arsg(1e-2, **kwargs)
