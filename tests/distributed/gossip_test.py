"""D-PSGD gossip and the all-reduce baseline on workers simulated with
``jax.vmap(..., axis_name=...)`` on one device."""

import itertools
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import optax_zoo

AXIS = 'workers'
N, LR, STEPS = 8, 0.1, 5
_RNG = np.random.default_rng(0)
# Worker i's loss: the sum over leaves of 0.5 * s_i * ||x - c_i||^2.
SCALES = _RNG.uniform(0.5, 2.0, size=N)
CENTRES = {'w': _RNG.normal(size=(N, 2, 3)), 'b': _RNG.normal(size=(N, 3))}
X0 = {'w': _RNG.normal(size=(N, 2, 3)), 'b': _RNG.normal(size=(N, 3))}


def _grads(x):
  """Each worker's gradient at its own parameters (stacked, numpy; the
  first ``len(x)`` workers' losses)."""
  out = {}
  for k, v in x.items():
    n = len(v)
    s = SCALES[:n].reshape(-1, *[1] * (np.ndim(v) - 1))
    out[k] = s * (np.asarray(v) - CENTRES[k][:n])
  return out


def _random_w(n, seed=1):
  """A ring plus random permutations: doubly stochastic, connected, neither
  symmetric nor circulant."""
  rng = np.random.default_rng(seed)
  w = 0.3 * np.eye(n) + 0.2 * np.roll(np.eye(n), 1, axis=1)
  for a in rng.dirichlet(np.ones(3)) * 0.5:
    w += a * np.eye(n)[rng.permutation(n)]
  return w


TOPOLOGIES = {
  'ring': optax_zoo.ring(N),
  'torus': optax_zoo.torus(2, 4),
  'exponential': optax_zoo.exponential(N),
  'one_peer_exponential': optax_zoo.one_peer_exponential(N),
  'random_w': optax_zoo.from_mixing_matrix(_random_w(N)),
}


def _trajectory(tx, x0, steps, grads_fn=_grads):
  """The stacked parameters after each of ``steps`` steps of ``tx`` run
  per worker under vmap, and the final state."""

  def step(x, s, g):
    u, s = tx.update(g, s, x)
    return optax.apply_updates(x, u), s

  vstep = jax.jit(jax.vmap(step, axis_name=AXIS))
  x = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), x0)
  s = jax.vmap(tx.init, axis_name=AXIS)(x)
  out = []
  for _ in range(steps):
    g = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), grads_fn(x))
    x, s = vstep(x, s, g)
    out.append(jax.tree.map(np.asarray, x))
  return out, s


def _mix(w, x):
  return {k: np.einsum('ij,j...->i...', w, v) for k, v in x.items()}


