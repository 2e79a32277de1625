"""D-KFAC and DP-KFAC against single-device K-FAC (workers by jax.vmap).

The 8-device ``jax.shard_map`` checks and the bytes on the wire are in
kfac_mesh_test.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import optax_zoo

W = 4  # workers


class _Net(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(2, 3, (3,), padding='SAME', rngs=rngs)
    self.hidden = nnx.Linear(15, 8, rngs=rngs)
    self.out = nnx.Linear(8, 4, rngs=rngs)

  def __call__(self, x):
    h = jnp.tanh(self.conv(x)).reshape(x.shape[0], -1)
    return self.out(jnp.tanh(self.hidden(h)))


def _ce(model, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@functools.cache
def _setup():
  model = _Net(nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  xs = jax.random.normal(jax.random.key(1), (3, W * 6, 5, 2))  # 3 steps
  ys = jax.random.randint(jax.random.key(2), (3, W * 6), 0, 4)
  return graphdef, params, rest, xs, ys


def _grads_stats(params, x, y):
  graphdef, _, rest, _, _ = _setup()
  _, g, _, stats = optax_zoo.kfac_layer_stats(graphdef, params, rest, _ce, x, y)
  return g, stats


def _steps(tx, params, xs, ys):
  """K-FAC steps on the batches ``xs``, ``ys`` (a scan: one step body to
  compile, not one per step)."""

  def step(carry, batch):
    p, state = carry
    g, stats = _grads_stats(p, *batch)
    u, state = tx.update(g, state, p, kfac_stats=stats)
    return (optax.apply_updates(p, u), state), None

  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), (xs, ys))
  return params


def _single_run(tx, steps, params):
  _, _, _, xs, ys = _setup()
  return _steps(tx, params, xs[:steps], ys[:steps])


def _single(tx, steps):
  return jax.jit(functools.partial(_single_run, tx, steps))(_setup()[1])


def _workers(tx, steps, same_data=False):
  _, params, _, xs, ys = _setup()

  def run(x_local, y_local):
    return _steps(tx, params, x_local[:steps], y_local[:steps])

  split = lambda a: a.reshape(a.shape[0], W, -1, *a.shape[2:]).swapaxes(0, 1)
  if same_data:
    x = jnp.broadcast_to(xs[:, None], (3, W, *xs.shape[1:])).swapaxes(0, 1)
    y = jnp.broadcast_to(ys[:, None], (3, W, ys.shape[1])).swapaxes(0, 1)
  else:
    x, y = split(xs), split(ys)
  out = jax.jit(jax.vmap(run, axis_name='w'))(x, y)
  for leaf in jax.tree.leaves(out):  # every worker applies the same update
    np.testing.assert_allclose(leaf, leaf[:1].repeat(W, 0), atol=1e-6)
  return jax.tree.map(lambda a: a[0], out)


def _close(a, b, tol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


_KW = {'damping': 1e-2, 'inverse_every': 2, 'kl_clip': 1e-2}


@pytest.mark.parametrize('inverse', ['pi', 'eigen'])
def test_dkfac_equals_single_device_kfac_on_the_concatenated_batch(inverse):
  kw = dict(_KW, inverse=inverse)
  want = _single(optax_zoo.kfac(0.5, **kw), 3)
  got = _workers(optax_zoo.dkfac(0.5, 'w', **kw), 3)
  _close(got, want, 2e-5)


def test_dp_kfac_equals_kfac_with_the_same_data_and_differs_without():
  params = _setup()[1]
  single = functools.partial(optax_zoo.kfac, 0.5, **_KW)
  # Same data on every worker: single-device K-FAC on one worker's batch.
  want = _single(single(), 3)
  same = _workers(optax_zoo.dp_kfac(0.5, 'w', **_KW), 3, same_data=True)
  _close(same, want, 2e-5)
  # Different data: factors from one worker's quarter of the batch.
  dkfac = _workers(optax_zoo.dkfac(0.5, 'w', **_KW), 3)
  dp = _workers(optax_zoo.dp_kfac(0.5, 'w', **_KW), 3)
  flat = lambda t: np.concatenate(
    [
      np.ravel(x - y)
      for x, y in zip(jax.tree.leaves(t), jax.tree.leaves(params), strict=True)
    ]
  )
  u, v = flat(dkfac), flat(dp)
  # It is not D-KFAC: with 6 examples a worker, its factors (d_A up to 16)
  # are rank-deficient and damping-dominated, so the steps differ by about
  # their own size, yet point the same way (cosine 0.71 measured).
  assert np.linalg.norm(u - v) > 0.1 * np.linalg.norm(u)
  assert u @ v / (np.linalg.norm(u) * np.linalg.norm(v)) > 0.5


@pytest.mark.parametrize('inverse', ['pi', 'eigen'])
def test_one_worker_axis_is_scale_by_kfac(inverse):
  kw = dict(_KW, inverse=inverse)
  want = _single(optax_zoo.scale_by_kfac(learning_rate=0.5, **kw), 3)
  mesh = jax.make_mesh((1,), ('w',), axis_types=(AxisType.Auto,))
  for scale in (optax_zoo.scale_by_dkfac, optax_zoo.scale_by_dp_kfac):
    tx = scale('w', learning_rate=0.5, **kw)
    # The same math; XLA compiles the two programs' fusions differently,
    # so they agree to float32 roundoff (about 1 ulp measured), not bits.
    got = jax.shard_map(
      functools.partial(_single_run, tx, 3),
      mesh=mesh,
      in_specs=P(),
      out_specs=P(),
      check_vma=False,
    )
    _close(jax.jit(got)(_setup()[1]), want, 1e-6)


def test_assignment_is_balanced_and_covers_every_layer_once():
  params = {
    f'l{i}': {'kernel': jnp.zeros((d, 16)), 'bias': jnp.zeros(16)}
    for i, d in enumerate([256, 200, 150, 120, 64, 32, 16, 8])
  }
  for workers in (1, 2, 3, 8):
    a = optax_zoo.kfac_assignment(params, workers, rows=512)
    assert sorted(a) == sorted(params)
    assert set(a.values()) <= set(range(workers))
    layers = optax_zoo.kfac_layers(params)
    cost = lambda n, layers=layers: (
      512 * sum(d * d for d in layers[n].dims)
      + sum(d**3 for d in layers[n].dims) / 10
    )
    loads = [sum(cost(n) for n in a if a[n] == w) for w in range(workers)]
    total = sum(cost(n) for n in a)
    biggest = max(cost(n) for n in a)
    # LPT: within 4/3 of the optimum, itself >= max(mean load, biggest).
    assert max(loads) <= 4 / 3 * max(total / workers, biggest) + 1e-6


def test_dp_kfac_state_holds_only_the_owned_layers():
  _, params, _, xs, ys = _setup()
  layers = optax_zoo.kfac_layers(params)
  assignment = {'conv': 0, 'hidden': 1, 'out': 1}
  tx = optax_zoo.scale_by_dp_kfac('w', assignment=assignment, damping=1e-2)
  state = jax.vmap(tx.init, axis_name='w', axis_size=2)(
    jax.tree.map(lambda a: jnp.stack([a, a]), params)
  )
  sq = lambda n: sum(d * d for d in layers[n].dims)
  # Worker 1's share (hidden, out) is the larger; worker 0's is padded.
  share = max(sq('conv'), sq('hidden') + sq('out'))
  assert state.factors.shape == state.inverses.shape == (2, share)
  full = sum(
    x.size
    for x in jax.tree.leaves(
      optax_zoo.scale_by_dkfac('w').init(params)[1:]  # factors, inverses
    )
  )
  assert 2 * share < full
  costs = optax_zoo.kfac_worker_costs(
    params, 'dp_kfac', 2, rows=6, assignment=assignment
  )
  assert costs.factor_floats == (2 * share, 2 * share)
  d_costs = optax_zoo.kfac_worker_costs(params, 'dkfac', 2, rows=6)
  assert d_costs.factor_floats == (full, full)
  assert sum(costs.build_flops) == d_costs.build_flops[0]
  assert costs.build_flops[0] == 2 * 6 * sq('conv')

  # The owned layers' slots hold their factors after a step; the padding
  # of worker 0 stays zero.
  def step(x, y):
    g, stats = _grads_stats(params, x, y)
    return tx.update(g, tx.init(params), params, kfac_stats=stats)[1]

  split = lambda a: a.reshape(2, -1, *a.shape[1:])
  new = jax.jit(jax.vmap(step, axis_name='w'))(split(xs[0]), split(ys[0]))
  assert np.all(new.factors[0, sq('conv') :] == 0)
  assert np.count_nonzero(new.factors[0, : sq('conv')]) > 0
  assert np.count_nonzero(new.factors[1]) > 0


def test_bad_input_raises():
  with pytest.raises(ValueError, match='`axis_name`'):
    optax_zoo.scale_by_dkfac(None)
  with pytest.raises(ValueError, match='`damping`'):
    optax_zoo.scale_by_dp_kfac('w', damping=0.0)
  with pytest.raises(ValueError, match='`num_workers`'):
    optax_zoo.kfac_assignment({}, 0)
  with pytest.raises(ValueError, match='`rows`'):
    optax_zoo.kfac_assignment({}, 2, rows=0)
  with pytest.raises(ValueError, match="`assignment\\['a'\\]`"):
    optax_zoo.scale_by_dp_kfac('w', assignment={'a': -1})
  _, params, _, xs, ys = _setup()
  g, stats = jax.jit(_grads_stats)(params, xs[0], ys[0])
  tx = optax_zoo.scale_by_dkfac('w')
  with pytest.raises(ValueError, match='not bound'):
    tx.update(g, tx.init(params), params, kfac_stats=stats)
  with pytest.raises(ValueError, match='not bound'):
    optax_zoo.scale_by_dp_kfac('w').init(params)
  add = lambda t: jax.tree.map(lambda a: a[None], t)
  for assignment, match in (
    ({'conv': 0, 'hidden': 0}, 'missing'),
    ({'conv': 0, 'hidden': 0, 'out': 0, 'x': 0}, 'unknown'),
    ({'conv': 0, 'hidden': 0, 'out': 3}, 'outside the axis'),
  ):
    tx = optax_zoo.scale_by_dp_kfac('w', assignment=assignment)
    with pytest.raises(ValueError, match=match):
      jax.vmap(
        lambda g, s, tx=tx: tx.update(g, tx.init(params), params, kfac_stats=s),
        axis_name='w',
      )(add(g), add(stats))
  # A state built for another axis size does not fit the layout.
  tx = optax_zoo.scale_by_dp_kfac('w')
  state = jax.vmap(tx.init, axis_name='w', axis_size=2)(
    jax.tree.map(lambda a: jnp.stack([a, a]), params)
  )
  with pytest.raises(ValueError, match='does not match the assignment'):
    jax.vmap(
      lambda g, s, st: tx.update(g, st, params, kfac_stats=s), axis_name='w'
    )(add(g), add(stats), add(jax.tree.map(lambda a: a[0], state)))
