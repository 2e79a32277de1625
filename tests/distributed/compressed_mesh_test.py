"""Compressed averaging on a real 8-device CPU mesh with `jax.shard_map`.

One subprocess (the device count is fixed when JAX starts, and the rest of
the suite runs on one device) checks that the mesh program equals the
simulated one and that uint8 payloads are what crosses the wire.
"""

from __future__ import annotations

import textwrap

from optax_zoo._src import test_utils as tu

_SCRIPT = textwrap.dedent(
  """
  import re
  import jax, jax.numpy as jnp, numpy as np
  from jax import lax
  from jax.sharding import AxisType, PartitionSpec as P
  import optax_zoo

  N, AX = 8, 'workers'
  assert jax.device_count() == N, jax.devices()
  mesh = jax.make_mesh((N,), (AX,), axis_types=(AxisType.Auto,))
  rng = np.random.default_rng(0)
  seq = [
    {'w': rng.normal(size=(N, 10, 100)).astype(np.float32),
     'b': (10 * rng.normal(size=(N, 37))).astype(np.float32)}
    for _ in range(3)
  ]
  like = jax.tree.map(lambda g: g[0], seq[0])
  first = lambda t: jax.tree.map(lambda a: a[0], t)
  stacked = lambda t: jax.tree.map(lambda a: a[None], t)

  def mesh_step(tx, per_worker_state=None, like=like):
    # per_worker_state: the state leaves that differ between workers
    # (residuals), sharded over AX with a leading worker axis.
    state = tx.init(like)
    specs = jax.tree.map(lambda _: P(), state)
    if per_worker_state:
      state = state._replace(**{
        k: jax.tree.map(lambda a: np.zeros((N,) + a.shape, a.dtype),
                        getattr(state, k)) for k in per_worker_state})
      specs = specs._replace(**{
        k: jax.tree.map(lambda _: P(AX), getattr(state, k))
        for k in per_worker_state})

    def local(g, s):
      if per_worker_state:
        s = s._replace(**{k: first(getattr(s, k)) for k in per_worker_state})
      u, s = tx.update(first(g), s)
      if per_worker_state:
        s = s._replace(**{k: stacked(getattr(s, k))
                          for k in per_worker_state})
      return u, s

    f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(AX), specs),
                              out_specs=(P(), specs)))
    return f, state

  def on_mesh(tx, per_worker_state=None):
    f, state = mesh_step(tx, per_worker_state)
    outs = []
    for g in seq:
      u, state = f(g, state)
      outs.append(jax.tree.map(np.asarray, u))
    return outs, state, f

  def simulated(tx):
    state = jax.vmap(tx.init)(seq[0])
    step = jax.jit(jax.vmap(tx.update, axis_name=AX))
    outs = []
    for g in seq:
      u, state = step(g, state)
      outs.append(jax.tree.map(np.asarray, u))
    return outs, state

  def same(a, b, exact=True):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
      if exact:
        np.testing.assert_array_equal(x, y)
      else:
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)

  # 1. The identity compressor is the all-reduce mean (lax.pmean).
  ident = optax_zoo.compressed_mean(optax_zoo.identity_compressor(), AX)
  outs, _, _ = on_mesh(ident)
  pmean = jax.jit(jax.shard_map(
    lambda g: lax.pmean(first(g), AX), mesh=mesh, in_specs=P(AX),
    out_specs=P()))
  for g, u in zip(seq, outs, strict=True):
    same(u, pmean(g), exact=False)
    same(u, jax.tree.map(lambda a: a.mean(0), g), exact=False)

  # 2. Natural compression on the mesh is the simulated computation, bit
  # for bit, given the same keys.
  c = optax_zoo.natural_compressor()
  nat = optax_zoo.compressed_mean(c, AX, key=11)
  outs, state, f = on_mesh(nat)
  sim, sim_state = simulated(nat)
  for u, s in zip(outs, sim, strict=True):
    same(u, first(s))
  np.testing.assert_array_equal(state.rng_key, sim_state.rng_key[0])

  # 3. What crosses the wire: uint8 all-gathers of the documented size
  # and no float collective at all (lowered, not compiled, HLO).
  hlo = f.lower(seq[0], nat.init(like)).as_text(dialect='hlo')
  gathers = re.findall(r'= (\\w+)\\[([\\d,]*)\\][^\\n]*? all-gather\\(', hlo)
  assert gathers, hlo
  assert {t for t, _ in gathers} == {'u8'}, gathers
  out_bytes = sum(int(np.prod([int(d) for d in s.split(',')]))
                  for _, s in gathers)
  payload = c.tree_payload_bytes(like)
  assert payload == (1000 + 125) + (37 + 5), payload
  assert out_bytes == N * payload, (out_bytes, payload)
  assert c.wire_bytes(like, N) == (N - 1) * out_bytes // N
  assert not re.search(r'all-reduce\\(|collective-permute\\(', hlo)

  # 4. AdaComp and error feedback, whose residuals live per worker.
  for tx, per_worker in (
    (optax_zoo.scale_by_adacomp(AX, bin_size=50, max_per_bin=2), 'residue'),
    (optax_zoo.error_feedback(optax_zoo.top_k_compressor(5), AX),
     'residual'),
  ):
    outs, state, _ = on_mesh(tx, (per_worker,))
    sim, sim_state = simulated(tx)
    for u, s in zip(outs, sim, strict=True):
      same(u, first(s))
    same(getattr(state, per_worker), getattr(sim_state, per_worker))

  # 5. Bytes each worker sends and receives, read from the lowered program
  # by optax_zoo.wire_bytes, equal the documented formulas: (N - 1) times
  # the payload (`Compressor.wire_bytes`; AdaComp's from its docstring),
  # in float32 and bfloat16 (the payload has the update's dtype).
  def adacomp_bytes(tree, bin_size, slots):
    total = 0
    for a in jax.tree.leaves(tree):
      b = -(-a.size // bin_size) * slots
      total += 4 + b + -(-b // 8)  # scale, uint8 indices, sign bits
    return (N - 1) * total

  top = optax_zoo.top_k_compressor(5)
  dith = optax_zoo.natural_dithering_compressor()
  for dtype in (jnp.float32, jnp.bfloat16):
    lk = jax.tree.map(lambda a: a.astype(dtype), like)
    g = jax.tree.map(lambda a: a.astype(dtype), seq[0])
    for name, tx, per_worker, want in (
      ('natural', nat, None, c.wire_bytes(lk, N)),
      ('dithering', optax_zoo.compressed_mean(dith, AX), None,
       dith.wire_bytes(lk, N)),
      ('top_k', optax_zoo.compressed_mean(top, AX), None,
       top.wire_bytes(lk, N)),
      ('ef_top_k', optax_zoo.error_feedback(top, AX), ('residual',),
       top.wire_bytes(lk, N)),
      ('adacomp', optax_zoo.scale_by_adacomp(AX, bin_size=50, max_per_bin=2),
       ('residue',), adacomp_bytes(lk, 50, 2)),
    ):
      f, state = mesh_step(tx, per_worker, like=lk)
      w = optax_zoo.wire_bytes(f, g, state)
      assert w.exact and w.num_devices == N, (name, dtype)
      assert w.per_worker == want, (name, dtype, w.per_worker, want)
      assert set(w.sent) == {want} and set(w.received) == {want}, (
        name, dtype, w.sent, w.received)
      assert set(w.by_kind()) == {'all-gather'}, (name, w.by_kind())
  # The documented numbers themselves (payloads of w (1000,) and b (37,)).
  assert top.wire_bytes(like, N) == 7 * 2 * 5 * (4 + 4)
  bf = jax.tree.map(lambda a: a.astype(jnp.bfloat16), like)
  assert top.wire_bytes(bf, N) == 7 * 2 * 5 * (2 + 4)
  assert dith.wire_bytes(like, N) == 7 * ((4 + 375 + 125) + (4 + 14 + 5))
  assert adacomp_bytes(like, 50, 2) == 7 * ((4 + 40 + 5) + (4 + 2 + 1))
  print('OK')
  """
)


def test_compressed_mean_on_8_device_mesh():
  tu.run_on_cpu_devices(_SCRIPT)