@pytest.mark.parametrize('name', TOPOLOGIES)
def test_gossip_equals_w_x_minus_lr_g_step_for_step(name):
  topology = TOPOLOGIES[name]
  tx = optax_zoo.gossip(topology, AXIS, inner=optax.sgd(LR))
  got, state = _trajectory(tx, X0, STEPS)
  want = X0
  for t in range(STEPS):
    g = _grads(want)
    want = {
      k: v - LR * g[k] for k, v in _mix(topology.mixing_matrix(t), want).items()
    }
    for k in want:
      np.testing.assert_allclose(got[t][k], want[k], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(state.count, STEPS)


def test_gossip_last_in_a_chain_equals_gossip_with_inner():
  topology = optax_zoo.one_peer_exponential(N)
  inner = lambda: optax.sgd(LR, momentum=0.9)
  chained, _ = _trajectory(
    optax.chain(inner(), optax_zoo.gossip(topology, AXIS)), X0, 4
  )
  wrapped, _ = _trajectory(
    optax_zoo.gossip(topology, AXIS, inner=inner()), X0, 4
  )
  for a, b in zip(chained, wrapped, strict=True):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize(
  'make',
  [
    lambda inner: optax_zoo.gossip(optax_zoo.ring(1), AXIS, inner=inner),
    lambda inner: optax_zoo.all_reduce_mean(AXIS, inner=inner),
  ],
  ids=['gossip', 'all_reduce_mean'],
)
def test_one_worker_axis_is_exactly_the_inner_method(make):
  # Bitwise against the inner optimizer under the same vmap (XLA may fuse
  # a batched program differently, by an ulp, from an unbatched one).
  x0 = {k: v[:1] for k, v in X0.items()}
  got, _ = _trajectory(make(optax.adam(0.05)), x0, 4)
  want, _ = _trajectory(optax.adam(0.05), x0, 4)
  for a, b in zip(got, want, strict=True):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_all_reduce_mean_is_sgd_on_the_mean_gradient():
  tx = optax_zoo.all_reduce_mean(AXIS, inner=optax.sgd(LR))
  same = {k: np.broadcast_to(v[:1], v.shape) for k, v in X0.items()}
  got, _ = _trajectory(tx, same, STEPS)
  x = {k: v[0] for k, v in same.items()}
  for t in range(STEPS):
    g = _grads({k: np.broadcast_to(v, (N, *v.shape)) for k, v in x.items()})
    x = {k: x[k] - LR * g[k].mean(axis=0) for k in x}
    for k in x:
      for i in range(N):
        np.testing.assert_allclose(got[t][k][i], x[k], rtol=1e-5, atol=1e-6)


def test_consensus_distance_matches_numpy():
  want = sum(np.sum((v - v.mean(axis=0)) ** 2) / N for v in X0.values())
  x = jax.tree.map(jnp.asarray, X0)
  inside = jax.vmap(
    lambda p: optax_zoo.consensus_distance(p, AXIS), axis_name=AXIS
  )(x)
  np.testing.assert_allclose(inside, want, rtol=1e-5)
  np.testing.assert_allclose(optax_zoo.consensus_distance(x), want, rtol=1e-5)


@pytest.mark.parametrize('name', ['ring', 'torus'])
def test_consensus_shrinks_at_the_spectral_gap_rate(name):
  # Symmetric W: ||W X - X_bar|| <= (1 - gap) ||X - X_bar||, so without
  # gradients the consensus distance shrinks by (1 - gap)^2 per step at
  # least, and no faster than the slowest mode allows.
  topology = TOPOLOGIES[name]
  tx = optax_zoo.gossip(topology, AXIS)
  zero = lambda x: jax.tree.map(np.zeros_like, x)
  got, _ = _trajectory(tx, X0, 6, grads_fn=zero)
  d = [optax_zoo.consensus_distance(X0)]
  d += [optax_zoo.consensus_distance(x) for x in got]
  rate = (1 - topology.spectral_gap) ** 2
  for before, after in itertools.pairwise(d):
    assert after <= rate * before * (1 + 1e-4)
  assert d[-1] < d[0] * 0.9
  # The average model does not move: gossip only mixes.
  for k in X0:
    np.testing.assert_allclose(
      got[-1][k].mean(axis=0), X0[k].mean(axis=0), atol=1e-5
    )


def test_one_peer_exponential_averages_exactly_in_one_period():
  tx = optax_zoo.gossip(optax_zoo.one_peer_exponential(N), AXIS)
  zero = lambda x: jax.tree.map(np.zeros_like, x)
  got, _ = _trajectory(tx, X0, 3, grads_fn=zero)
  assert optax_zoo.consensus_distance(got[1]) > 1e-3
  assert optax_zoo.consensus_distance(got[2]) < 1e-10


def test_eval_params_is_the_average_model_inside_and_outside():
  tx = optax_zoo.gossip(optax_zoo.ring(N), AXIS, inner=optax.sgd(LR))
  got, state = _trajectory(tx, X0, 2)
  x = jax.tree.map(jnp.asarray, got[-1])
  mean = {k: v.mean(axis=0) for k, v in got[-1].items()}
  outside = optax_zoo.eval_params(state, x)
  inside = jax.vmap(optax_zoo.eval_params, axis_name=AXIS)(state, x)
  for evaluated in (outside, inside):
    for k in mean:
      assert evaluated[k].shape == x[k].shape
      for i in range(N):
        np.testing.assert_allclose(
          evaluated[k][i], mean[k], rtol=1e-6, atol=1e-6
        )
  # Through a chain too.
  chained = optax.chain(
    optax.sgd(LR), optax_zoo.gossip(optax_zoo.ring(N), AXIS)
  )
  _, cstate = _trajectory(chained, X0, 1)
  np.testing.assert_allclose(
    optax_zoo.eval_params(cstate, x)['b'], outside['b'], rtol=1e-6
  )


def test_bfloat16_params_keep_their_dtype():
  tx = optax_zoo.gossip(optax_zoo.ring(N), AXIS, inner=optax.sgd(LR))
  x = jax.tree.map(lambda v: jnp.asarray(v, jnp.bfloat16), X0)
  g = jax.tree.map(jnp.ones_like, x)
  u, _ = jax.vmap(lambda g, x: tx.update(g, tx.init(x), x), axis_name=AXIS)(
    g, x
  )
  assert all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves(u))


def test_unbound_axis_is_a_clear_error():
  x = {'b': jnp.zeros(3)}
  for tx in (
    optax_zoo.gossip(optax_zoo.ring(1), AXIS),
    optax_zoo.all_reduce_mean(AXIS),
  ):
    with pytest.raises(ValueError, match=r"axis_name.*'workers'.*not bound"):
      jax.jit(tx.update)(x, tx.init(x), x)
  with pytest.raises(ValueError, match=r'axis_name.*not bound'):
    jax.vmap(
      lambda p: optax_zoo.consensus_distance(p, 'other'), axis_name=AXIS
    )(x)


def test_topology_size_must_match_the_axis():
  tx = optax_zoo.gossip(optax_zoo.ring(4), AXIS)
  x = {'b': jnp.zeros((N, 3))}
  with pytest.raises(ValueError, match=r'num_workers.*\(4\).*axis_name.*\(8\)'):
    jax.vmap(lambda p: tx.update(p, tx.init(p), p), axis_name=AXIS)(x)


