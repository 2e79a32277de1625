"""Step time of gossip and compressed averaging against all-reduce on an
8-device CPU mesh, as ratios.

  python -m experiments.perf.mesh_throughput

One data-parallel training step (forward, backward, the averaging method,
SGD) of the same MLP 40-``width``-``width``-10 on random MNIST-1D shaped
data (``--batch`` examples per worker, a different batch on each worker),
as one jitted `jax.shard_map` program over ``--devices`` CPU devices, one
worker per device. The parameters are one flat float32 vector per worker
(unravelled inside the loss), so a compressor sees the whole model:

- ``all_reduce_mean``: `optax_zoo.all_reduce_mean` (a float32 all-reduce);
- ``gossip_ring``: `optax_zoo.gossip` on `optax_zoo.ring` (D-PSGD, two
  collective-permutes of the parameters);
- ``natural``: `optax_zoo.compressed_mean` with `natural_compressor`
  (uint8 all-gather of 9-bit codes, decoded on every worker);
- ``top_k``: `compressed_mean` with `top_k_compressor` keeping
  ``--top-k-fraction`` of the coordinates (float32 values and int32
  indices, all-gathered).

Each runner compiles once and takes two warm-up steps; then, runners
interleaved, ``--repeats`` timings of ``--steps`` steps each. The JSON
reports medians, the ratio of each runner's median step time to
all-reduce's, and the bytes each step's program moves
(`optax_zoo.wire_bytes`).

What this measures: the 8 "devices" are XLA host-platform devices in one
process, sharing the machine's CPU cores (2 here), and their collectives
are memory copies. So the ratios are the compute overhead of each
algorithm (compressing, decoding n payloads, mixing), not the network time
a real cluster saves by sending fewer bytes: see
`experiments.distributed.communication` for that, modelled.

The device count is fixed when JAX starts: the timing runs in a child
process with ``XLA_FLAGS=--xla_force_host_platform_device_count``. Writes
``experiments/results/perf_mesh.json`` and prints a table.

  python -m experiments.perf.mesh_throughput --devices 2 --steps 2 \\
      --repeats 1 --width 16
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any

NAME = 'perf_mesh'
RUNNERS = ('all_reduce_mean', 'gossip_ring', 'natural', 'top_k')
FEATURES, CLASSES, LEARNING_RATE = 40, 10, 0.1
ROOT = pathlib.Path(__file__).resolve().parents[2]


def _transform(name: str, n: int, num_params: int, fraction: float):
  import optax

  import optax_zoo as oz

  sgd = optax.sgd(LEARNING_RATE)
  if name == 'all_reduce_mean':
    return oz.all_reduce_mean('w', inner=sgd)
  if name == 'gossip_ring':
    return oz.gossip(oz.ring(n), 'w', inner=sgd)
  if name == 'natural':
    return optax.chain(oz.compressed_mean(oz.natural_compressor(), 'w'), sgd)
  k = max(1, round(fraction * num_params))
  return optax.chain(oz.compressed_mean(oz.top_k_compressor(k), 'w'), sgd)


def _init_mlp(width: int):
  import jax.flatten_util
  import numpy as np

  rng = np.random.default_rng(0)
  sizes = (FEATURES, width, width, CLASSES)
  params = {}
  for i, (a, b) in enumerate(itertools.pairwise(sizes)):
    params[f'w{i}'] = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(
      np.float32
    )
    params[f'b{i}'] = np.zeros(b, np.float32)
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  return np.asarray(flat), unravel


def _timed_loop(compiled, x, s, data):
  """``run(steps) -> seconds per step``; the step donates ``x`` and ``s``."""
  import jax

  def run(steps):
    nonlocal x, s
    start = time.perf_counter()
    for _ in range(steps):
      x, s = compiled(x, s, data)
    jax.block_until_ready((x, s))
    return (time.perf_counter() - start) / steps

  return run


def time_runners(args) -> dict[str, Any]:
  """Times every runner on this process's devices (the child's work)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from jax.sharding import PartitionSpec as P

  import optax_zoo as oz

  n = args.devices
  if jax.device_count() < n:
    raise ValueError(f'need {n} devices, have {jax.device_count()}.')
  flat, unravel = _init_mlp(args.width)
  d = flat.size

  def loss(x, xb, yb):
    p = unravel(x)
    h = xb
    for i in range(2):
      h = jax.nn.relu(h @ p[f'w{i}'] + p[f'b{i}'])
    logits = h @ p['w2'] + p['b2']
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

  mesh = oz.worker_mesh(n, 'w')
  rng = np.random.default_rng(1)
  data = oz.shard_workers(
    {
      'x': rng.standard_normal((n, args.batch, FEATURES), np.float32),
      'y': rng.integers(0, CLASSES, (n, args.batch)).astype(np.int32),
    },
    mesh,
  )
  runners, wire = {}, {}
  for name in args.runners.split(','):
    tx = _transform(name, n, d, args.top_k_fraction)
    state = jax.eval_shape(tx.init, jax.ShapeDtypeStruct((d,), jnp.float32))
    # Plain SGD keeps no per-worker state: every leaf (gossip's and the
    # compressors' count and step key) is replicated.
    specs = jax.tree.map(lambda _: P(), state)

    def step(x, s, batch, tx=tx):
      g = jax.grad(loss)(x, batch['x'], batch['y'])
      u, s = tx.update(g, s, x)
      return optax.apply_updates(x, u), s

    mapped = oz.worker_map(
      step,
      mesh,
      in_specs=(P('w'), specs, P('w')),
      out_specs=(P('w'), specs),
    )
    x = oz.shard_workers(np.broadcast_to(flat, (n, d)).copy(), mesh)
    s = oz.replicate_on_mesh(tx.init(jnp.asarray(flat)), mesh)
    jitted = jax.jit(mapped, donate_argnums=(0, 1))
    lowered = jitted.lower(x, s, data)
    w = oz.wire_bytes(lowered)
    wire[name] = {'busiest_bytes': w.busiest, 'per_worker_sent': w.per_worker}
    compiled = lowered.compile()

    runners[name] = _timed_loop(compiled, x, s, data)
  for run in runners.values():
    run(2)
  times = {k: [] for k in runners}
  for _ in range(args.repeats):
    for name, run in runners.items():
      times[name].append(run(args.steps))
  med = {k: float(np.median(v)) for k, v in times.items()}
  base = med.get('all_reduce_mean')
  return {
    'num_params': int(d),
    'ms_per_step': {k: 1e3 * v for k, v in med.items()},
    'ratio_to_all_reduce': {
      k: v / base for k, v in med.items() if base is not None
    },
    'wire_bytes': wire,
    'times_ms': {k: [1e3 * t for t in v] for k, v in times.items()},
    'jax_devices': [str(x) for x in jax.devices()[:n]],
  }


