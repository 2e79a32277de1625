"""Replicated SGD: independent runs at coupling 0, collapse when strong."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from optax_zoo._src import test_utils as tu

_R, _M, _DIM = 4, 8, 3


def _loss_fn(params, batch):
  """Per-example squared errors of a linear model (one replica)."""
  x, y = batch
  return (x @ params['w'] + params['b'] - y) ** 2


def _data(steps, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(steps, _R * _M, _DIM)).astype(np.float32)
  y = x @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=(steps, _R * _M))
  return jnp.asarray(x), jnp.asarray(y.astype(np.float32))


def _init(seed=1):
  key_w, key_b = jax.random.split(jax.random.key(seed))
  return {
    'w': jax.random.normal(key_w, (_R, _DIM)),
    'b': jax.random.normal(key_b, (_R,)),
  }


def _run_replicated(tx, params, x, y):
  loss = optax_zoo.replicated_loss(_loss_fn, _R)

  @jax.jit
  def step(params, state, batch):
    grads = jax.grad(lambda p: loss(p, batch).mean())(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  for t in range(x.shape[0]):
    params, state = step(params, state, (x[t], y[t]))
  return params, state


def _spread(params):
  centre = optax_zoo.replica_mean(params)
  return max(
    float(jnp.max(jnp.abs(p - c)))
    for p, c in zip(
      jax.tree.leaves(params), jax.tree.leaves(centre), strict=True
    )
  )


# Elementwise (SGD, Adam) and not (a per-replica global-norm clip, which a
# transform on the stacked tree would compute over all replicas together).
# SGD agrees bit for bit. Adam and the clip divide by a per-replica scalar
# (bias correction, norm), which XLA computes as a product with its
# reciprocal in an unbatched program but divides elementwise under vmap:
# they agree to an ulp.
_INNERS = {
  'sgd': (lambda: optax.sgd(0.1, momentum=0.9, nesterov=True), 0.0),
  'adam': (lambda: optax.adam(3e-2), 1e-6),
  'clip_sgd': (
    lambda: optax.chain(
      optax.clip_by_global_norm(0.5), optax.sgd(0.1, momentum=0.9)
    ),
    1e-6,
  ),
}


@pytest.mark.parametrize('inner', sorted(_INNERS))
def test_coupling_zero_equals_independent_runs(inner):
  x, y = _data(6)
  params = _init()
  make, rtol = _INNERS[inner]
  tx = optax_zoo.replicated_sgd(make(), num_replicas=_R, coupling=0.0)
  one = make()

  @jax.jit
  def grads_of(params, batch):  # each replica on its own part of the batch
    parts = jax.tree.map(lambda a: a.reshape(_R, _M, *a.shape[1:]), batch)
    return jax.vmap(jax.grad(lambda p, b: _loss_fn(p, b).mean()))(params, parts)

  state = tx.init(params)
  runs = [jax.tree.map(lambda a, r=r: a[r], params) for r in range(_R)]
  states = [one.init(p) for p in runs]

  def stepper(tx):  # both sides jitted alike
    @jax.jit
    def step(grads, state, params):
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state

    return step

  step_all, step_one = stepper(tx), stepper(one)
  for t in range(6):
    per_replica = grads_of(params, (x[t], y[t]))
    # The loss averaged over replicas (R = 4: dividing is exact).
    mean_grads = jax.tree.map(lambda g: g / _R, per_replica)
    params, state = step_all(mean_grads, state, params)
    for r in range(_R):
      g_r = jax.tree.map(lambda g, r=r: g[r], per_replica)
      runs[r], states[r] = step_one(g_r, states[r], runs[r])
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *runs)
  if rtol:
    tu.assert_trees_close(params, stacked, rtol=rtol, atol=1e-7)
  else:
    tu.assert_trees_equal(params, stacked)  # bit for bit
  assert _spread(params) > 0.1  # they did not meet


def test_strong_coupling_collapses_the_replicas():
  # Each replica's own minibatch noise keeps uncoupled replicas apart; a
  # coupling with lr * coupling = 1 pulls each onto the centre every step,
  # leaving them within one (decaying) gradient step of it.
  x, y = _data(150)
  params = _init()
  spread0 = _spread(params)
  lr = optax.linear_schedule(1e-3, 0.0, 150)
  spreads = {}
  for coupling in (0.0, 1000.0):
    tx = optax_zoo.replicated_sgd(
      optax.sgd(lr), num_replicas=_R, coupling=coupling
    )
    final, _ = _run_replicated(tx, params, x, y)
    spreads[coupling] = _spread(final)
  assert spreads[0.0] > 0.5 * spread0, spreads
  assert spreads[1000.0] < 1e-3 * spread0, spreads


def test_growing_coupling_collapses_the_replicas():
  x, y = _data(100)
  params = _init()
  spreads = {}
  schedule = optax_zoo.exponential_coupling(
    10.0, steps_per_epoch=10, epochs=10, max_factor=100.0
  )
  for name, coupling in (('fixed', 10.0), ('growing', schedule)):
    tx = optax_zoo.replicated_sgd(
      optax.sgd(1e-3), num_replicas=_R, coupling=coupling
    )
    final, state = _run_replicated(tx, params, x, y)
    spreads[name] = _spread(final)
  assert int(state.count) == 100
  assert spreads['fixed'] > 0.1 * _spread(params), spreads
  assert spreads['growing'] < 1e-2 * spreads['fixed'], spreads


def test_step_matches_the_reference_loss():
  # sacreddnn: loss = mean over the concatenated batch + g * mean_a
  # ||x_a - c||^2 (c detached), trained with lr * y. Ours with coupling 2 g
  # and learning rate lr must take the same step.
  g, lr = 0.3, 0.05
  x, y = _data(1)
  params = _init()
  batch = (x[0], y[0])
  loss = optax_zoo.replicated_loss(_loss_fn, _R)

  def reference_loss(p):
    centre = jax.lax.stop_gradient(
      jax.tree.map(lambda a: a.mean(0, keepdims=True), p)
    )
    sq = sum(
      jnp.sum((a - c) ** 2, axis=tuple(range(1, a.ndim)))
      for a, c in zip(jax.tree.leaves(p), jax.tree.leaves(centre), strict=True)
    )
    return loss(p, batch).mean() + g * jnp.mean(sq)

  ref_grads = jax.grad(reference_loss)(params)
  expected = jax.tree.map(lambda gr: -(lr * _R) * gr, ref_grads)
  tx = optax_zoo.replicated_sgd(optax.sgd(lr), num_replicas=_R, coupling=2 * g)
  grads = jax.grad(lambda p: loss(p, batch).mean())(params)
  updates, _ = tx.update(grads, tx.init(params), params)
  tu.assert_trees_close(updates, expected, rtol=1e-5, atol=1e-7)
  # the coupling pulls each replica towards the centre
  centre = optax_zoo.replica_mean(params)
  pull, _ = optax_zoo.replicated_sgd(
    optax.sgd(lr), num_replicas=_R, coupling=1.0
  ).update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  for p, c, u in zip(
    *map(jax.tree.leaves, (params, centre, pull)), strict=True
  ):
    np.testing.assert_allclose(u, -lr * (p - c), rtol=1e-5, atol=1e-7)


def test_eval_params_is_the_centre():
  x, y = _data(5)
  tx = optax_zoo.replicated_sgd(
    optax.sgd(0.05, momentum=0.9), num_replicas=_R, coupling=0.5
  )
  final, state = _run_replicated(tx, _init(), x, y)
  evaluated = optax_zoo.eval_params(state, final)
  centre = optax_zoo.replica_mean(final)
  for e, c, p in zip(
    *map(jax.tree.leaves, (evaluated, centre, final)), strict=True
  ):
    assert e.shape == p.shape and e.dtype == p.dtype
    np.testing.assert_allclose(e, jnp.broadcast_to(c, p.shape), rtol=1e-6)
    np.testing.assert_allclose(c, np.mean(np.asarray(p), 0), rtol=1e-6)
  # through a chain too
  chained = optax.chain(optax.identity(), tx)
  s = chained.init(final)
  tu.assert_trees_equal(optax_zoo.eval_params(s, final), evaluated)


def test_replica_mean_averages_model_state():
  # BatchNorm buffers: float statistics averaged, an integer counter
  # rounded up (the reference's build_center_of_mass).
  state = {
    'mean': jnp.array([[0.0, 1.0], [1.0, 3.0]]),
    'var': jnp.array([[1.0, 1.0], [3.0, 5.0]], jnp.bfloat16),
    'count': jnp.array([3, 4], jnp.int32),
  }
  centre = optax_zoo.replica_mean(state)
  np.testing.assert_array_equal(centre['mean'], [0.5, 2.0])
  assert centre['var'].dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(centre['var'], np.float32), [2, 3])
  assert int(centre['count']) == 4 and centre['count'].dtype == jnp.int32


def test_replicated_loss_gives_each_replica_its_part():
  loss = optax_zoo.replicated_loss(lambda w, x: (w[0] * x) ** 2, 2)
  out = loss(jnp.array([[1.0], [2.0]]), jnp.array([1.0, 2.0, 3.0, 4.0]))
  np.testing.assert_array_equal(out, [1.0, 4.0, 36.0, 64.0])
  with pytest.raises(ValueError, match='num_replicas'):
    loss(jnp.array([[1.0], [2.0]]), jnp.ones(3))
  copies = optax_zoo.replicate({'w': jnp.arange(3.0)}, 3)
  np.testing.assert_array_equal(copies['w'], np.tile(np.arange(3.0), (3, 1)))


def test_exponential_coupling_matches_the_reference_recursion():
  g0, gmax, epochs, spe = 0.02, 1e4, 7, 5
  sched = optax_zoo.exponential_coupling(
    g0, steps_per_epoch=spe, epochs=epochs, max_factor=gmax
  )
  grate = gmax ** (1 / epochs) - 1  # sacreddnn: model.increase_g per epoch
  g = g0
  for epoch in range(epochs):
    for t in range(epoch * spe, (epoch + 1) * spe):
      np.testing.assert_allclose(float(sched(t)), g, rtol=1e-5)
    g *= 1 + grate
  np.testing.assert_allclose(float(sched(epochs * spe)), g0 * gmax, rtol=1e-5)


@pytest.mark.parametrize(
  'bad',
  [
    {'num_replicas': 1},
    {'num_replicas': 2.5},
    {'coupling': -0.1},
    {'coupling': lambda t: -1.0},
    {'inner': 'sgd'},
  ],
)
def test_bad_input_raises_naming_the_argument(bad):
  (name,) = bad
  kwargs = {'inner': optax.sgd(0.1), 'num_replicas': 2, 'coupling': 0.1}
  with pytest.raises(ValueError, match=name):
    optax_zoo.replicated_sgd(**{**kwargs, **bad})


def test_params_without_the_replica_axis_raise_at_init():
  tx = optax_zoo.replicated_sgd(optax.sgd(0.1), num_replicas=3, coupling=0.1)
  with pytest.raises(ValueError, match='replica axis'):
    tx.init({'w': jnp.zeros((3, 2)), 'b': jnp.zeros(2)})
  with pytest.raises(ValueError, match='replica axis'):
    tx.init({'w': jnp.zeros((3, 2)), 's': jnp.zeros(())})
  tx.init({'w': jnp.zeros((3, 2)), 'b': jnp.zeros(3)})
  with pytest.raises(ValueError, match='params'):
    tx.update(jnp.zeros(3), tx.init(jnp.zeros(3)))


@pytest.mark.parametrize('inner', ['sgd', 'adam'])
def test_axis_name_under_vmap_equals_the_leading_axis(inner):
  # One replica per member of a vmapped axis, each fed its own gradient,
  # against the stacked version fed the gradient of the mean loss.
  x, y = _data(4)
  make, rtol = _INNERS[inner]
  schedule = optax_zoo.exponential_coupling(
    0.5, steps_per_epoch=2, epochs=2, max_factor=4.0
  )
  stacked = optax_zoo.replicated_sgd(make(), num_replicas=_R, coupling=schedule)
  across = optax_zoo.replicated_sgd(
    make(), num_replicas=_R, coupling=schedule, axis_name='replicas'
  )
  grad_one = jax.grad(lambda p, b: _loss_fn(p, b).mean())

  def one_step(p, s, b):
    u, s = across.update(grad_one(p, b), s, p)
    p = optax.apply_updates(p, u)
    return p, s, optax_zoo.eval_params(s, p)

  step_across = jax.jit(jax.vmap(one_step, axis_name='replicas'))

  @jax.jit
  def step_stacked(p, s, b):
    per_replica = jax.vmap(grad_one)(p, b)
    # The loss averaged over replicas (R = 4: dividing is exact).
    u, s = stacked.update(jax.tree.map(lambda g: g / _R, per_replica), s, p)
    p = optax.apply_updates(p, u)
    return p, s, optax_zoo.eval_params(s, p)

  params_a = params_s = _init()
  state_a = jax.vmap(across.init)(params_a)
  state_s = stacked.init(params_s)
  assert type(state_a).axis_name == 'replicas'
  assert type(state_s) is optax_zoo.ReplicatedState
  for t in range(x.shape[0]):
    parts = jax.tree.map(
      lambda a: a.reshape(_R, _M, *a.shape[1:]), (x[t], y[t])
    )
    params_a, state_a, centre_a = step_across(params_a, state_a, parts)
    params_s, state_s, centre_s = step_stacked(params_s, state_s, parts)
    for got, want in ((params_a, params_s), (centre_a, centre_s)):
      if rtol:
        tu.assert_trees_close(got, want, rtol=rtol, atol=1e-7)
      else:
        tu.assert_trees_equal(got, want)
  np.testing.assert_array_equal(state_a.count, [x.shape[0]] * _R)
  assert _spread(params_a) > 0.01  # still apart: the coupling mattered
  # Outside the map, the stacked replicas' centre; replica_mean in it.
  tu.assert_trees_close(
    optax_zoo.eval_params(state_a, params_a), centre_s, rtol=1e-6
  )
  tu.assert_trees_close(
    jax.vmap(
      lambda p: optax_zoo.replica_mean(p, 'replicas'), axis_name='replicas'
    )(params_a),
    centre_s,
    rtol=1e-6,
  )


def test_axis_name_unbound_or_of_the_wrong_size_raises():
  tx = optax_zoo.replicated_sgd(
    optax.sgd(0.1), num_replicas=_R, coupling=0.1, axis_name='replicas'
  )
  params = {'w': jnp.zeros(_DIM), 'b': jnp.zeros(())}
  state = tx.init(params)  # one replica: no replica axis needed
  with pytest.raises(ValueError, match="'replicas' is not bound"):
    tx.update(params, state, params)
  with pytest.raises(ValueError, match="'replicas' is not bound"):
    optax_zoo.replica_mean(params, 'replicas')
  with pytest.raises(ValueError, match='num_replicas` is 4'):
    jax.vmap(
      lambda p, s: tx.update(p, s, p), axis_name='replicas', in_axes=(0, None)
    )(jax.tree.map(lambda a: jnp.stack([a] * 3), params), state)
  # eval_params outside the map needs the stacked replicas.
  with pytest.raises(ValueError, match='replica axis'):
    optax_zoo.eval_params(state, params)
  with pytest.raises(ValueError, match='axis_name'):
    optax_zoo.replicated_sgd(
      optax.sgd(0.1), num_replicas=2, coupling=0.1, axis_name=['r']
    )
