"""Communication accounting: HLO collectives priced, and the alpha-beta model.

Single process: hand-written HLO covers what a one-device program cannot
show (groups of several devices, async pairs, tuple all-reduces, loops with
an annotated trip count); programs lowered on one device check the reading
of what JAX really emits. The 8-device programs are in comm_mesh_test.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from optax_zoo import distributed as dist


def _module(body: str, header: str = 'HloModule m') -> str:
  return f"""{header}
region_add {{
  a = f32[] parameter(0)
  b = f32[] parameter(1)
  ROOT c = f32[] add(a, b)
}}
ENTRY main {{
{body}
}}
"""


def test_all_reduce_costs_two_n_minus_one_over_n_of_the_payload():
  text = _module(
    """  x = f32[16]{0} parameter(0)
  ROOT y = f32[16]{0} all-reduce(x), channel_id=1,
    replica_groups={{0,1,2,3}}, use_global_device_ids=true,
    to_apply=region_add"""
  )
  (c,) = dist.collective_bytes(text)
  assert (c.kind, c.dtypes, c.shapes) == ('all-reduce', ('f32',), ((16,),))
  assert c.payload_bytes == 64
  assert c.group_size == 4
  assert c.replica_groups == ((0, 1, 2, 3),)
  assert c.sent == (96.0,) * 4  # 2 * 3 / 4 * 64
  assert c.received == c.sent


def test_tuple_all_reduce_sums_its_operands_at_their_own_widths():
  text = _module(
    """  x = f32[16]{0} parameter(0)
  z = bf16[8]{0} parameter(1)
  ROOT y = (f32[16]{0}, bf16[8]{0}) all-reduce(x, z),
    replica_groups={{0,1},{2,3}}, to_apply=region_add"""
  )
  (c,) = dist.collective_bytes(text)
  assert c.dtypes == ('f32', 'bf16')
  assert c.payload_bytes == 64 + 16
  assert c.group_size == 2
  assert c.sent == (80.0,) * 4  # 2 * 1 / 2 * 80 in each pair


def test_all_gather_reduce_scatter_and_all_to_all_follow_the_conventions():
  text = _module(
    """  x = u8[10]{0} parameter(0)
  f = f32[8]{0} parameter(1)
  g = u8[80]{0} all-gather(x), replica_groups={{0,1,2,3,4,5,6,7}},
    dimensions={0}
  r = f32[1]{0} reduce-scatter(f), replica_groups={{0,1,2,3,4,5,6,7}},
    dimensions={0}, to_apply=region_add
  ROOT t = f32[8]{0} all-to-all(f), replica_groups={{0,1,2,3,4,5,6,7}},
    dimensions={0}"""
  )
  gather, scatter, a2a = dist.collective_bytes(text)
  assert gather.kind == 'all-gather' and gather.payload_bytes == 10
  assert gather.sent == (70.0,) * 8  # (n - 1) * B_in
  assert scatter.kind == 'reduce-scatter' and scatter.sent == (28.0,) * 8
  assert a2a.kind == 'all-to-all' and a2a.sent == (28.0,) * 8


def test_iota_replica_groups_are_expanded():
  text = _module(
    """  x = f32[4]{0} parameter(0)
  a = f32[4]{0} all-reduce(x), replica_groups=[2,4]<=[8],
    to_apply=region_add
  ROOT b = f32[4]{0} all-reduce(a), replica_groups=[4,2]<=[2,4]T(1,0),
    to_apply=region_add"""
  )
  rows, cols = dist.collective_bytes(text)
  assert rows.replica_groups == ((0, 1, 2, 3), (4, 5, 6, 7))
  assert cols.replica_groups == ((0, 4), (1, 5), (2, 6), (3, 7))
  assert rows.sent == (24.0,) * 8 and cols.sent == (16.0,) * 8


def test_empty_replica_groups_span_the_module_devices():
  text = _module(
    """  x = f32[4]{0} parameter(0)
  ROOT y = f32[4]{0} all-reduce(x), replica_groups={}, to_apply=region_add""",
    header='HloModule m, num_partitions=4',
  )
  (c,) = dist.collective_bytes(text)
  assert c.group_size == 4 and c.sent == (24.0,) * 4
  (c,) = dist.collective_bytes(text, num_devices=8)
  assert c.group_size == 8 and len(c.sent) == 8


def test_permute_counts_each_pair_for_its_sender_and_receiver():
  # Device 0 is a hub: it sends to 1 and 2 and hears from both; 3 sends to
  # itself, which crosses no wire.
  text = _module(
    """  x = bf16[100]{0} parameter(0)
  ROOT y = bf16[100]{0} collective-permute(x),
    source_target_pairs={{0,1},{0,2},{1,0},{2,0},{3,3}}"""
  )
  (c,) = dist.collective_bytes(text)
  assert c.payload_bytes == 200
  assert c.source_target_pairs == ((0, 1), (0, 2), (1, 0), (2, 0), (3, 3))
  assert c.sent == (400.0, 200.0, 200.0, 0.0)
  assert c.received == (400.0, 200.0, 200.0, 0.0)
  assert dist.busiest_worker_bytes([c], direction='sent') == 400.0
  assert dist.busiest_worker_bytes([c]) == 800.0


def test_async_pairs_count_once_at_the_start():
  text = _module(
    """  x = f32[8]{0} parameter(0)
  s = f32[8]{0} all-reduce-start(x), replica_groups={{0,1}},
    to_apply=region_add
  d = f32[8]{0} all-reduce-done(s)
  p = (f32[8]{0}, f32[8]{0}, u32[], u32[]) collective-permute-start(d),
    source_target_pairs={{0,1},{1,0}}
  q = f32[8]{0} collective-permute-done(p)
  g = (f32[8]{0}, f32[16]{0}) all-gather-start(q), replica_groups={{0,1}},
    dimensions={0}
  ROOT h = f32[16]{0} all-gather-done(g)"""
  )
  kinds = [(c.kind, c.payload_bytes) for c in dist.collective_bytes(text)]
  assert kinds == [
    ('all-reduce', 32),
    ('collective-permute', 32),
    ('all-gather', 32),
  ]


def test_old_style_text_with_percent_names_and_operand_shapes():
  text = """HloModule m
