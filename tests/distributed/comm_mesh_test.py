"""Wire bytes of real `jax.shard_map` programs on an 8-device CPU mesh.

Every program is lowered, not compiled: the bytes are read from the logical
collectives and must equal the documented formula exactly. One subprocess:
the device count is fixed when JAX starts, and the suite runs on one device.
"""

from __future__ import annotations

import textwrap

from optax_zoo._src import test_utils as tu

_SCRIPT = textwrap.dedent(
  """
  import jax, jax.numpy as jnp
  from jax import lax
  from jax.sharding import AxisType, PartitionSpec as P
  from optax_zoo import distributed as dist

  n, N = 8, 96  # workers; elements per worker
  assert jax.device_count() == n, jax.devices()
  mesh = jax.make_mesh((n,), ('i',), axis_types=(AxisType.Auto,))

  def on_mesh(f, out_specs=P('i')):
    return jax.shard_map(f, mesh=mesh, in_specs=P('i'), out_specs=out_specs)

  def check(f, x, kind, dtype, sent, received=None, count=1, args=()):
    w = dist.wire_bytes(f, x, *args)
    assert w.num_devices == n and w.exact, w
    assert [c.kind for c in w.collectives] == [kind] * count, w.collectives
    assert all(c.dtypes == (dtype,) for c in w.collectives), w.collectives
    received = sent if received is None else received
    assert w.sent == (sent,) * n, (kind, w.sent, sent)
    assert w.received == (received,) * n, (kind, w.received, received)
    assert w.per_worker == sent and w.busiest == sent + received
    return w

  f32 = jnp.arange(n * N, dtype=jnp.float32)
  bf16 = f32.astype(jnp.bfloat16)
  codes = jnp.arange(n * N, dtype=jnp.uint8)
  B = 4 * N  # float32 bytes per worker

  # psum of float32: ring all-reduce, 2 (n - 1) / n * B per worker.
  w = check(on_mesh(lambda g: lax.psum(g, 'i'), P()), f32, 'all-reduce',
            'f32', 2 * (n - 1) / n * B)
  assert w.collectives[0].payload_bytes == B
  assert w.collectives[0].replica_groups == (tuple(range(n)),)
  assert w.busiest == dist.busiest_node_bytes('ring_allreduce', n, B)

  # all_gather of uint8 codes: (n - 1) * B_in, one byte per code.
  w = check(on_mesh(lambda c: lax.all_gather(c, 'i', tiled=True)), codes,
            'all-gather', 'u8', (n - 1) * N)
  assert w.collectives[0].payload_bytes == N

  ring = [(j, (j + 1) % n) for j in range(n)]
  back = [(j, (j - 1) % n) for j in range(n)]
  shift = on_mesh(lambda x: lax.ppermute(x, 'i', ring))
  # A ring shift sends each worker's block once; bfloat16 is 2 bytes.
  w = check(shift, f32, 'collective-permute', 'f32', 4 * N)
  assert w.collectives[0].source_target_pairs == tuple(ring)
  w = check(shift, bf16, 'collective-permute', 'bf16', 2 * N)
  assert w.collectives[0].payload_bytes == 2 * N

  # Two-shift gossip (ring, degree 2): each worker sends its block to
  # both neighbours and hears from both.
  def gossip(x):
    return (x + lax.ppermute(x, 'i', ring) + lax.ppermute(x, 'i', back)) / 3

  w = check(on_mesh(gossip), f32, 'collective-permute', 'f32', 2 * 4 * N,
            count=2)
  assert w.busiest == dist.busiest_node_bytes('gossip', n, 4 * N, degree=2)

  # Time-varying one-peer gossip (a lax.switch over shifts 1, 2, 4 on a
  # replicated step): one branch runs, one block sent and received.
  shifts = [[(j, (j + s) % n) for j in range(n)] for s in (1, 2, 4)]

  def one_peer(x, step):
    branches = [lambda y, p=p: lax.ppermute(y, 'i', p) for p in shifts]
    return (x + lax.switch(step % len(shifts), branches, x)) / 2

  one_peer = jax.shard_map(one_peer, mesh=mesh, in_specs=(P('i'), P()),
                           out_specs=P('i'))
  w = check(one_peer, f32, 'collective-permute', 'f32', 4 * N, count=3,
            args=(jnp.int32(5),))
  assert all(len(c.branches) == 1 for c in w.collectives)

  # A 2 x 4 mesh, psum over the 4-worker axis: groups of 4.
  mesh2 = jax.make_mesh((2, 4), ('a', 'b'), axis_types=(AxisType.Auto,) * 2)
  f = jax.shard_map(lambda g: lax.psum(g, 'b'), mesh=mesh2,
                    in_specs=P(('a', 'b')), out_specs=P('a'))
  w = dist.wire_bytes(f, f32)
  (c,) = w.collectives
  assert c.group_size == 4 and len(c.replica_groups) == 2, c
  assert w.sent == (2 * 3 / 4 * B,) * n, w.sent

  # The programs run: the ring shift really moves the blocks.
  out = jax.jit(shift)(bf16)
  assert (out.reshape(n, N)[1] == bf16.reshape(n, N)[0]).all()
  print('OK')
  """
)


def test_wire_bytes_of_mesh_programs_equal_the_documented_formulas():
  tu.run_on_cpu_devices(_SCRIPT)
