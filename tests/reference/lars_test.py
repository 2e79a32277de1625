"""lars against Algorithm 1 of You et al. (2017) and pytorch-optimizer's LARS.

The paper (arXiv:1708.03888v3, Algorithm 1 with the LARS coefficient of
eq. 6): per layer ``lam = eta |w| / (|g| + beta |w|)``,
``v = m v + gamma_t lam (g + beta w)``, ``w -= v``: the global rate inside
the momentum. ``optax.lars`` divides by ``|g + beta w|`` instead, so
`optax_zoo.lars` uses `scale_by_lars`.

pytorch-optimizer's ``LARS`` has the paper's ratio but multiplies the rate
outside the momentum (the same at a constant rate) and applies the ratio and
the decay only to arrays of rank >= 2: it equals ours at a constant rate
with both masks selecting those arrays. Its ``nesterov`` is the only
reference for ours (the paper has none).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from tests.reference import parity


def _constant(x):
  return lambda step: x


class PaperLars:
  """NumPy transcription of Algorithm 1 of You et al. (2017).

  ``lr`` (gamma) and ``weight_decay`` (beta) are functions of the 0-based
  step; ``trusted`` and ``decayed`` name the layers with a trust ratio and
  with weight decay (the paper: all). ``eps`` (0 in the paper) is added to
  the denominator; the ratio is 1 where it or |w| is 0.
  """

  def __init__(
    self,
    params,
    lr,
    weight_decay,
    eta,
    momentum,
    eps=0.0,
    trusted=None,
    decayed=None,
  ):
    self.w = {k: v.astype(np.float64) for k, v in params.items()}
    self.lr, self.wd, self.eta, self.m, self.eps = (
      lr,
      weight_decay,
      eta,
      momentum,
      eps,
    )
    self.trusted = set(params) if trusted is None else set(trusted)
    self.decayed = set(params) if decayed is None else set(decayed)
    self.v = {k: np.zeros_like(v) for k, v in self.w.items()}
    self.t = 0

  def step(self, grads):
    gamma, wd = float(self.lr(self.t)), float(self.wd(self.t))
    self.t += 1
    for k, g in grads.items():
      g = g.astype(np.float64)
      beta = wd if k in self.decayed else 0.0
      local = 1.0
      if k in self.trusted:
        w_norm = np.linalg.norm(self.w[k])
        denom = np.linalg.norm(g) + beta * w_norm + self.eps
        if w_norm > 0 and denom > 0:
          local = self.eta * w_norm / denom
      self.v[k] = self.m * self.v[k] + gamma * local * (g + beta * self.w[k])
      self.w[k] = self.w[k] - self.v[k]
    return {k: v.astype(np.float32) for k, v in self.w.items()}


def _poly(step):  # the paper's global rate: gamma_0 (1 - t/T)^2
  return 3.0 * (1 - step / 150) ** 2


_DECAY = optax.linear_schedule(1e-2, 1e-3, transition_steps=150)


# Measured worst relative deviations (150 steps): defaults 3.7e-7; weight
# decay 1e-2, eta 0.02, eps 1e-8, momentum 0.8 with the paper's polynomial
# rate 6.4e-7; decay schedule with masks 4.7e-7. LARS at a constant rate is
# chaotic here (steps of a fixed fraction of |w|): a 1e-4 difference in one
# step grows to 1e-1 in 20, so these small numbers mean the same arithmetic.
@pytest.mark.parametrize(
  'config',
  [
    {},
    {
      'learning_rate': _poly,
      'weight_decay': 1e-2,
      'trust_coefficient': 0.02,
      'eps': 1e-8,
      'momentum': 0.8,
    },
    {
      'learning_rate': 0.1,
      'weight_decay': _DECAY,
      'trust_coefficient': 0.5,
      'trusted': ('w', 's'),
      'decayed': ('w', 'b'),
    },
  ],
  ids=['default', 'options', 'schedule_masks'],
)
def test_matches_paper_algorithm_1(config):
  config = dict(config)
  lr = config.pop('learning_rate', 3.0)
  trusted, decayed = config.pop('trusted', None), config.pop('decayed', None)
  wd = config.get('weight_decay', 0.0)
  params = parity.initial_params()
  ref = PaperLars(
    params,
    lr if callable(lr) else _constant(lr),
    wd if callable(wd) else _constant(wd),
    config.get('trust_coefficient', 0.001),
    config.get('momentum', 0.9),
    config.get('eps', 0.0),
    trusted,
    decayed,
  )
  if trusted is not None:
    config['trust_ratio_mask'] = {k: k in trusted for k in params}
  if decayed is not None:
    config['mask'] = {k: k in decayed for k in params}
  worst = parity.run_parity(
    optax_zoo.lars(lr, **config),
    ref,
    params,
    parity.noisy_quadratic_grads(),
    steps=150,
  )
  parity.assert_parity(worst)
  parity.assert_within_registered('lars', worst)


def test_optax_lars_differs_from_the_paper_with_weight_decay():
  # g = -w: the paper divides by |g| + beta |w| = 1.5 |w|, optax by
  # |g + beta w| = 0.5 |w|, a step 3 times larger.
  params = jnp.ones(4)
  grads = -params
  kwargs = {'weight_decay': 0.5, 'trust_coefficient': 1.0}
  results = []
  for tx in (optax_zoo.lars(1.0, **kwargs), optax.lars(1.0, **kwargs)):
    results.append(tx.update(grads, tx.init(params), params)[0])
  ours, theirs = results
  np.testing.assert_allclose(ours, (2 / 3) * 0.5 * params, rtol=1e-6)
  np.testing.assert_allclose(theirs, 3 * ours, rtol=1e-6)


def _rank_two(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


# Measured: 2.7e-7 (momentum), 2.0e-7 (Nesterov).
@pytest.mark.parametrize('nesterov', [False, True])
def test_matches_pytorch_optimizer_on_rank_two_arrays(nesterov):
  pytest.importorskip('torch')
  pto = pytest.importorskip('pytorch_optimizer')
  params = parity.initial_params()
  ref = parity.TorchReference(
    params,
    lambda p: pto.LARS(
      p,
      lr=0.1,
      weight_decay=1e-2,
      momentum=0.9,
      trust_coefficient=0.5,
      nesterov=nesterov,
    ),
  )
  tx = optax_zoo.lars(
    0.1,
    weight_decay=1e-2,
    mask=_rank_two,
    trust_coefficient=0.5,
    trust_ratio_mask=_rank_two,
    nesterov=nesterov,
  )
  worst = parity.run_parity(
    tx, ref, params, parity.noisy_quadratic_grads(), steps=150
  )
  parity.assert_parity(worst)
  parity.assert_within_registered('lars', worst)


def test_zero_weights_take_a_plain_gradient_step():
  tx = optax_zoo.scale_by_lars(weight_decay=0.5, trust_coefficient=0.1)
  params = {'zero': jnp.zeros(3), 'one': jnp.ones(4)}
  grads = {'zero': jnp.array([1.0, -2.0, 3.0]), 'one': jnp.zeros(4)}
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['zero'], grads['zero'])
  # |g| = 0: the ratio is eta / beta, finite.
  np.testing.assert_allclose(updates['one'], 0.1 / 0.5 * 0.5 * np.ones(4))


def test_nan_gradient_propagates_through_the_ratio():
  tx = optax_zoo.scale_by_lars(weight_decay=0.1)
  params = jnp.ones(3)
  updates, _ = tx.update(
    jnp.array([1.0, jnp.nan, 0.0]), tx.init(params), params
  )
  assert np.all(np.isnan(updates))


@pytest.mark.parametrize(
  'kwargs, name',
  [
    ({'weight_decay': -1.0}, 'weight_decay'),
    ({'weight_decay': lambda step: -1.0}, 'weight_decay'),
    ({'trust_coefficient': 0.0}, 'trust_coefficient'),
    ({'eps': -1.0}, 'eps'),
  ],
)
def test_bad_hyperparameters_raise(kwargs, name):
  with pytest.raises(ValueError, match=name):
    optax_zoo.scale_by_lars(**kwargs)


def test_needs_params():
  tx = optax_zoo.scale_by_lars()
  with pytest.raises(ValueError, match='params'):
    tx.update(jnp.ones(2), tx.init(jnp.ones(2)))