def run_in_child(argv: list[str], devices: int) -> dict[str, Any]:
  env = dict(os.environ)
  env['XLA_FLAGS'] = (
    env.get('XLA_FLAGS', '')
    + f' --xla_force_host_platform_device_count={devices}'
  )
  env['JAX_PLATFORMS'] = 'cpu'
  done = subprocess.run(
    [sys.executable, '-m', 'experiments.perf.mesh_throughput', *argv],
    env=env,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=1800,
    check=False,
  )
  if done.returncode != 0:
    raise RuntimeError(f'mesh timing failed:\n{done.stderr[-4000:]}')
  return json.loads(done.stdout.strip().splitlines()[-1])


def table(result: dict[str, Any]) -> str:
  c, m = result['config'], result['measured']
  lines = [
    f'{c["devices"]} CPU devices sharing {result["machine"]["cores"]} '
    f'cores; MLP {m["num_params"]} params, batch {c["batch"]} per worker; '
    f'median of {c["repeats"]} x {c["steps"]} steps.',
    '',
    '| runner | ms / step | x all-reduce | busiest bytes / step |',
    '|---|---|---|---|',
  ]
  for k, ms in m['ms_per_step'].items():
    ratio = m['ratio_to_all_reduce'].get(k)
    lines.append(
      f'| {k} | {ms:.3f} | {"-" if ratio is None else f"{ratio:.2f}"} | '
      f'{m["wire_bytes"][k]["busiest_bytes"]:,.0f} |'
    )
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--devices', type=int, default=8)
  parser.add_argument('--width', type=int, default=256)
  parser.add_argument('--batch', type=int, default=64, help='per worker')
  parser.add_argument('--top-k-fraction', type=float, default=0.01)
  parser.add_argument('--repeats', type=int, default=7)
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument(
    '--runners',
    default=','.join(RUNNERS),
    help='comma-separated subset of ' + ','.join(RUNNERS),
  )
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  unknown = set(args.runners.split(',')) - set(RUNNERS)
  if unknown:
    raise ValueError(f'`--runners` must be among {RUNNERS}, got {unknown}.')
  if args.devices < 3:
    raise ValueError(f'`--devices` must be >= 3 (a ring), got {args.devices}.')
  if args.child:
    print(json.dumps(time_runners(args)))
    return
  from experiments import _lib

  child_argv = [*(argv if argv is not None else sys.argv[1:]), '--child']
  result = {
    'config': {k: v for k, v in vars(args).items() if k != 'child'},
    'machine': {
      'cores': len(os.sched_getaffinity(0)),
      'cpu_count': os.cpu_count(),
      'load_average_1m_at_start': os.getloadavg()[0],
    },
    'setting': (
      f'{args.devices} XLA host-platform CPU devices in one process share '
      f'{len(os.sched_getaffinity(0))} cores and their collectives are '
      'memory copies: the ratios measure the compute overhead of each '
      'averaging algorithm (compression, decoding, mixing), not the network '
      'time fewer bytes save on a real cluster.'
    ),
  }
  result['measured'] = run_in_child(child_argv, args.devices)
  result['machine']['load_average_1m_after'] = os.getloadavg()[0]
  _lib.save(NAME, result)
  print(table(result))


if __name__ == '__main__':
  main()
