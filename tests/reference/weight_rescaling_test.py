"""weight_rescaling against a NumPy transcription of its statement."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from optax_zoo._src import test_utils as tu
from tests.reference import parity


def _unit_norms(x, per_unit):
  axes = tuple(range(x.ndim - 1)) if per_unit and x.ndim >= 2 else None
  return np.sqrt(np.sum(x**2, axis=axes, keepdims=True))


class WeightRescalingReference:
  """SGD with momentum, then WRS as `weight_rescaling` states it, in float64.

  After each step ``t`` (from 1) with ``t % every_k == 0``, each unit of a
  masked leaf (a column over all axes but the last, or the whole leaf) is
  scaled to its norm at the start, or to ``target_norm``.
  """

  def __init__(
    self, params, lr, momentum, mask, every_k=1, target_norm=None, per_unit=1
  ):
    self.params = {k: p.astype(np.float64) for k, p in params.items()}
    self.lr, self.momentum, self.mask = lr, momentum, mask
    self.every_k, self.per_unit = every_k, per_unit
    self.trace = {k: np.zeros_like(p) for k, p in self.params.items()}
    self.targets = {
      k: _unit_norms(p, per_unit) if target_norm is None else target_norm
      for k, p in self.params.items()
    }
    self.t = 0

  def step(self, grads):
    self.t += 1
    for k, p in self.params.items():
      self.trace[k] = self.momentum * self.trace[k] + grads[k]
      p = p - self.lr * self.trace[k]
      if self.mask[k] and self.t % self.every_k == 0:
        p = p * self.targets[k] / _unit_norms(p, self.per_unit)
      self.params[k] = p
    return dict(self.params)


# (our kwargs, the reference's mask and kwargs). Worst deviations measured
# (float32 against the float64 transcription, 150 steps): 2.1e-7, 2.8e-7,
# 2.0e-7.
CONFIGS = [
  ({}, {'w': True, 'b': False, 's': False}, {}),
  (
    {
      'mask': {'w': True, 'b': True, 's': False},
      'every_k': 3,
      'target_norm': 1.0,
      'per_unit': False,
    },
    {'w': True, 'b': True, 's': False},
    {'every_k': 3, 'target_norm': 1.0, 'per_unit': False},
  ),
  (
    {'mask': lambda p: jax.tree.map(lambda x: x.size > 1, p), 'every_k': 2},
    {'w': True, 'b': True, 's': False},
    {'every_k': 2},
  ),
]


@pytest.mark.parametrize(('ours', 'mask', 'theirs'), CONFIGS)
def test_matches_the_statement(ours, mask, theirs):
  lr, momentum = 0.05, 0.9
  params = parity.initial_params()
  worst = parity.run_parity(
    optax_zoo.weight_rescaling(optax.sgd(lr, momentum=momentum), **ours),
    WeightRescalingReference(params, lr, momentum, mask, **theirs),
    params,
    parity.noisy_quadratic_grads(),
    steps=150,
  )
  parity.assert_parity(worst)
  parity.assert_within_registered('weight_rescaling', worst)


def _train(tx, steps):
  params = jax.tree.map(jnp.asarray, parity.initial_params())
  grad_fn = parity.noisy_quadratic_grads()
  state = tx.init(params)
  for t in range(steps):
    grads = grad_fn(t, jax.tree.map(np.asarray, params))
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_restores_masked_norms_and_leaves_the_rest_alone():
  inner = optax.sgd(0.05, momentum=0.9)
  rescaled = _train(optax_zoo.weight_rescaling(inner), 40)
  plain = _train(inner, 40)
  start = parity.initial_params()
  np.testing.assert_allclose(
    _unit_norms(np.asarray(rescaled['w']), True),
    _unit_norms(start['w'], True),
    rtol=1e-6,
  )
  # The quadratic would move the norms a lot without the rescaling.
  assert not np.allclose(
    _unit_norms(np.asarray(plain['w']), True),
    _unit_norms(start['w'], True),
    rtol=1e-2,
  )
  # Each leaf's gradient depends on that leaf only, so the unmasked leaves
  # follow exactly the inner optimizer's trajectory.
  tu.assert_trees_equal(
    {k: rescaled[k] for k in ('b', 's')}, {k: plain[k] for k in ('b', 's')}
  )


def test_rescales_only_every_k_steps():
  tx = optax_zoo.weight_rescaling(optax.sgd(0.1), every_k=3)
  params = {'w': jnp.array([[3.0], [4.0]])}
  state = tx.init(params)
  norms = []
  for _ in range(6):
    updates, state = tx.update({'w': jnp.array([[-4.0], [3.0]])}, state, params)
    params = optax.apply_updates(params, updates)
    norms.append(float(jnp.linalg.norm(params['w'])))
  np.testing.assert_allclose(np.array(norms)[[2, 5]], 5.0, rtol=1e-6)
  assert all(n > 5.01 for n in np.array(norms)[[0, 1, 3, 4]])


def test_zero_norm_unit_is_left_as_it_is():
  tx = optax_zoo.weight_rescaling(optax.sgd(1.0), target_norm=2.0)
  params = {'w': jnp.zeros((3, 2))}
  grads = {'w': jnp.array([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])}
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_array_equal(updates['w'][:, 0], 0.0)
  np.testing.assert_allclose(updates['w'][:, 1], [-2.0, 0.0, 0.0])


def test_nan_in_a_rescaled_leaf_is_not_hidden():
  tx = optax_zoo.weight_rescaling(optax.sgd(0.1))
  params = {'w': jnp.ones((3, 2))}
  grads = {'w': jnp.ones((3, 2)).at[0, 1].set(jnp.nan)}
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  assert np.all(np.isnan(updates['w'][:, 1]))
  assert np.all(np.isfinite(updates['w'][:, 0]))


def test_extra_args_reach_the_inner_optimizer():
  tx = optax_zoo.weight_rescaling(optax_zoo.koala_v(1.0, r=1.0))
  params = {'w': jnp.ones((3, 2))}
  updates, _ = tx.update(params, tx.init(params), params, value=1.0)
  np.testing.assert_allclose(
    jnp.linalg.norm(params['w'] + updates['w']), 6**0.5, rtol=1e-6
  )


@pytest.mark.parametrize(
  ('kwargs', 'match'),
  [
    ({'every_k': 1.5}, '`every_k`'),
    ({'target_norm': -1.0}, '`target_norm`'),
  ],
)
def test_bad_arguments_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optax_zoo.weight_rescaling(optax.sgd(0.1), **kwargs)
