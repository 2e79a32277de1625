"""SWA, periodic SWA and Gadam: semantics, torch parity, composition."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optax_zoo
from optax_zoo._src import test_utils as tu
from tests.reference import parity


def _params():
  return {'w': jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), 'b': jnp.ones(3)}


def _grads(i):
  keys = jax.random.split(jax.random.key(i), 2)
  return {
    'w': jax.random.normal(keys[0], (2, 3)),
    'b': jax.random.normal(keys[1], (3,)),
  }


def _trajectory(tx, steps):
  """Parameters after each step and the final state."""
  params, state = _params(), tx.init(_params())
  update = jax.jit(tx.update)
  seen = []
  for i in range(steps):
    updates, state = update(_grads(i), state, params)
    params = optax.apply_updates(params, updates)
    seen.append(params)
  return seen, state


def test_swa_is_the_mean_of_the_scheduled_snapshots():
  tx = optax_zoo.swa(optax.sgd(0.05, momentum=0.9), start_step=4, every_k=3)
  seen, state = _trajectory(tx, 20)
  picked = [p for t, p in enumerate(seen, 1) if t >= 4 and (t - 4) % 3 == 0]
  assert int(state.n_models) == len(picked) == 6
  want = jax.tree.map(lambda *xs: np.mean(xs, axis=0), *picked)
  tu.assert_trees_close(
    optax_zoo.eval_params(state, seen[-1]), want, rtol=1e-6, atol=1e-7
  )
  # The inner optimizer's trajectory is untouched.
  plain, _ = _trajectory(optax.sgd(0.05, momentum=0.9), 20)
  tu.assert_trees_equal(plain[-1], seen[-1])


def test_swa_matches_torch_averaged_model():
  torch = pytest.importorskip('torch')
  from torch.optim.swa_utils import AveragedModel

  tx = optax_zoo.swa(optax.sgd(0.05, momentum=0.9), start_step=10, every_k=1)
  seen, state = _trajectory(tx, 120)
  net = torch.nn.ParameterDict(
    {k: torch.nn.Parameter(torch.zeros(v.shape)) for k, v in _params().items()}
  )
  averaged = AveragedModel(net)
  for p in seen[9:]:
    with torch.no_grad():
      for k in p:
        net[k].copy_(torch.from_numpy(np.array(p[k])))
    averaged.update_parameters(net)
  ours = optax_zoo.eval_params(state, seen[-1])
  for k in ours:
    ref = averaged.module[k].detach().numpy()
    np.testing.assert_allclose(ours[k], ref, rtol=1e-6, atol=1e-6)
  theirs = {k: averaged.module[k].detach().numpy() for k in ours}
  measured = parity.relative_deviation(ours, theirs)
  parity.assert_within_registered('swa', measured, 'torch AveragedModel')


def test_periodic_swa_restarts_from_the_period_average():
  inner = optax.sgd(0.05)
  tx = optax_zoo.periodic_swa(inner, start_step=2, period=4, every_k=2)
  seen, state = _trajectory(tx, 6)
  # First period: snapshots after steps 2, 4 and 6; step 6 ends the period.
  plain, _ = _trajectory(optax_zoo.swa(inner, start_step=2, every_k=2), 6)
  ref_mean = jax.tree.map(
    lambda *xs: np.mean(xs, axis=0), plain[1], plain[3], plain[5]
  )
  tu.assert_trees_close(seen[5], ref_mean, rtol=1e-6, atol=1e-7)
  assert int(state.n_models) == 0
  tu.assert_trees_equal(optax_zoo.eval_params(state, seen[5]), seen[5])


def test_gadam_is_adamw_with_averaging():
  tx = optax_zoo.gadam(1e-2, weight_decay=1e-3, start_step=3)
  ref = optax_zoo.swa(
    optax.adamw(1e-2, weight_decay=1e-3), start_step=3, every_k=1
  )
  (ours, s1), (want, s2) = _trajectory(tx, 10), _trajectory(ref, 10)
  tu.assert_trees_equal(ours[-1], want[-1])
  tu.assert_trees_equal(s1.mean, s2.mean)


def _padam_reference(grads, partial, b1=0.9, b2=0.999, eps=1e-8):
  """uclaml/Padam's update direction (step size lr = 1), in NumPy."""
  m = v = v_max = 0.0
  for t, g in enumerate(grads, 1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    v_max = np.maximum(v_max, v)
    step = np.sqrt(1 - b2**t) / (1 - b1**t)
    out = step * m / (np.sqrt(v_max) + eps) ** (2 * partial)
  return out


@pytest.mark.parametrize('partial', [0.0, 0.5])
def test_padam_matches_the_reference_at_the_ends(partial):
  # For 0 < p < 1/2 the reference folds the bias correction into the step
  # size (a documented deviation); at p = 1/2 (AMSGrad) both agree up to eps
  # and at p = 0 the reference keeps a sqrt(1 - b2^t) factor.
  grads = [np.asarray(_grads(i)['b']) for i in range(30)]
  tx = optax_zoo.scale_by_padam(partial=partial)
  state = tx.init(jnp.zeros(3))
  for g in grads:
    out, state = tx.update(jnp.asarray(g), state)
  want = _padam_reference(grads, partial)
  if partial == 0.0:
    want = want / np.sqrt(1 - 0.999**30)
  np.testing.assert_allclose(out, want, rtol=1e-5)


@pytest.mark.parametrize('make', ['chain', 'inject', 'nnx'])
def test_eval_params_finds_the_average_anywhere(make):
  def factory(learning_rate):
    return optax_zoo.swa(optax.sgd(learning_rate), start_step=0, every_k=1)

  if make == 'nnx':
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(
      model, optax.chain(optax.clip(1.0), factory(0.1)), wrt=nnx.Param
    )
    x = jnp.ones((4, 3))
    history = []
    for _ in range(2):
      opt.update(model, nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model))
      history.append(nnx.state(model, nnx.Param)['bias'][...])
    ev = optax_zoo.eval_params(opt.opt_state, nnx.state(model, nnx.Param))
    np.testing.assert_allclose(ev['bias'][...], np.mean(history, 0))
    return
  tx = (
    optax.chain(optax.clip_by_global_norm(10.0), factory(0.1))
    if make == 'chain'
    else optax.inject_hyperparams(factory)(learning_rate=0.1)
  )
  seen, state = _trajectory(tx, 3)
  want = jax.tree.map(lambda *xs: np.mean(xs, axis=0), *seen)
  tu.assert_trees_close(optax_zoo.eval_params(state, seen[-1]), want, rtol=1e-6)


def test_eval_params_is_params_before_the_first_snapshot():
  tx = optax_zoo.swa(optax.sgd(0.1), start_step=100)
  seen, state = _trajectory(tx, 3)
  tu.assert_trees_equal(optax_zoo.eval_params(state, seen[-1]), seen[-1])


@pytest.mark.parametrize(
  'bad',
  [
    {'start_step': -1},
    {'every_k': 0},
    {'every_k': 1.5},
  ],
)
def test_bad_averaging_arguments_raise(bad):
  kwargs = {'start_step': 0, **bad}
  name = next(iter(bad))
  for factory in (optax_zoo.swa, optax_zoo.swag):
    with pytest.raises(ValueError, match=name):
      factory(optax.sgd(0.1), **kwargs)
  with pytest.raises(ValueError, match=name):
    optax_zoo.gadam(1e-3, **kwargs)
