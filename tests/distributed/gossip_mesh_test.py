"""Gossip, all-reduce and the mesh helpers on a real 8-device CPU mesh.

One subprocess (the device count is fixed when JAX starts, and the rest of
the suite runs on one device) runs every check with `jax.shard_map` through
`optax_zoo.worker_map`.
"""

from __future__ import annotations

import textwrap

from optax_zoo._src import test_utils as tu

_SCRIPT = textwrap.dedent(
  """
  import jax, jax.numpy as jnp, numpy as np, optax
  from jax.sharding import PartitionSpec as P
  import optax_zoo

  N, LR, MOMENTUM, STEPS, AXIS = 8, 0.1, 0.9, 4, 'workers'
  assert jax.device_count() == N, jax.devices()
  rng = np.random.default_rng(0)
  scales = rng.uniform(0.5, 2.0, size=N)
  centres = {'w': rng.normal(size=(N, 2, 3)), 'b': rng.normal(size=(N, 3))}
  x0 = {'w': rng.normal(size=(N, 2, 3)), 'b': rng.normal(size=(N, 3))}

  def grads_np(x):
    return {k: scales.reshape(-1, *[1] * (v.ndim - 1)) * (v - centres[k])
            for k, v in x.items()}

  mesh = optax_zoo.worker_mesh(N, AXIS)
  stacked = P(AXIS)
  data = optax_zoo.shard_workers(
    {'scale': scales.astype(np.float32),
     'centre': jax.tree.map(lambda c: c.astype(np.float32), centres)}, mesh)

  def local_grad(x, d):
    return jax.tree.map(lambda v, c: d['scale'] * (v - c), x, d['centre'])

  # Gossip with momentum: the state has a replicated scalar count and a
  # per-worker trace, placed by init_on_workers.
  for topology in (optax_zoo.ring(N), optax_zoo.torus(2, 4),
                   optax_zoo.one_peer_exponential(N)):
    tx = optax_zoo.gossip(topology, AXIS,
                          inner=optax.sgd(LR, momentum=MOMENTUM))
    params = optax_zoo.shard_workers(
      jax.tree.map(lambda v: v.astype(np.float32), x0), mesh)
    state = optax_zoo.init_on_workers(tx, params, mesh)
    specs = optax_zoo.worker_specs(state, AXIS)
    assert state.count.sharding.spec == P(), state.count.sharding
    assert state.count.shape == ()
    trace = state.inner_state[0].trace
    assert trace['w'].shape == (N, 2, 3)
    assert trace['w'].sharding.spec == stacked, trace['w'].sharding
    assert len(trace['w'].addressable_shards) == N

    def step(x, s, d):
      u, s = tx.update(local_grad(x, d), s, x)
      x = optax.apply_updates(x, u)
      return x, s, optax_zoo.consensus_distance(x, AXIS)

    run = jax.jit(optax_zoo.worker_map(
      step, mesh, in_specs=(stacked, specs, stacked),
      out_specs=(stacked, specs, P())))
    want = {k: v.copy() for k, v in x0.items()}
    mom = {k: np.zeros_like(v) for k, v in x0.items()}
    for t in range(STEPS):
      params, state, distance = jax.block_until_ready(run(params, state, data))
      g = grads_np(want)
      mom = {k: MOMENTUM * mom[k] + g[k] for k in mom}
      w = topology.mixing_matrix(t)
      want = {k: np.einsum('ij,j...->i...', w, v) - LR * mom[k]
              for k, v in want.items()}
      got = optax_zoo.to_host(params)
      for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(
        distance, sum(np.sum((v - v.mean(0)) ** 2) / N for v in want.values()),
        rtol=1e-4)
    assert int(optax_zoo.to_host(state.count)) == STEPS
    assert state.count.sharding.spec == P()

    # The average model, inside the map (pmean) and outside (stacked).
    mean = jax.jit(optax_zoo.worker_map(
      optax_zoo.eval_params, mesh, in_specs=(specs, stacked),
      out_specs=stacked))(state, params)
    outside = optax_zoo.eval_params(state, params)
    for k in want:
      for e in (mean, outside):
        np.testing.assert_allclose(
          optax_zoo.to_host(e)[k], np.broadcast_to(want[k].mean(0),
                                                   want[k].shape),
          rtol=1e-5, atol=1e-6)

  # all_reduce_mean: replicated parameters, per-worker gradients, equal to
  # SGD on the mean gradient.
  tx = optax_zoo.all_reduce_mean(AXIS, inner=optax.sgd(LR))
  start = {k: v[0].astype(np.float32) for k, v in x0.items()}
  params = optax_zoo.replicate_on_mesh(start, mesh)

  def sync_step(x, d):
    u, _ = tx.update(local_grad(x, d), tx.init(x), x)
    return optax.apply_updates(x, u)

  run = jax.jit(optax_zoo.worker_map(
    sync_step, mesh, in_specs=(P(), stacked), out_specs=P()))
  want = {k: v[0].astype(np.float64) for k, v in x0.items()}
  for _ in range(STEPS):
    params = jax.block_until_ready(run(params, data))
    g = grads_np({k: np.broadcast_to(v, (N, *v.shape))
                  for k, v in want.items()})
    want = {k: want[k] - LR * g[k].mean(0) for k in want}
  got = optax_zoo.to_host(params)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
  assert params['b'].sharding.spec == P()

  # Errors: an axis the map does not bind, a topology of the wrong size.
  x = optax_zoo.shard_workers({'b': np.zeros((N, 3), np.float32)}, mesh)
  for tx, match in ((optax_zoo.gossip(optax_zoo.ring(N), 'other'),
                     "'other' is not bound"),
                    (optax_zoo.gossip(optax_zoo.ring(4), AXIS),
                     'num_workers` (4)')):
    f = jax.jit(optax_zoo.worker_map(
      lambda p: optax.apply_updates(p, tx.update(p, tx.init(p), p)[0]),
      mesh, in_specs=stacked, out_specs=stacked))
    try:
      f(x)
    except ValueError as e:
      assert match in str(e), str(e)
    else:
      raise AssertionError(f'no error for {match}')
  # Wire bytes read from the lowered step equal the docstring formulas:
  # gossip sends and receives messages_per_step copies of the parameters
  # per worker (one branch of the switch per step when time-varying);
  # all_reduce_mean's ring all-reduce 2 (n - 1) / n copies of the update.
  for dtype, code, itemsize in ((np.float32, 'f32', 4), (jnp.bfloat16,
                                                         'bf16', 2)):
    x = optax_zoo.shard_workers(
      jax.tree.map(lambda v: v.astype(dtype), x0), mesh)
    g = jax.tree.map(lambda v: v + 1, x)
    M = sum(v[0].size for v in x0.values()) * itemsize  # bytes per worker
    for topology in (optax_zoo.ring(N), optax_zoo.torus(2, 4),
                     optax_zoo.exponential(N),
                     optax_zoo.one_peer_exponential(N)):
      tx = optax_zoo.gossip(topology, AXIS, inner=optax.sgd(LR))
      state = optax_zoo.init_on_workers(tx, x, mesh)
      specs = optax_zoo.worker_specs(state, AXIS)

      def gossip_step(x, s, g):
        u, s = tx.update(g, s, x)
        return optax.apply_updates(x, u), s

      run = jax.jit(optax_zoo.worker_map(
        gossip_step, mesh, in_specs=(stacked, specs, stacked),
        out_specs=(stacked, specs)))
      w = optax_zoo.wire_bytes(run, x, state, g)
      copies = topology.messages_per_step
      assert copies == topology.degree, topology
      want = copies * M
      assert w.exact and w.num_devices == N, w
      assert {c.kind for c in w.collectives} == {'collective-permute'}, w
      assert {c.dtypes for c in w.collectives} == {(code,)}, w.collectives
      assert w.sent == (want,) * N, (topology, code, w.sent, want)
      assert w.received == (want,) * N, (topology, code, w.received)
      assert w.per_worker == want and w.busiest == 2 * want
      assert w.busiest == optax_zoo.busiest_node_bytes(
        'gossip', N, M, degree=topology.degree)
      if topology.time_varying:
        # One lax.switch branch per step of the period, each one copy.
        arms = {}
        for c in w.collectives:
          (branch,) = c.branches
          arms[branch] = arms.get(branch, 0) + c.sent[0]
        assert sorted(b for _, b in arms) == list(range(topology.period))
        assert set(arms.values()) == {M}, arms
      if code == 'bf16':
        # The bytes are those of a step that runs right in bfloat16 (the
        # float32 steps are checked above): W x - lr g.
        got = optax_zoo.to_host(run(x, state, g)[0])
        xs, gs = optax_zoo.to_host(x), optax_zoo.to_host(g)
        for k in x0:
          want_k = (np.einsum('ij,j...->i...', topology.mixing_matrix(),
                              xs[k].astype(np.float64))
                    - LR * gs[k].astype(np.float64))
          np.testing.assert_allclose(np.asarray(got[k], np.float64), want_k,
                                     rtol=2e-2, atol=1e-2)

    tx = optax_zoo.all_reduce_mean(AXIS, inner=optax.sgd(LR))
    replicated = optax_zoo.replicate_on_mesh(
      jax.tree.map(lambda v: v[0].astype(dtype), x0), mesh)

    def sync_step(x, g):
      return optax.apply_updates(x, tx.update(g, tx.init(x), x)[0])

    run = jax.jit(optax_zoo.worker_map(
      sync_step, mesh, in_specs=(P(), stacked), out_specs=P()))
    w = optax_zoo.wire_bytes(run, replicated, g)
    want = 2 * (N - 1) / N * M
    assert {c.kind for c in w.collectives} == {'all-reduce'}, w.collectives
    assert {c.dtypes for c in w.collectives} == {(code,)}, w.collectives
    assert w.sent == (want,) * N and w.received == (want,) * N, (code, w)
    assert w.busiest == optax_zoo.busiest_node_bytes('ring_allreduce', N, M)

  # worker_map strips every spec led by the worker axis alone, P(AXIS,
  # None) included; a block of more than one row is an error.
  x = optax_zoo.shard_workers({'b': np.arange(N * 3.0).reshape(N, 3)}, mesh)
  shapes = []
  out = jax.jit(optax_zoo.worker_map(
    lambda p: shapes.append(p['b'].shape) or p, mesh,
    in_specs=P(AXIS, None), out_specs=P(AXIS, None)))(x)
  assert shapes == [(3,)], shapes
  np.testing.assert_array_equal(optax_zoo.to_host(out)['b'],
                                optax_zoo.to_host(x)['b'])
  try:
    jax.jit(optax_zoo.worker_map(lambda p: p, mesh, in_specs=stacked,
                                 out_specs=stacked))(jnp.zeros((2 * N, 3)))
  except ValueError as e:
    assert 'leading worker axis' in str(e), str(e)
  else:
    raise AssertionError('no error for a block of two rows')

  # A tuple of mesh axes is one worker axis: ring gossip over a 2 x 4 mesh.
  mesh2 = jax.make_mesh((2, 4), ('a', 'b'),
                        axis_types=(jax.sharding.AxisType.Auto,) * 2)
  tx = optax_zoo.gossip(optax_zoo.ring(N), ('a', 'b'))
  xs = np.arange(N * 3.0, dtype=np.float32).reshape(N, 3) ** 2
  step = jax.jit(jax.shard_map(
    lambda p: p + tx.update(jnp.zeros_like(p), tx.init(p), p)[0],
    mesh=mesh2, in_specs=P(('a', 'b')), out_specs=P(('a', 'b'))))
  np.testing.assert_allclose(
    np.asarray(step(xs)), optax_zoo.ring(N).mixing_matrix() @ xs, rtol=1e-5)
  print('OK')
  """
)


def test_gossip_and_all_reduce_on_an_8_device_mesh():
  tu.run_on_cpu_devices(_SCRIPT)
