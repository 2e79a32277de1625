"""Gossip, all-reduce and the mesh helpers on a real 8-device CPU mesh.

One subprocess (the device count is fixed when JAX starts, and the rest of
the suite runs on one device) runs every check with `jax.shard_map` through
`optax_zoo.worker_map`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

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
  print('OK')
  """
)


def test_gossip_and_all_reduce_on_an_8_device_mesh():
  env = dict(os.environ)
  env['XLA_FLAGS'] = (
    env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
  )
  env['JAX_PLATFORMS'] = 'cpu'
  done = subprocess.run(
    [sys.executable, '-c', _SCRIPT],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert done.returncode == 0, done.stderr[-4000:]
  assert done.stdout.strip().endswith('OK'), done.stdout
