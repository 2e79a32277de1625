"""D-PSGD gossip against all-reduce and a parameter server: the busiest
worker's bytes per step, measured on a CPU mesh and modelled up to 64
workers (Lian et al. 2017's claim: the busiest node's traffic is O(degree)
for gossip, O(n) for a parameter server).

  python -m experiments.distributed.communication

Two parts:

- *Measured*: the averaging step of each method (`all_reduce_mean`,
  `gossip` on a ring, a 2 x 4 torus, the static and the one-peer
  exponential graph, `compressed_mean` with `natural_compressor`) is lowered
  as a `jax.shard_map` program over a mesh of ``--mesh-workers`` CPU
  devices, on the parameter tree of the MNIST-1D `CNN1D` (float32), and
  `optax_zoo.wire_bytes` reads its collectives. The busiest worker's
  traffic (sent plus received) is compared with the documented formula
  (`optax_zoo.busiest_node_bytes`; ``2 (n - 1)`` payloads for the
  compressed all-gather). The device count is fixed when JAX starts, so the
  measurement runs in a child process with
  ``XLA_FLAGS=--xla_force_host_platform_device_count``. A parameter server
  is not an SPMD program: it has no measured row.
- *Modelled*: over ``--workers`` (4 to 64), busiest-node bytes and the
  alpha-beta time of one averaging step (`optax_zoo.alpha_beta_time`) for
  ring all-reduce, a parameter server, gossip on a ring (degree 2) and on
  the one-peer exponential graph (degree 1), for the CNN1D's message and a
  25M-parameter one, in a datacenter (5 us, 10 GB/s) and a slow,
  geo-distributed network (50 ms, 10 MB/s).

Bytes are not time to accuracy: the compute of a step, its overlap with
communication and D-PSGD's extra steps to the same loss are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
from typing import Any

NAME = 'distributed_communication'
NETWORKS = {
  'datacenter': {'latency': 5e-6, 'bandwidth': 10e9},
  'slow': {'latency': 50e-3, 'bandwidth': 10e6},
}
# Modelled patterns: (busiest_node_bytes pattern, gossip degree).
PATTERNS = {
  'ring_allreduce': ('ring_allreduce', None),
  'parameter_server': ('parameter_server', None),
  'gossip_ring': ('gossip', 2),
  'gossip_one_peer_exp': ('gossip', 1),
}
WORKERS = (4, 8, 16, 32, 64)
MESH_WORKERS = (2, 4, 8)
LARGE_MODEL = 25_000_000  # parameters, about a ResNet-50
ROOT = pathlib.Path(__file__).resolve().parents[2]


def model_shapes() -> dict[str, Any]:
  """The float32 parameter tree of the MNIST-1D `CNN1D`, as shapes."""
  import jax
  from flax import nnx

  from optax_zoo import training

  params = nnx.to_pure_dict(
    nnx.state(training.CNN1D(rngs=nnx.Rngs(0)), nnx.Param)
  )
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)


def _methods(n: int) -> dict[str, tuple[Any, Any]]:
  """Name -> (transform over axis 'w' of n workers, its topology or None)."""
  import optax_zoo as oz

  out = {'all_reduce_mean': (oz.all_reduce_mean('w'), None)}
  topologies = {'ring': oz.ring(n) if n > 2 else None}
  if n == 8:
    topologies['torus_2x4'] = oz.torus(2, 4)
  topologies['exponential'] = oz.exponential(n)
  topologies['one_peer_exponential'] = oz.one_peer_exponential(n)
  for name, t in topologies.items():
    if t is not None:
      out[f'gossip_{name}'] = (oz.gossip(t, 'w'), t)
  out['compressed_mean_natural'] = (
    oz.compressed_mean(oz.natural_compressor(), 'w'),
    None,
  )
  return out


def measure(num_workers: int) -> dict[str, Any]:
  """Bytes of each method's step read from its lowered mesh program.

  Needs at least ``num_workers`` devices in this process.
  """
  import jax
  import numpy as np
  from jax.sharding import PartitionSpec as P

  import optax_zoo as oz

  n = num_workers
  shapes = model_shapes()
  d = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
  message = 4 * d
  stacked = jax.tree.map(
    lambda s: jax.ShapeDtypeStruct((n, *s.shape), s.dtype), shapes
  )
  mesh = oz.worker_mesh(n, 'w')
  rows = {}
  for name, (tx, topology) in _methods(n).items():
    state = jax.eval_shape(tx.init, shapes)
    if name.startswith('compressed'):
      # Its state (count, step key) is the same on every worker.
      specs = jax.tree.map(lambda _: P(), state)
    else:
      specs = oz.worker_specs(state, 'w')
    step = oz.worker_map(
      lambda g, s, x, tx=tx: tx.update(g, s, x),
      mesh,
      in_specs=(P('w'), specs, P('w')),
      out_specs=(P('w'), specs),
    )
    w = oz.wire_bytes(step, stacked, state, stacked)
    if topology is not None:
      degree = topology.messages_per_step
      formula = oz.busiest_node_bytes('gossip', n, message, degree=degree)
    elif name == 'all_reduce_mean':
      degree = None
      formula = oz.busiest_node_bytes('ring_allreduce', n, message)
    else:
      degree = None
      # A ring all-gather: n - 1 payloads out and n - 1 in.
      formula = 2.0 * oz.natural_compressor().wire_bytes(shapes, n)
    rows[name] = {
      'busiest_bytes': w.busiest,
      'busiest_sent': w.busiest_sent,
      'per_worker_sent': w.per_worker,
      'formula_busiest_bytes': formula,
      'matches_formula': bool(np.isclose(w.busiest, formula, rtol=1e-12)),
      'exact': w.exact,
      'collectives': sorted({c.kind for c in w.collectives}),
      'dtypes': sorted({t for c in w.collectives for t in c.dtypes}),
      'degree': degree,
    }
  return {'num_params': d, 'message_bytes': message, 'methods': rows}


def measure_in_child(workers: list[int]) -> dict[str, Any]:
  """`measure` for each worker count in a process with enough devices."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = (
    env.get('XLA_FLAGS', '')
    + f' --xla_force_host_platform_device_count={max(workers)}'
  )
  env['JAX_PLATFORMS'] = 'cpu'
  argv = ['--measure-child', *map(str, workers)]
  done = subprocess.run(
    [sys.executable, '-m', 'experiments.distributed.communication', *argv],
    env=env,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  if done.returncode != 0:
    raise RuntimeError(f'mesh measurement failed:\n{done.stderr[-4000:]}')
  return json.loads(done.stdout.strip().splitlines()[-1])


def model(message_bytes: float, workers) -> dict[str, Any]:
  """Busiest-node bytes and alpha-beta seconds per pattern and n."""
  import optax_zoo as oz

  out = {}
  for name, (pattern, degree) in PATTERNS.items():
    rows = []
    for n in workers:
      row = {
        'n': n,
        'busiest_bytes': oz.busiest_node_bytes(
          pattern, n, message_bytes, degree=degree
        ),
      }
      for net, p in NETWORKS.items():
        row[f'time_s_{net}'] = oz.alpha_beta_time(
          pattern,
          num_workers=n,
          message_bytes=message_bytes,
          degree=degree,
          **p,
        )
      rows.append(row)
    out[name] = rows
  return out


def claims(modelled: dict[str, Any], measured: dict[str, Any]) -> dict:
  """Whether the busiest node's bytes scale as O(degree) and O(n)."""
  import numpy as np

  def per(name, key='busiest_bytes'):
    return np.array([r[key] for r in modelled[name]], float)

  ns = np.array([r['n'] for r in modelled['parameter_server']], float)
  one_peer = [
    m['methods']['gossip_one_peer_exponential']['busiest_bytes']
    for m in measured.values()
  ]
  return {
    'gossip_bytes_independent_of_n': bool(
      all(np.ptp(per(k)) == 0 for k in ('gossip_ring', 'gossip_one_peer_exp'))
    ),
    'parameter_server_bytes_linear_in_n': bool(
      np.allclose(
        per('parameter_server') / ns, per('parameter_server')[0] / ns[0]
      )
    ),
    'measured_one_peer_bytes_independent_of_n': bool(np.ptp(one_peer) == 0),
    'measured_all_match_formula': bool(
      all(
        r['matches_formula']
        for m in measured.values()
        for r in m['methods'].values()
      )
    ),
  }


def table(result: dict[str, Any]) -> str:
  lines = []
  for n, m in result['measured'].items():
    lines += [
      f'\nMeasured on a {n}-device CPU mesh, CNN1D ({m["num_params"]} '
      f'float32 parameters, {m["message_bytes"]} B message):',
      '| method | busiest B (measured) | formula | match | collectives |',
      '|---|---|---|---|---|',
    ]
    for k, r in m['methods'].items():
      lines.append(
        f'| {k} | {r["busiest_bytes"]:,.0f} | '
        f'{r["formula_busiest_bytes"]:,.0f} | {r["matches_formula"]} | '
        f'{", ".join(r["collectives"])} ({", ".join(r["dtypes"])}) |'
      )
  for size, modelled in result['modelled'].items():
    lines += [
      f'\nModelled, {size}: busiest-node MB per step and ms per averaging '
      'step (datacenter 5 us, 10 GB/s; slow 50 ms, 10 MB/s):',
      '| n | pattern | busiest MB | datacenter ms | slow ms |',
      '|---|---|---|---|---|',
    ]
    for name, rows in modelled['patterns'].items():
      for r in rows:
        lines.append(
          f'| {r["n"]} | {name} | {r["busiest_bytes"] / 1e6:.4g} | '
          f'{1e3 * r["time_s_datacenter"]:.4g} | '
          f'{1e3 * r["time_s_slow"]:.4g} |'
        )
  lines.append(f'\nclaims: {result["claims"]}')
  return '\n'.join(lines)


def plot(result: dict[str, Any]) -> None:
  import matplotlib.pyplot as plt

  from experiments import _lib

  size = next(iter(result['modelled']))
  modelled = result['modelled'][size]['patterns']
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
  for name, rows in modelled.items():
    ns = [r['n'] for r in rows]
    axes[0].plot(ns, [r['busiest_bytes'] for r in rows], 'o-', label=name)
    for ax, net in zip(axes[1:], NETWORKS, strict=True):
      ax.plot(ns, [1e3 * r[f'time_s_{net}'] for r in rows], 'o-', label=name)
  measured = {
    'all_reduce_mean': 'C0',
    'gossip_ring': 'C2',
    'gossip_one_peer_exponential': 'C3',
  }
  for k, color in measured.items():
    pts = [
      (int(n), m['methods'][k]['busiest_bytes'])
      for n, m in result['measured'].items()
      if k in m['methods']
    ]
    if pts:
      axes[0].plot(*zip(*pts, strict=True), 'x', color=color, ms=10, mew=2)
  axes[0].plot([], [], 'kx', label='measured (CPU mesh)')
  axes[0].set_ylabel('busiest node bytes / step')
  axes[0].set_title(f'traffic, {size}')
  for ax, net in zip(axes[1:], NETWORKS, strict=True):
    p = NETWORKS[net]
    ax.set_title(
      f'{net}: {p["latency"] * 1e6:g} us, {p["bandwidth"] / 1e6:g} MB/s'
    )
    ax.set_ylabel('ms per averaging step (model)')
  for ax in axes:
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    ax.set_xlabel('workers n')
  axes[0].legend(fontsize=7)
  _lib.save_plot(fig, _lib.plot_path(__file__, 'communication.png'))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workers', type=int, nargs='+', default=WORKERS)
  parser.add_argument(
    '--mesh-workers',
    type=int,
    nargs='+',
    default=MESH_WORKERS,
    help='worker counts of the measured CPU meshes',
  )
  parser.add_argument(
    '--large-params',
    type=int,
    default=LARGE_MODEL,
    help='parameters of the second modelled message (0: none)',
  )
  parser.add_argument(
    '--measure-child', type=int, nargs='+', help=argparse.SUPPRESS
  )
  args = parser.parse_args(argv)
  if args.measure_child:
    print(json.dumps({str(n): measure(n) for n in args.measure_child}))
    return
  from experiments import _lib

  measured = measure_in_child(sorted(set(args.mesh_workers)))
  d = next(iter(measured.values()))['num_params']
  sizes = {f'CNN1D ({d} params)': d}
  if args.large_params:
    sizes[f'{args.large_params / 1e6:g}M params'] = args.large_params
  result = {
    'config': vars(args) | {'networks': NETWORKS},
    'setting': (
      'Bytes per averaging step through the busiest node (sent plus '
      'received), float32 messages. Measured: lowered shard_map programs on '
      'a CPU mesh read by optax_zoo.wire_bytes. Modelled: '
      'optax_zoo.busiest_node_bytes and the alpha-beta model '
      'optax_zoo.alpha_beta_time (no network contention, no compute, no '
      'overlap with the backward pass). Not counted: the compute of a step '
      'and D-PSGD needing more steps than all-reduce to reach the same loss '
      '(its iterates are not averaged exactly). A parameter server is a '
      'separate node, modelled only.'
    ),
    'measured': measured,
    'modelled': {},
  }
  _lib.save(NAME, result | {'claims': {}})
  for label, params in sizes.items():
    result['modelled'][label] = {
      'num_params': params,
      'message_bytes': 4 * params,
      'patterns': model(4 * params, args.workers),
    }
  result['claims'] = claims(
    result['modelled'][next(iter(sizes))]['patterns'], measured
  )
  _lib.save(NAME, result)
  print(table(result))
  plot(result)


if __name__ == '__main__':
  main()
