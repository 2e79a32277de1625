"""Construction-time checks of the adaptive optimizers' dtypes and masks.

Parametrized over every public function of `optax_zoo.adaptive` by its
signature, so that a new method with a ``mu_dtype`` or a weight decay is
checked without a new line here.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from optax_zoo import adaptive

DTYPE_ARGS = ('mu_dtype', 'accumulator_dtype', 'dtype_momentum')
DECAY_ARGS = ('weight_decay', 'weight_decay_rate')
# KOALA needs the loss in every update.
KOALA = ('koala_m', 'koala_v', 'scale_by_koala_m', 'scale_by_koala_v')


def _functions():
  return [
    name
    for name in adaptive.__all__
    if inspect.isfunction(getattr(adaptive, name))
  ]


def _params_of(name):
  return inspect.signature(getattr(adaptive, name)).parameters


def _cases(arg_names):
  return [
    pytest.param(name, arg, id=f'{name}-{arg}')
    for name in _functions()
    for arg in arg_names
    if arg in _params_of(name)
  ]


# Their accumulator exists only with momentum.
_NEEDS = {'sgd': {'momentum': 0.9}, 'adafactor': {'momentum': 0.9}}


def _build(name, **kwargs):
  kwargs = {**_NEEDS.get(name, {}), **kwargs}
  if 'learning_rate' in _params_of(name) and 'learning_rate' not in kwargs:
    kwargs['learning_rate'] = 0.1
  return getattr(adaptive, name)(**kwargs)


@pytest.mark.parametrize(('name', 'arg'), _cases(DTYPE_ARGS))
@pytest.mark.parametrize('bad', [jnp.int32, jnp.bool_, 'float16x'])
def test_non_floating_moment_dtype_fails_at_construction(name, arg, bad):
  # Before: an integer dtype was accepted (integer momentum, every update
  # rounded) and a misspelt one failed only at `init`, with a TypeError.
  with pytest.raises(ValueError, match=f'`{arg}` must be a floating dtype'):
    _build(name, **{arg: bad})


@pytest.mark.parametrize(('name', 'arg'), _cases(DTYPE_ARGS))
@pytest.mark.parametrize('good', [jnp.bfloat16, 'bfloat16', np.float16])
def test_floating_moment_dtype_is_kept_in_the_state(name, arg, good):
  params = {'w': jnp.ones((3, 2)), 'b': jnp.ones(2)}
  state = _build(name, **{arg: good}).init(params)
  dtypes = {leaf.dtype for leaf in jax.tree.leaves(state)}
  assert jnp.dtype(good) in dtypes


def _run(tx, steps=3, **extra):
  params = {
    'on': jnp.array([[1.0, -2.0], [0.5, 3.0], [-1.5, 2.5]]),
    'off': jnp.array([2.0, -1.0, 0.5, -3.0]),
  }
  state = tx.init(params)
  update = jax.jit(tx.update)
  for t in range(steps):
    grads = jax.tree.map(lambda p, t=t: jnp.cos(p + t), params)
    updates, state = update(grads, state, params, **extra)
    params = optax.apply_updates(params, updates)
  return params


@pytest.mark.parametrize(('name', 'arg'), _cases(DECAY_ARGS))
def test_decay_mask_is_named_mask_and_spares_unmasked_leaves(name, arg):
  # Before: diffgrad, adapnm, pnm, arsg, generalized_signsgd and novograd
  # had decay without a mask, lars and adafactor called it
  # `weight_decay_mask`.
  assert 'mask' in _params_of(name)
  # KOALA needs the loss, and its leaves share one covariance, which the
  # decayed leaves move after the first step: compare that first step.
  koala = name in KOALA
  extra = {'value': 1.0, 'value_sq_mean': 1.0} if koala else {}
  steps = 1 if koala else 3
  mask = {'on': True, 'off': False}
  masked = _run(_build(name, **{arg: 0.5, 'mask': mask}), steps, **extra)
  plain = _run(_build(name, **{arg: 0.0}), steps, **extra)
  np.testing.assert_allclose(masked['off'], plain['off'], rtol=1e-6)
  assert not np.array_equal(masked['on'], plain['on'])


@pytest.mark.parametrize(
  'factory',
  [
    lambda **kw: optax_zoo.lars(0.1, weight_decay=0.5, **kw),
    lambda **kw: optax_zoo.scale_by_lars(weight_decay=0.5, **kw),
    lambda **kw: optax_zoo.adafactor(weight_decay_rate=0.5, **kw),
  ],
  ids=['lars', 'scale_by_lars', 'adafactor'],
)
def test_weight_decay_mask_is_a_deprecated_alias_of_mask(factory):
  mask = {'on': True, 'off': False}
  with pytest.warns(DeprecationWarning, match='`weight_decay_mask`'):
    old = _run(factory(weight_decay_mask=mask))
  new = _run(factory(mask=mask))
  jax.tree.map(np.testing.assert_array_equal, old, new)
  with (
    pytest.raises(ValueError, match='not also'),
    pytest.warns(DeprecationWarning),
  ):
    factory(mask=mask, weight_decay_mask=mask)