def test_bad_construction_raises():
  with pytest.raises(ValueError, match='topology'):
    optax_zoo.gossip(np.eye(2), AXIS)
  with pytest.raises(ValueError, match='axis_name'):
    optax_zoo.gossip(optax_zoo.ring(2), None)
  with pytest.raises(ValueError, match='inner'):
    optax_zoo.all_reduce_mean(AXIS, inner=optax.sgd)
  with pytest.raises(ValueError, match='params'):
    tx = optax_zoo.gossip(optax_zoo.ring(1), AXIS)
    jax.vmap(lambda g: tx.update(g, tx.init(g)), axis_name=AXIS)(
      jnp.zeros((1, 2))
    )


def test_eval_params_outside_the_map_checks_the_worker_axis():
  tx = optax_zoo.gossip(optax_zoo.ring(2), AXIS)
  state = jax.vmap(tx.init, axis_name=AXIS)(jnp.zeros((2, 3)))
  assert type(state).num_workers == 2
  assert type(pickle.loads(pickle.dumps(state))).num_workers == 2
  good = jnp.arange(6.0).reshape(2, 3)
  np.testing.assert_allclose(
    optax_zoo.eval_params(state, good), [[1.5, 2.5, 3.5]] * 2
  )
  for bad in (
    jnp.arange(9.0).reshape(3, 3),  # three rows for two workers
    jnp.float32(1.0),
    {'w': good, 'b': jnp.zeros(())},
  ):
    with pytest.raises(ValueError, match=r'`params`.*size 2'):
      optax_zoo.eval_params(state, bad)
    with pytest.raises(ValueError, match=r'`params`.*size 2'):
      optax_zoo.worker_mean(bad, num_workers=2)
  with pytest.raises(ValueError, match=r'`params`.*the same size'):
    optax_zoo.worker_mean({'a': jnp.zeros((2, 1)), 'b': jnp.zeros((3, 1))})
  with pytest.raises(ValueError, match=r'`params`.*the same size'):
    optax_zoo.consensus_distance({'a': jnp.zeros(2), 'b': jnp.zeros(())})
  # Inside the map the state's worker count is checked against the axis.
  other = jax.vmap(tx.init, axis_name=AXIS)(jnp.zeros((3, 3)))
  with pytest.raises(ValueError, match=r'axis_name.*size 3.*2 workers'):
    jax.vmap(optax_zoo.eval_params, axis_name=AXIS)(other, jnp.zeros((3, 3)))


@pytest.mark.parametrize(
  'axis_name', [0, 3, True, '', (), ('a', None), ('a', 1), ['workers'], {}]
)
def test_axis_names_jax_does_not_take_are_refused(axis_name):
  for make in (
    lambda: optax_zoo.gossip(optax_zoo.ring(2), axis_name),
    lambda: optax_zoo.all_reduce_mean(axis_name),
  ):
    with pytest.raises(ValueError, match='axis_name'):
      make()


def test_any_name_jax_takes_is_accepted():
  # A name that is not a string, and a tuple of axes reduced together.
  name = 7.5
  tx = optax_zoo.gossip(optax_zoo.ring(4), name, inner=optax.sgd(LR))
  x = jnp.array([0.0, 3.0, 6.0, 9.0])
  got = jax.vmap(
    lambda x: optax.apply_updates(x, tx.update(x * 0, tx.init(x), x)[0]),
    axis_name=name,
  )(x)
  np.testing.assert_allclose(got, optax_zoo.ring(4).mixing_matrix() @ x)
  tx = optax_zoo.all_reduce_mean(('a', 'b'))
  grads = jnp.arange(4.0).reshape(2, 2)
  mean = jax.vmap(
    jax.vmap(lambda g: tx.update(g, tx.init(g))[0], axis_name='b'),
    axis_name='a',
  )(grads)
  np.testing.assert_allclose(mean, np.full((2, 2), 1.5))


def test_worker_map_refuses_specs_it_cannot_strip():
  mesh = jax.make_mesh((1, 1), (AXIS, 'model'), axis_types=(AxisType.Auto,) * 2)
  for spec in (P(None, AXIS), P((AXIS, 'model')), P('model', AXIS)):
    with pytest.raises(ValueError, match=r'in_specs.*worker axis'):
      optax_zoo.worker_map(lambda p: p, mesh, spec, P(), axis_name=AXIS)
    with pytest.raises(ValueError, match=r'out_specs.*worker axis'):
      optax_zoo.worker_map(lambda p: p, mesh, P(), spec, axis_name=AXIS)
  # Led by the worker axis alone: stripped, whatever follows.
  seen = []
  out = jax.jit(
    optax_zoo.worker_map(
      lambda p: seen.append(p.shape) or p,
      mesh,
      axis_name=AXIS,
      in_specs=P(AXIS, None),
      out_specs=P((AXIS,), 'model'),
    )
  )(jnp.ones((1, 3)))
  assert seen == [(3,)] and out.shape == (1, 3)