%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %c = f32[] add(f32[] %a, f32[] %b)
}
%body (p: f32[6]) -> f32[6] {
  %p = f32[6]{0} parameter(0)
  ROOT %s = f32[6]{0} all-reduce(f32[6]{0} %p), replica_groups={{0,1,2}},
    to_apply=%add
}
%cond (p: f32[6]) -> pred[] {
  %p = f32[6]{0} parameter(0)
  ROOT %t = pred[] constant(true)
}
ENTRY %main (x: f32[6]) -> f32[6] {
  %x = f32[6]{0} parameter(0)
  %y = f32[6]{0} all-reduce(f32[6]{0} %x), replica_groups={{0,1,2}},
    to_apply=%add
  ROOT %w = f32[6]{0} while(f32[6]{0} %y), condition=%cond, body=%body,
    backend_config={"known_trip_count":{"n":"2"}}
}
"""
  once, looped = dist.collective_bytes(text)
  assert once.payload_bytes == 24 and once.sent == (32.0,) * 3
  assert looped.executions == 2 and looped.path == 'w[x2]/s'
  assert dist.worker_bytes([once, looped]) == (96.0,) * 3


def test_loops_multiply_by_a_known_trip_count_and_flag_an_unknown_one():
  text = """HloModule m
add {
  a = f32[] parameter(0)
  b = f32[] parameter(1)
  ROOT c = f32[] add(a, b)
}
body {
  p = f32[4]{0} parameter(0)
  ROOT s = f32[4]{0} all-reduce(p), replica_groups={{0,1}}, to_apply=add
}
cond {
  p = f32[4]{0} parameter(0)
  ROOT t = pred[] constant(true)
}
ENTRY main {
  x = f32[4]{0} parameter(0)
  w = f32[4]{0} while(x), condition=cond, body=body,
    backend_config={"known_trip_count":{"n":"7"}}
  ROOT u = f32[4]{0} while(w), condition=cond, body=body
}
"""
  known, unknown = dist.collective_bytes(text)
  assert known.executions == 7 and unknown.executions is None
  assert known.path == 'w[x7]/s' and unknown.path == 'u[x?]/s'
  w = dist.summarize_collectives([known, unknown])
  assert not w.exact
  assert w.sent == (8 * 16.0,) * 2  # 7 executions, then one counted once


def test_conditional_takes_each_workers_worst_branch():
  text = _module(
    """  i = s32[] parameter(0)
  x = f32[10]{0} parameter(1)
  ROOT y = f32[10]{0} conditional(i, x, x),
    branch_computations={left, right}"""
  ).replace(
    'ENTRY',
    """left {
  a = f32[10]{0} parameter(0)
  ROOT b = f32[10]{0} collective-permute(a), source_target_pairs={{0,1}}
}
right {
  a = f32[10]{0} parameter(0)
  b = f32[10]{0} collective-permute(a), source_target_pairs={{1,2}}
  ROOT c = f32[10]{0} collective-permute(b), source_target_pairs={{1,0}}
}
ENTRY""",
  )
  records = dist.collective_bytes(text)
  assert [c.branches for c in records] == [
    (('y', 0),),
    (('y', 1),),
    (('y', 1),),
  ]
  # Branch 0 sends 40 from device 0, branch 1 sends 80 from device 1.
  assert dist.worker_bytes(records) == (40.0, 80.0, 0.0)
  assert dist.worker_bytes(records, direction='received') == (40.0, 40.0, 40.0)


def test_refuses_compiled_programs_and_other_inputs():
  f = jax.jit(lambda x: x + 1)
  x = jnp.zeros(3)
  with pytest.raises(ValueError, match=r'`lowered_or_text`.*compiled'):
    dist.collective_bytes(f.lower(x).compile())
  with pytest.raises(ValueError, match='`lowered_or_text`'):
    dist.collective_bytes(42)
  text = _module(
    """  x = f32[4]{0} parameter(0)
  ROOT y = f32[4]{0} all-reduce(x), replica_groups={{0,1,2}},
    to_apply=region_add"""
  )
  with pytest.raises(ValueError, match='`num_devices`'):
    dist.collective_bytes(text, num_devices=2)
  with pytest.raises(ValueError, match='`direction`'):
    dist.worker_bytes(dist.collective_bytes(text), direction='up')
  with pytest.raises(ValueError, match='`args`'):
    dist.wire_bytes(f.lower(x), x)


def _one_device_mesh():
  return jax.make_mesh((1,), ('i',), axis_types=(AxisType.Auto,))


def test_reads_the_collectives_jax_lowers_on_one_device():
  mesh = _one_device_mesh()

  def step(g, codes, h):
    mean = lax.pmean(g, 'i')
    gathered = lax.all_gather(codes, 'i', tiled=True)
    shifted = lax.ppermute(h, 'i', [(0, 0)])
    looped = lax.fori_loop(
      0, 3, lambda k, a: lax.pcast(lax.psum(a, 'i'), 'i', to='varying'), g
    )
    branch = lax.cond(
      g[0] > 0,
      lambda a: lax.ppermute(a, 'i', [(0, 0)]),
      lambda a: a,
      h,
    )
    return mean, gathered, shifted, looped, branch

  f = jax.shard_map(
    step,
    mesh=mesh,
    in_specs=P('i'),
    out_specs=(P(), P('i'), P('i'), P('i'), P('i')),
  )
  args = (
    jnp.zeros(32, jnp.float32),
    jnp.zeros(24, jnp.uint8),
    jnp.zeros(16, jnp.bfloat16),
  )
  w = dist.wire_bytes(f, *args)
  got = [
    (c.kind, c.dtypes, c.payload_bytes, c.executions, len(c.branches))
    for c in w.collectives
  ]
  assert sorted(got) == sorted(
    [
      ('all-reduce', ('f32',), 128, 1, 0),
      ('all-gather', ('u8',), 24, 1, 0),
      ('collective-permute', ('bf16',), 32, 1, 0),
      ('all-reduce', ('f32',), 128, 3, 0),
      ('collective-permute', ('bf16',), 32, 1, 1),
    ]
  )
  # One worker: nothing crosses a wire.
  assert w.num_devices == 1 and w.exact
  assert w.per_worker == w.busiest == w.total == 0.0
  same = dist.wire_bytes(jax.jit(f).lower(*args))
  assert same.collectives == w.collectives


def test_vmap_simulated_workers_have_no_collectives():
  f = jax.vmap(lambda g: lax.pmean(g, 'i'), axis_name='i')
  w = dist.wire_bytes(f, jnp.zeros((4, 8)))
  assert w.collectives == () and w.busiest == 0.0 and w.by_kind() == {}


def test_wire_bytes_summary_fields():
  text = _module(
    """  x = f32[16]{0} parameter(0)
  a = f32[16]{0} all-reduce(x), replica_groups={{0,1,2,3}},
    to_apply=region_add
  ROOT b = f32[16]{0} collective-permute(a),
    source_target_pairs={{0,1},{1,2},{2,3},{3,0}}"""
  )
  bits = dist.information_bits(16, 32)
  w = dist.wire_bytes(text, information_bits=bits)
  assert w.information_bits == 512.0
  assert w.per_worker == 96.0 + 64.0
  assert w.total == 4 * 160.0
  assert w.busiest_sent == w.busiest_received == 160.0
  assert w.busiest == 320.0
  assert w.by_kind() == {'all-reduce': 96.0, 'collective-permute': 64.0}
  assert w.exact


def test_information_bits():
  assert dist.information_bits(1000, 9) == 9000.0
  assert dist.information_bits(10, 32, overhead_bits=32) == 352.0
  with pytest.raises(ValueError, match='`num_params`'):
    dist.information_bits(-1, 9)
  with pytest.raises(ValueError, match='`bits_per_coordinate`'):
    dist.information_bits(10, -1)


@pytest.mark.parametrize('n', [4, 8, 64])
def test_alpha_beta_times_match_hand_computed_values(n):
  m, a, b = 1e6, 1e-5, 1e9
  # Worked by hand for each n: 2 (n - 1) latencies and 2 (n - 1) / n of the
  # message per link for the ring; push and pull through one server link;
  # two sends of one message for a degree-2 gossip.
  ring = {4: 6e-5 + 1.5e-3, 8: 1.4e-4 + 1.75e-3, 64: 1.26e-3 + 1.96875e-3}
  ps = {4: 2e-5 + 8e-3, 8: 2e-5 + 1.6e-2, 64: 2e-5 + 1.28e-1}
  kw = dict(num_workers=n, message_bytes=m, latency=a, bandwidth=b)
  np.testing.assert_allclose(
    dist.alpha_beta_time('ring_allreduce', **kw), ring[n], rtol=1e-12
  )
  np.testing.assert_allclose(
    dist.alpha_beta_time('parameter_server', **kw), ps[n], rtol=1e-12
  )
  np.testing.assert_allclose(
    dist.alpha_beta_time('gossip', degree=2, **kw), 2.02e-3, rtol=1e-12
  )
  bytes_ring = {4: 3e6, 8: 3.5e6, 64: 3.9375e6}
  assert dist.busiest_node_bytes('ring_allreduce', n, m) == bytes_ring[n]
  assert dist.busiest_node_bytes('parameter_server', n, m) == 2 * n * m
  assert dist.busiest_node_bytes('gossip', n, m, degree=2) == 4e6


def test_one_worker_ring_costs_nothing():
  kw = dict(num_workers=1, message_bytes=1e6, latency=1.0, bandwidth=1.0)
  assert dist.alpha_beta_time('ring_allreduce', **kw) == 0.0
  assert dist.busiest_node_bytes('ring_allreduce', 1, 1e6) == 0.0


def test_busiest_node_grows_with_degree_for_gossip_and_with_n_for_a_server():
  ns = np.array([4, 8, 16, 32, 64])
  gossip = [dist.busiest_node_bytes('gossip', n, 1.0, degree=2) for n in ns]
  server = [dist.busiest_node_bytes('parameter_server', n, 1.0) for n in ns]
  assert len(set(gossip)) == 1  # O(degree): flat in n
  np.testing.assert_allclose(np.asarray(server) / ns, 2.0)  # O(n)
  by_degree = [
    dist.busiest_node_bytes('gossip', 64, 1.0, degree=d) for d in (1, 2, 6)
  ]
  assert by_degree == [2.0, 4.0, 12.0]


@pytest.mark.parametrize(
  'kwargs, name',
  [
    (dict(num_workers=0), 'num_workers'),
    (dict(num_workers=2.5), 'num_workers'),
    (dict(latency=-1.0), 'latency'),
    (dict(bandwidth=0.0), 'bandwidth'),
    (dict(bandwidth=-1e9), 'bandwidth'),
    (dict(message_bytes=-1.0), 'message_bytes'),
    (dict(pattern='allgather'), 'pattern'),
    (dict(pattern='gossip', degree=None), 'degree'),
    (dict(pattern='gossip', degree=8), 'degree'),
    (dict(pattern='ring_allreduce', degree=2), 'degree'),
  ],
)
def test_alpha_beta_bad_input_names_the_argument(kwargs, name):
  args = dict(
    pattern='ring_allreduce',
    num_workers=8,
    message_bytes=1e6,
    latency=1e-5,
    bandwidth=1e9,
  )
  args.update(kwargs)
  pattern = args.pop('pattern')
  with pytest.raises(ValueError, match=f'`{name}`'):
    dist.alpha_beta_time(pattern, **args)
  if name not in ('latency', 'bandwidth'):
    with pytest.raises(ValueError, match=f'`{name}`'):
      dist.busiest_node_bytes(
        pattern, args['num_workers'], args['message_bytes'], args.get('degree')
      )
