"""generalized_signsgd against Algorithm 1 and its limit cases."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from tests.reference import parity


class GeneralizedSignSGDReference:
  """Algorithm 1 of Crawshaw et al. 2022, as the authors' code states it.

  Transcribes zhenxun-zhuang/Generalized-SignSGD
  ``cifar10/generalized_signsgd.py`` (``GeneralizedSignSGD.step``), in
  float64: L2 weight decay on the gradient, ``m = b1 m + (1 - b1) g``,
  ``v = b2 v + (1 - b2) m**2`` (the squared *momentum*), optional bias
  correction, ``x -= lr m / (sqrt(v) + eps)``.
  """

  def __init__(
    self,
    params,
    lr=1e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    use_bias_correction=False,
  ):
    self.params = {k: p.astype(np.float64) for k, p in params.items()}
    self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
    self.wd, self.bias_correction = weight_decay, use_bias_correction
    self.t = 0
    self.m = {k: np.zeros_like(p) for k, p in self.params.items()}
    self.v = {k: np.zeros_like(p) for k, p in self.params.items()}

  def step(self, grads):
    self.t += 1
    b1, b2 = self.b1, self.b2
    bc1 = 1 - b1**self.t if self.bias_correction else 1
    bc2 = 1 - b2**self.t if self.bias_correction else 1
    for k, p in self.params.items():
      g = grads[k].astype(np.float64) + self.wd * p
      self.m[k] = b1 * self.m[k] + (1 - b1) * g
      self.v[k] = b2 * self.v[k] + (1 - b2) * self.m[k] ** 2
      denom = np.sqrt(self.v[k] / bc2) + self.eps
      self.params[k] = p - self.lr * (self.m[k] / bc1) / denom
    return dict(self.params)


# (learning rate, our kwargs, the reference's). Worst deviations measured
# (float32 against the float64 transcription, 150 steps): 3.4e-6 at the
# defaults, 3.0e-7 with every option. The first is dominated by 1 - b2, which
# we round to float32 (so that `optax.inject_hyperparams` gives the same
# steps) while the transcription keeps it exact: a 1.3e-5 relative
# difference in the second moment, halved by the root. With the betas rounded
# to float32 in the transcription it falls to 4.2e-7.
CONFIGS = [
  (1e-3, {}, {}),
  (
    1e-2,
    {
      'b1': 0.8,
      'b2': 0.99,
      'eps': 1e-3,
      'weight_decay': 1e-2,
      'bias_correction': True,
    },
    {
      'betas': (0.8, 0.99),
      'eps': 1e-3,
      'weight_decay': 1e-2,
      'use_bias_correction': True,
    },
  ),
]


@pytest.mark.parametrize(('lr', 'ours', 'theirs'), CONFIGS)
def test_matches_algorithm_1(lr, ours, theirs):
  params = parity.initial_params()
  worst = parity.run_parity(
    optax_zoo.generalized_signsgd(lr, **ours),
    GeneralizedSignSGDReference(params, lr=lr, **theirs),
    params,
    parity.noisy_quadratic_grads(),
    steps=150,
  )
  parity.assert_parity(worst)
  parity.assert_within_registered('generalized_signsgd', worst)


def _updates(tx, grads):
  state = tx.init(grads[0])
  out = []
  for g in grads:
    u, state = tx.update(g, state, g)
    out.append(u)
  return jnp.stack(out)


def _grad_sequence():
  key = jax.random.key(0)
  return list(jax.random.normal(key, (6, 5)))


@pytest.mark.parametrize('b1', [0.0, 0.9])
def test_b2_zero_is_signum(b1):
  # At b2 = 0 the step is m / |m| = sign(m); at b1 = 0 too, sign(g).
  ours = _updates(
    optax_zoo.generalized_signsgd(1e-2, b1=b1, b2=0.0, eps=0.0),
    _grad_sequence(),
  )
  reference = optax.signum(1e-2, beta=b1) if b1 else optax.sign_sgd(1e-2)
  np.testing.assert_allclose(
    ours, _updates(reference, _grad_sequence()), rtol=1e-6
  )


def test_b1_zero_with_bias_correction_is_adam():
  ours = _updates(
    optax_zoo.generalized_signsgd(1e-2, b1=0.0, bias_correction=True),
    _grad_sequence(),
  )
  adam = _updates(optax.adam(1e-2, b1=0.0), _grad_sequence())
  np.testing.assert_allclose(ours, adam, rtol=1e-5)


def test_step_is_bounded_by_one_over_sqrt_one_minus_b2():
  # The property the paper's analysis rests on: no clipping needed, however
  # large the gradient.
  grads = [g * 10.0**k for k, g in enumerate(_grad_sequence())]
  ours = _updates(optax_zoo.scale_by_generalized_signsgd(b2=0.99), grads)
  assert np.max(np.abs(ours)) <= 1 / np.sqrt(1 - 0.99) * (1 + 1e-6)


def test_nan_gradient_propagates_with_bias_correction():
  tx = optax_zoo.generalized_signsgd(1e-2, bias_correction=True)
  params = jnp.ones(3)
  updates, _ = tx.update(
    jnp.array([1.0, jnp.nan, 1.0]), tx.init(params), params
  )
  assert np.isnan(updates[1]) and np.all(np.isfinite(updates[np.array([0, 2])]))
