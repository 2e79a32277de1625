"""`eval_params` of every averaging method inside every optax combinator.

Each method trains the part ``'a'`` of a two-part tree inside a combinator;
its evaluated weights must equal those of the same method trained alone on
the same gradients, and the result must be a complete tree (the given
params wherever nothing averages).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from optax_zoo._src import test_utils as tu

# Methods that need a worker axis (fedavg) run here only unmapped, which
# they refuse; their own tests run them under jax.vmap and on 8 devices
# (with inject_hyperparams; the other combinators are not covered there).
AVERAGING = [
  m.name
  for m in optax_zoo.methods()
  if m.has_eval_params and not m.needs_axis_name
]
STEPS = 20  # no lookahead sync or periodic-SWA restart on the last step
NAN_STEP = 7
LABELS = {'a': 'avg', 'b': 'other'}


def _params(name=None):
  """The test's parameters; for a method with replicated parameters
  (`MethodInfo.replicas`) that many distinct copies on a leading axis."""
  params = {'a': jnp.linspace(-1.0, 1.0, 3), 'b': jnp.array([0.5, -0.5])}
  replicas = optax_zoo.get(name).replicas if name else 0
  if not replicas:
    return params
  scales = 1.0 + jnp.arange(replicas) / 2
  return jax.tree.map(lambda x: scales[:, None] * x, params)


def _grads(params, i):
  """Gradients of |p - 2|^2 / 2 plus noise, per part (each part its own)."""
  key = jax.random.key(i)
  noise = lambda k, v: jax.random.normal(
    jax.random.fold_in(key, ord(k)), v.shape
  )
  return {k: v - 2.0 + 0.3 * noise(k, v) for k, v in params.items()}


def _train(tx, params, nan_step=None):
  state, update = tx.init(params), jax.jit(tx.update)
  for i in range(STEPS):
    grads = _grads(params, i)
    if i == nan_step:
      grads = jax.tree.map(lambda g: g * jnp.nan, grads)
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def _reference(method, params, *, every=1, skip=None):
  """``method`` alone on ``params`` with what the combinator passes on."""
  state, update = method.init(params), jax.jit(method.update)
  acc = []
  for i in range(STEPS):
    if i == skip:
      continue
    acc.append(_grads(params, i))
    if len(acc) < every:
      continue
    grads = jax.tree.map(lambda *g: sum(g) / len(g), *acc)
    acc = []
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return optax_zoo.eval_params(state, params), params


def _injected(name):
  info = optax_zoo.get(name)
  factory = lambda learning_rate: info.build(learning_rate)
  return optax.inject_hyperparams(factory)(learning_rate=info.learning_rate)


def _combinators(name):
  """name -> (transform over the whole tree, reference options, partition)."""
  build = lambda: optax_zoo.get(name).build()
  mixed = lambda m: optax.multi_transform(
    {'avg': m, 'other': optax_zoo.adam(1e-2)}, LABELS
  )
  return {
    'chain': (optax.chain(optax.clip_by_global_norm(1e6), build()), {}, False),
    'inject_hyperparams': (_injected(name), {}, False),
    'multi_steps': (optax.MultiSteps(build(), every_k_schedule=2), {}, False),
    'apply_if_finite': (
      optax.apply_if_finite(build(), max_consecutive_errors=3),
      {'skip': NAN_STEP},
      False,
    ),
    'multi_transform': (mixed(build()), {}, True),
    'masked': (optax.masked(build(), {'a': True, 'b': False}), {}, True),
    'nested': (
      optax.apply_if_finite(
        optax.MultiSteps(
          optax.chain(optax.clip(1e6), mixed(_injected(name))),
          every_k_schedule=1,
        ),
        max_consecutive_errors=3,
      ),
      {'skip': NAN_STEP},
      True,
    ),
  }


COMBINATORS = list(_combinators('swa'))


@pytest.mark.parametrize('combinator', COMBINATORS)
@pytest.mark.parametrize('name', AVERAGING)
def test_eval_params_through_combinator(name, combinator):
  tx, options, partition = _combinators(name)[combinator]
  skip = options.get('skip')
  every = 2 if combinator == 'multi_steps' else 1
  params, state = _train(tx, _params(name), nan_step=skip)
  got = optax_zoo.eval_params(state, params)

  assert jax.tree.structure(got) == jax.tree.structure(params)
  dtype = lambda x: x.dtype
  assert jax.tree.map(dtype, got) == jax.tree.map(dtype, params)
  method = optax_zoo.get(name).build()
  if partition:
    want, trained = _reference(method, {'a': _params(name)['a']}, skip=skip)
    # The part no branch averages comes back as trained.
    tu.assert_trees_equal(got['b'], params['b'])
  else:
    want, trained = _reference(method, _params(name), every=every, skip=skip)
    tu.assert_trees_close(got['b'], want['b'], rtol=1e-5, atol=1e-6)
  tu.assert_trees_close(trained['a'], params['a'], rtol=1e-5, atol=1e-6)
  tu.assert_trees_close(got['a'], want['a'], rtol=1e-5, atol=1e-6)
  # The averaged weights are not the trained ones: the test has power.
  assert not np.allclose(got['a'], params['a'], rtol=1e-3)
  if combinator == 'nested':
    tu.assert_trees_close(
      jax.jit(optax_zoo.eval_params)(state, params), got, rtol=1e-6
    )


@pytest.mark.parametrize('name', ['swa', 'lookahead'])
def test_issue_case_multi_transform_gives_a_complete_tree(name):
  # Before: SWA raised `zip() argument 2 is longer than argument 1` and
  # lookahead returned MaskedNode() for 'b'.
  params = {'a': jnp.ones(3), 'b': jnp.ones(2)}
  method = (
    optax_zoo.swa(optax.sgd(0.1), start_step=0)
    if name == 'swa'
    else optax_zoo.lookahead(optax.sgd(0.1))
  )
  tx = optax.multi_transform(
    {'x': method, 'y': optax_zoo.adam(1e-2)}, {'a': 'x', 'b': 'y'}
  )
  s = tx.init(params)
  u, s = tx.update(params, s, params)
  new = optax.apply_updates(params, u)
  got = optax_zoo.eval_params(s, new)
  tu.assert_trees_equal(got['b'], new['b'])
  # SWA: the one snapshot is the trained 'a'; lookahead: the slow weights.
  want_a = new['a'] if name == 'swa' else params['a']
  tu.assert_trees_equal(got['a'], want_a)


def test_two_averaging_branches_each_average_their_part():
  params = _params()
  tx = optax.multi_transform(
    {
      'avg': optax_zoo.swa(optax.sgd(0.1), start_step=0),
      'other': optax_zoo.lookahead(optax.sgd(0.1), sync_period=7),
    },
    LABELS,
  )
  params, state = _train(tx, params)
  got = optax_zoo.eval_params(state, params)
  swa_a, _ = _reference(
    optax_zoo.swa(optax.sgd(0.1), start_step=0), {'a': _params()['a']}
  )
  look_b, _ = _reference(
    optax_zoo.lookahead(optax.sgd(0.1), sync_period=7), {'b': _params()['b']}
  )
  tu.assert_trees_close(got['a'], swa_a['a'], rtol=1e-6)
  tu.assert_trees_close(got['b'], look_b['b'], rtol=1e-6)


def test_wrong_params_structure_names_what_to_pass():
  tx = optax_zoo.swa(optax.sgd(0.1), start_step=0)
  state = tx.init(_params())
  with pytest.raises(ValueError, match='structure'):
    optax_zoo.eval_params(state, {'a': jnp.ones(3)})
  with pytest.raises(ValueError, match='shape'):
    optax_zoo.eval_params(state, {'a': jnp.ones(4), 'b': jnp.ones(2)})
