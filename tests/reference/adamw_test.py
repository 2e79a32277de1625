"""adamw: optax's form against optax and torch, the paper's form against
Algorithm 2 of Loshchilov & Hutter (2019)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from tests.reference import parity

STEPS = 150


def _cosine(step: int, alpha: float = 0.1) -> float:
  """Cosine decay of the multiplier from 1 to ``alpha`` over ``STEPS``."""
  return alpha + (1 - alpha) * 0.5 * (1 + math.cos(math.pi * step / STEPS))


class AdamWPaperReference:
  """Algorithm 2 ("Adam with decoupled weight decay") of Loshchilov & Hutter,
  `Decoupled Weight Decay Regularization`, ICLR 2019, in float32:

    m_t = b1 m + (1 - b1) g;  v_t = b2 v + (1 - b2) g^2
    m_hat = m_t / (1 - b1^t);  v_hat = v_t / (1 - b2^t)
    eta_t = SetScheduleMultiplier(t)
    x_t = x_{t-1} - eta_t (alpha m_hat / (sqrt(v_hat) + eps) + lambda x_{t-1})

  with the multiplier read at t - 1, the step count optax passes schedules.
  """

  def __init__(self, params, alpha, weight_decay, multiplier, b1, b2, eps):
    self.x = {k: v.copy() for k, v in params.items()}
    self.m = {k: np.zeros_like(v) for k, v in params.items()}
    self.v = {k: np.zeros_like(v) for k, v in params.items()}
    self.alpha, self.wd, self.multiplier = alpha, weight_decay, multiplier
    self.b1, self.b2, self.eps = b1, b2, eps
    self.t = 0

  def step(self, grads):
    f32 = np.float32
    self.t += 1
    eta = self.multiplier(self.t - 1)
    for k, x in self.x.items():
      g, m, v = grads[k], self.m[k], self.v[k]
      m[...] = f32(self.b1) * m + f32(1 - self.b1) * g
      v[...] = f32(self.b2) * v + f32(1 - self.b2) * g * g
      m_hat = m / f32(1 - self.b1**self.t)
      v_hat = v / f32(1 - self.b2**self.t)
      adam = m_hat / (np.sqrt(v_hat) + f32(self.eps))
      x -= f32(eta) * (f32(self.alpha) * adam + f32(self.wd) * x)
    return {k: v.copy() for k, v in self.x.items()}


def _run(tx, steps=20):
  params = jax.tree.map(jnp.asarray, parity.initial_params())
  grad_fn = parity.noisy_quadratic_grads()
  state = tx.init(params)
  update = jax.jit(tx.update)
  for t in range(steps):
    grads = jax.tree.map(
      jnp.asarray, grad_fn(t, jax.tree.map(np.asarray, params))
    )
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


@pytest.mark.parametrize(
  'kwargs',
  [
    {},
    {'weight_decay': 0.1, 'b1': 0.8, 'eps_root': 1e-8, 'nesterov': True},
    {'weight_decay': 0.1, 'mask': {'w': True, 'b': False, 's': True}},
  ],
)
def test_default_form_is_optax_adamw_bit_for_bit(kwargs):
  lr = optax.cosine_decay_schedule(1e-2, 20)
  ours, ours_state = _run(optax_zoo.adamw(lr, **kwargs))
  theirs, theirs_state = _run(optax.adamw(lr, **kwargs))
  jax.tree.map(np.testing.assert_array_equal, ours, theirs)
  jax.tree.map(np.testing.assert_array_equal, ours_state, theirs_state)
  worst = parity.relative_deviation(ours, theirs)
  parity.assert_within_registered('adamw', worst, 'optax.adamw')


@pytest.mark.parametrize(
  'kwargs',
  [
    {'weight_decay': 1e-4},
    {'weight_decay': 0.1, 'b1': 0.8, 'b2': 0.99, 'eps': 1e-6},
  ],
)
def test_default_form_matches_torch(kwargs):
  torch = pytest.importorskip('torch')
  torch_kwargs = {
    'weight_decay': kwargs['weight_decay'],
    'betas': (kwargs.get('b1', 0.9), kwargs.get('b2', 0.999)),
    'eps': kwargs.get('eps', 1e-8),
  }
  params = parity.initial_params()
  worst = parity.run_parity(
    optax_zoo.adamw(1e-2, **kwargs),
    parity.TorchReference(
      params, lambda p: torch.optim.AdamW(p, lr=1e-2, **torch_kwargs)
    ),
    params,
    parity.noisy_quadratic_grads(),
    steps=STEPS,
  )
  print(f'adamw vs torch {kwargs}: worst relative deviation {worst:.3g}')
  parity.assert_parity(worst)
  parity.assert_within_registered('adamw', worst, 'torch AdamW')


@pytest.mark.parametrize(
  'kwargs', [{}, {'b1': 0.8, 'b2': 0.99, 'eps': 1e-6, 'weight_decay': 0.5}]
)
def test_paper_form_matches_algorithm_2(kwargs):
  kwargs = {'weight_decay': 0.1, **kwargs}
  params = parity.initial_params()
  ref = AdamWPaperReference(
    params,
    alpha=1e-2,
    weight_decay=kwargs['weight_decay'],
    multiplier=_cosine,
    b1=kwargs.get('b1', 0.9),
    b2=kwargs.get('b2', 0.999),
    eps=kwargs.get('eps', 1e-8),
  )
  tx = optax_zoo.adamw(
    1e-2,
    schedule_multiplier=optax.cosine_decay_schedule(1.0, STEPS, alpha=0.1),
    **kwargs,
  )
  worst = parity.run_parity(
    tx, ref, params, parity.noisy_quadratic_grads(), steps=STEPS
  )
  print(f'adamw paper form {kwargs}: worst relative deviation {worst:.3g}')
  parity.assert_parity(worst)
  parity.assert_within_registered('adamw', worst, 'Algorithm 2')


def test_paper_form_decay_does_not_scale_with_the_learning_rate():
  params = jnp.array([1.0, -2.0])
  zeros = jnp.zeros(2)
  for lr in (1e-3, 1e-1):
    tx = optax_zoo.adamw(lr, weight_decay=0.5, schedule_multiplier=0.2)
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates, -0.2 * 0.5 * params, rtol=1e-6)


def test_paper_form_works_under_inject_hyperparams():
  multiplier = optax.cosine_decay_schedule(1.0, 20, alpha=0.1)
  plain = optax_zoo.adamw(
    1e-2, weight_decay=0.1, schedule_multiplier=multiplier
  )
  injected = optax.inject_hyperparams(optax_zoo.adamw)(
    1e-2, weight_decay=0.1, schedule_multiplier=multiplier
  )
  ours, _ = _run(plain)
  theirs, _ = _run(injected)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
    ours,
    theirs,
  )


def test_rejects_negative_schedule_multiplier():
  with pytest.raises(ValueError, match='schedule_multiplier'):
    optax_zoo.adamw(1e-2, schedule_multiplier=-1.0)
  with pytest.raises(ValueError, match='schedule_multiplier'):
    optax_zoo.adamw(1e-2, schedule_multiplier=lambda t: -1.0)


def test_paper_form_propagates_nan():
  tx = optax_zoo.adamw(1e-2, schedule_multiplier=1.0)
  params = jnp.ones(3)
  updates, _ = jax.jit(tx.update)(
    jnp.array([1.0, jnp.nan, 1.0]), tx.init(params), params
  )
  assert np.isnan(updates[1]) and np.all(np.isfinite(updates[::2]))
