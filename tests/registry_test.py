"""The registry's public face: create, get, methods and construction checks."""

import json
import pathlib

import jax.numpy as jnp
import optax
import pytest

import optax_zoo
from optax_zoo import registry

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_create_builds_a_working_transform():
  tx = optax_zoo.create('adam', learning_rate=1e-3)
  assert isinstance(tx, optax.GradientTransformation)
  params = jnp.ones(3)
  updates, _ = tx.update(jnp.ones(3), tx.init(params), params)
  assert jnp.allclose(updates, -1e-3)


def test_unknown_name_suggests_the_closest():
  with pytest.raises(ValueError, match=r"'adamm'.*Did you mean 'adam'"):
    optax_zoo.create('adamm')
  with pytest.raises(ValueError, match='registered method'):
    optax_zoo.get('zzzz')


@pytest.mark.parametrize(
  ('kwargs', 'match'),
  [
    ({'learning_rate': -1.0}, r'`learning_rate` must be non-negative.*-1\.0'),
    (
      {'learning_rate': 1e-3, 'b1': 1.5},
      r'`b1` must be in \[0\.0, 1\.0\).*1\.5',
    ),
    ({'learning_rate': float('nan')}, '`learning_rate` must be a number'),
    ({'learning_rate': 'fast'}, '`learning_rate` must be a number'),
    ({'learning_rate': lambda c: -0.1}, r'`learning_rate\(0\)`'),
  ],
)
def test_adam_rejects_bad_hyperparameters(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optax_zoo.adam(**kwargs)


def test_methods_filters_by_category():
  all_names = [m.name for m in optax_zoo.methods()]
  assert len(all_names) == len(set(all_names))
  for category in registry.CATEGORIES:
    for info in optax_zoo.methods(category):
      assert info.category == category
  assert {m.name for m in optax_zoo.methods('adaptive')} >= {'adam', 'sgd'}
  with pytest.raises(ValueError, match='`category`'):
    optax_zoo.methods('nonsense')


def test_method_info_is_frozen_and_validated():
  info = optax_zoo.get('adam')
  with pytest.raises(AttributeError):
    info.name = 'other'
  with pytest.raises(TypeError):
    info.invalid_kwargs[0]['b1'] = 0.5
  with pytest.raises(ValueError, match='`category`'):
    registry.MethodInfo(
      name='x',
      category='magic',
      factory=optax_zoo.adam,
      paper=info.paper,
      reference='-',
      state_copies=0,
      learning_rate=1.0,
    )


def test_build_puts_the_learning_rate_in_the_inner_optimizer_of_wrappers():
  tx = optax_zoo.get('lookahead').build(0.25)
  params = jnp.zeros(2)
  updates, _ = tx.update(jnp.array([1.0, -1.0]), tx.init(params), params)
  assert jnp.allclose(updates, jnp.array([-0.25, 0.25]))


def test_registered_learning_rate_is_the_grid_optimum():
  # experiments/lr_grid/run.py measures every method on a learning-rate grid;
  # the registry's default must be that grid's best point.
  path = ROOT / 'experiments' / 'results' / 'lr_grid.json'
  grid = json.loads(path.read_text())['accuracy']
  for info in optax_zoo.methods():
    if info.single_model_skip_reason():
      continue  # the grid cannot train it; its rate comes from its paper
    assert info.name in grid, (
      f'run python -m experiments.lr_grid.run --methods {info.name}'
    )
    accuracy = grid[info.name]
    best = max(accuracy, key=accuracy.get)
    assert info.learning_rate == float(best), (info.name, accuracy)
