"""adafactor against Algorithms 4 and 5 of Shazeer & Stern (2018) and t5x.

The transcription follows the paper's boxes (arXiv:1804.04235v1, Algorithm 4
for factored matrices with row and column sums, Algorithm 5 otherwise, the
relative step size of section 8 and the update clipping of section 6), plus
the two options of t5x ``t5x/adafactor.py`` that the boxes lack: momentum on
the scaled step (``beta1``) and a weight decay not multiplied by the step
size. Which arrays are factored follows optax and t5x: those whose
second-largest dimension is at least ``min_dim_size_to_factor`` (the paper:
every matrix, i.e. 1).

Mapping: ``decay_rate`` is the paper's c in ``1 - t^-c``, ``eps`` its
epsilon_1, ``clipping_threshold`` its d; epsilon_2 = 1e-3 is fixed.
"""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from tests.reference import parity


def _rms(x):
  return np.sqrt(np.mean(np.square(x)))


class PaperAdafactor:
  """NumPy transcription of Adafactor (Algorithms 4 and 5) with t5x's
  momentum and weight decay. ``lr`` is a function of the 0-based step, or
  None for the relative step min(1e-2, 1/sqrt(t))."""

  def __init__(
    self,
    params,
    lr=None,
    *,
    min_dim_size_to_factor=128,
    decay_rate=0.8,
    clipping_threshold=1.0,
    eps1=1e-30,
    eps2=1e-3,
    multiply_by_parameter_scale=True,
    beta1=None,
    weight_decay=None,
    factored=True,
  ):
    self.x = {k: v.astype(np.float64) for k, v in params.items()}
    self.lr, self.c, self.d = lr, decay_rate, clipping_threshold
    self.eps1, self.eps2 = eps1, eps2
    self.scale, self.beta1, self.wd = (
      multiply_by_parameter_scale,
      beta1,
      weight_decay,
    )
    self.factor = {
      k: factored
      and v.ndim == 2
      and sorted(v.shape)[-2] >= min_dim_size_to_factor
      for k, v in params.items()
    }
    self.r = {k: np.zeros(v.shape[0]) for k, v in params.items()}
    self.col = {k: np.zeros(v.shape[-1]) for k, v in params.items()}
    self.v = {k: np.zeros(v.shape) for k, v in params.items()}
    self.m = {k: np.zeros(v.shape) for k, v in params.items()}
    self.t = 0

  def step(self, grads):
    self.t += 1
    t = self.t
    if self.lr is None:
      rho = min(1e-2, 1 / np.sqrt(t))
    else:
      rho = float(self.lr(t - 1))
    beta2 = 1 - t ** (-self.c)
    for k, g in grads.items():
      x, g2 = self.x[k], np.square(g.astype(np.float64)) + self.eps1
      alpha = max(self.eps2, _rms(x)) * rho if self.scale else rho
      if self.factor[k]:  # Algorithm 4: row and column sums
        self.r[k] = beta2 * self.r[k] + (1 - beta2) * g2.sum(axis=1)
        self.col[k] = beta2 * self.col[k] + (1 - beta2) * g2.sum(axis=0)
        v_hat = np.outer(self.r[k], self.col[k]) / self.r[k].sum()
      else:  # Algorithm 5
        self.v[k] = beta2 * self.v[k] + (1 - beta2) * g2
        v_hat = self.v[k]
      u = g / np.sqrt(v_hat)
      if self.d is not None:
        u = u / max(1.0, _rms(u) / self.d)
      step = alpha * u
      if self.beta1 is not None:  # t5x: m = b1 m + (1 - b1) * lr * u
        self.m[k] = self.beta1 * self.m[k] + (1 - self.beta1) * step
        step = self.m[k]
      if self.wd is not None:  # t5x: (1 - wd) * x - step
        step = step + self.wd * x
      self.x[k] = x - step
    return {k: v.astype(np.float32) for k, v in self.x.items()}


# Measured worst relative deviations (150 steps): paper (relative step,
# every matrix factored) 6.3e-7; defaults at lr 1e-2 (nothing factored)
# 3.8e-7; options (schedule, momentum, decay, factored 6x5) 4.3e-7;
# factored=False without clipping 3.1e-7.
_CONFIGS = {
  'paper': ({'min_dim_size_to_factor': 1}, {'min_dim_size_to_factor': 1}),
  'defaults': (
    {'learning_rate': 1e-2},
    {'lr': lambda step: 1e-2},
  ),
  'options': (
    {
      'learning_rate': optax.cosine_decay_schedule(3e-2, 150),
      'min_dim_size_to_factor': 5,
      'decay_rate': 0.5,
      'multiply_by_parameter_scale': False,
      'clipping_threshold': 0.5,
      'momentum': 0.9,
      'weight_decay_rate': 1e-3,
      'eps': 1e-20,
    },
    {
      'lr': optax.cosine_decay_schedule(3e-2, 150),
      'min_dim_size_to_factor': 5,
      'decay_rate': 0.5,
      'multiply_by_parameter_scale': False,
      'clipping_threshold': 0.5,
      'beta1': 0.9,
      'weight_decay': 1e-3,
      'eps1': 1e-20,
    },
  ),
  'unfactored_no_clipping': (
    {
      'learning_rate': 1e-2,
      'min_dim_size_to_factor': 1,
      'factored': False,
      'clipping_threshold': None,
    },
    {
      'lr': lambda step: 1e-2,
      'min_dim_size_to_factor': 1,
      'factored': False,
      'clipping_threshold': None,
    },
  ),
}


@pytest.mark.parametrize('name', list(_CONFIGS))
def test_matches_paper_and_t5x(name):
  ours, theirs = _CONFIGS[name]
  theirs = dict(theirs)
  params = parity.initial_params()
  ref = PaperAdafactor(params, theirs.pop('lr', None), **theirs)
  worst = parity.run_parity(
    optax_zoo.adafactor(**ours),
    ref,
    params,
    parity.noisy_quadratic_grads(),
    steps=150,
  )
  parity.assert_parity(worst)
  parity.assert_within_registered('adafactor', worst)


def test_relative_step_is_the_papers_not_optaxs():
  # optax.adafactor(None) takes steps of RMS(x) (no step size at all); ours
  # of min(1e-2, 1/sqrt(t)) RMS(x), the paper's relative step.
  params = {'w': jnp.full((2, 3), 2.0)}
  grads = {'w': jnp.ones((2, 3))}
  ours = optax_zoo.adafactor()
  theirs = optax.adafactor()
  u_ours = ours.update(grads, ours.init(params), params)[0]['w']
  u_theirs = theirs.update(grads, theirs.init(params), params)[0]['w']
  np.testing.assert_allclose(u_theirs, -2.0, rtol=1e-6)
  np.testing.assert_allclose(u_ours, -2.0 * 1e-2, rtol=1e-6)


@pytest.mark.parametrize(
  'min_dim, factored', [(1, True), (5, True), (6, False), (128, False)]
)
def test_factoring_threshold_is_the_second_largest_dimension(min_dim, factored):
  params = {'w': jnp.zeros((6, 5)), 'b': jnp.zeros(5)}
  state = optax_zoo.adafactor(1e-2, min_dim_size_to_factor=min_dim).init(params)
  factored_state = state[0]
  assert (factored_state.v_row['w'].shape == (5,)) == factored
  assert (factored_state.v['w'].shape == (6, 5)) == (not factored)
  assert factored_state.v['b'].shape == (5,)  # vectors never are
