"""Replicated SGD with one replica per device on a real 8-device CPU mesh.

One subprocess (the device count is fixed when JAX starts, and the rest of
the suite runs on one device) trains 8 replicas under `jax.shard_map`
(through `optax_zoo.worker_map`) and their stacked single-device twin side
by side, and reads the step's wire bytes from its lowered program.
"""

from __future__ import annotations

import textwrap

from optax_zoo._src import test_utils as tu

_SCRIPT = textwrap.dedent(
  """
  import jax, jax.numpy as jnp, numpy as np, optax
  from jax.sharding import PartitionSpec as P
  import optax_zoo

  R, M, DIM, STEPS, AXIS = 8, 4, 3, 4, 'replicas'
  assert jax.device_count() == R, jax.devices()
  rng = np.random.default_rng(0)
  x = rng.normal(size=(STEPS, R * M, DIM)).astype(np.float32)
  y = (x @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=(STEPS, R * M))
       ).astype(np.float32)
  # No scalar leaf per replica: worker_specs keeps scalars replicated.
  start = {'w': rng.normal(size=(R, DIM, 2)).astype(np.float32),
           'b': rng.normal(size=(R, 2)).astype(np.float32)}

  def loss_fn(p, batch):  # one replica's per-example losses
    bx, by = batch
    return (bx @ p['w'] + p['b'] - by[:, None]) ** 2

  mesh = optax_zoo.worker_mesh(R, AXIS)
  stacked = P(AXIS)
  coupling = optax_zoo.exponential_coupling(
    0.5, steps_per_epoch=2, epochs=2, max_factor=4.0)
  loss = optax_zoo.replicated_loss(loss_fn, R)
  for name, make in (
      ('nesterov', lambda: optax.sgd(0.05, momentum=0.9, nesterov=True)),
      ('adam', lambda: optax.adam(1e-2))):
    across = optax_zoo.replicated_sgd(
      make(), num_replicas=R, coupling=coupling, axis_name=AXIS)
    twin = optax_zoo.replicated_sgd(make(), num_replicas=R, coupling=coupling)

    params = optax_zoo.shard_workers(start, mesh)
    state = optax_zoo.init_on_workers(across, params, mesh)
    specs = optax_zoo.worker_specs(state, AXIS)
    assert state.count.sharding.spec == P()
    assert params['w'].sharding.spec == stacked
    assert len(params['w'].addressable_shards) == R

    def step(p, s, batch):
      g = jax.grad(lambda q: loss_fn(q, batch).mean())(p)
      u, s = across.update(g, s, p)
      p = optax.apply_updates(p, u)
      return p, s, optax_zoo.eval_params(s, p)

    run = jax.jit(optax_zoo.worker_map(
      step, mesh, in_specs=(stacked, specs, stacked),
      out_specs=(stacked, specs, stacked)))

    @jax.jit
    def twin_step(p, s, batch):
      g = jax.grad(lambda q: loss(q, batch).mean())(p)
      u, s = twin.update(g, s, p)
      p = optax.apply_updates(p, u)
      return p, s, optax_zoo.eval_params(s, p)

    tp, ts = start, twin.init(start)
    for t in range(STEPS):
      batch = (x[t].reshape(R, M, DIM), y[t].reshape(R, M))
      params, state, centre = jax.block_until_ready(
        run(params, state, optax_zoo.shard_workers(batch, mesh)))
      tp, ts, tcentre = twin_step(tp, ts, (x[t], y[t]))
      got, got_c = optax_zoo.to_host(params), optax_zoo.to_host(centre)
      for k in start:
        np.testing.assert_allclose(got[k], tp[k], rtol=1e-5, atol=1e-6,
                                   err_msg=f'{name} step {t} {k}')
        np.testing.assert_allclose(got_c[k], tcentre[k], rtol=1e-5,
                                   atol=1e-6, err_msg=f'{name} centre {t}')
        # eval_params is the centre, the same on every device
        np.testing.assert_allclose(
          got_c[k], np.broadcast_to(got[k].mean(0), got[k].shape),
          rtol=1e-5, atol=1e-6)
    assert int(optax_zoo.to_host(state.count)) == STEPS
    assert state.count.sharding.spec == P()
    spread = max(np.abs(got[k] - got[k].mean(0)).max() for k in got)
    assert spread > 1e-2, spread  # the replicas stay apart: a real test
    # Outside the map, on the stacked global replicas: the centre too.
    outside = optax_zoo.to_host(optax_zoo.eval_params(state, params))
    for k in start:
      np.testing.assert_allclose(outside[k], tcentre[k], rtol=1e-5,
                                 atol=1e-6)

  # What crosses the wire: one all-reduce of a float32 copy of the
  # parameters per step (bfloat16 parameters widened), as the docstring
  # says: 2 (R - 1) / R of it per device, ring all-reduce.
  for dtype in (np.float32, jnp.bfloat16):
    tx = optax_zoo.replicated_sgd(optax.sgd(0.1), num_replicas=R,
                                  coupling=0.5, axis_name=AXIS)
    p = optax_zoo.shard_workers(jax.tree.map(lambda v: v.astype(dtype),
                                             start), mesh)
    s = optax_zoo.init_on_workers(tx, p, mesh)
    specs = optax_zoo.worker_specs(s, AXIS)

    def bare_step(p, s, g):
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s

    run = jax.jit(optax_zoo.worker_map(
      bare_step, mesh, in_specs=(stacked, specs, stacked),
      out_specs=(stacked, specs)))
    w = optax_zoo.wire_bytes(run, p, s, p)
    m = sum(v[0].size for v in start.values()) * 4
    want = 2 * (R - 1) / R * m
    assert {c.kind for c in w.collectives} == {'all-reduce'}, w.collectives
    assert {c.dtypes for c in w.collectives} == {('f32',)}, w.collectives
    assert w.sent == (want,) * R and w.received == (want,) * R, (dtype, w)
    assert w.busiest == optax_zoo.busiest_node_bytes('ring_allreduce', R, m)

  # An axis of the wrong size: a clear error naming num_replicas.
  tx = optax_zoo.replicated_sgd(optax.sgd(0.1), num_replicas=4,
                                coupling=0.5, axis_name=AXIS)
  p = optax_zoo.shard_workers(start, mesh)
  try:
    jax.jit(optax_zoo.worker_map(
      lambda p: tx.update(p, tx.init(p), p)[0], mesh, in_specs=stacked,
      out_specs=stacked))(p)
  except ValueError as e:
    assert 'num_replicas` is 4' in str(e), str(e)
  else:
    raise AssertionError('no error for an axis of 8 and 4 replicas')
  print('OK')
  """
)


def test_replicated_sgd_across_8_devices_equals_its_stacked_twin():
  tu.run_on_cpu_devices(_SCRIPT)
