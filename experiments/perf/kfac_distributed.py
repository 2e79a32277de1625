"""D-KFAC against DP-KFAC per worker: factor compute, wire bytes, memory.

  python -m experiments.perf.kfac_distributed

One data-parallel K-FAC step (forward and backward with the K-FAC
statistics, the distributed preconditioner, SGD) of an MLP with layers of
unequal sizes (40-``width``-``width``/2-``width``/4-10) on random
MNIST-1D-shaped data, ``--batch`` examples per worker, as one jitted
`jax.shard_map` program over ``--devices`` CPU devices, with the inverses
refreshed every step (``inverse_every=1``: every step is a second-order
update, the unit of the paper's comparison). Per worker, for D-KFAC
(`optax_zoo.dkfac`) and DP-KFAC (`optax_zoo.dp_kfac`):

- factor FLOPs (`optax_zoo.kfac_worker_costs`): building the factors,
  2 n (d_A^2 + d_G^2) per layer for n rows, plus inverting them, (d_A^3 +
  d_G^3) per layer (Cholesky and triangular solves, constant factors
  dropped); D-KFAC: all layers on every worker; DP-KFAC: the busiest
  worker's assigned layers;
- wire bytes: read from the lowered program (`optax_zoo.wire_bytes`);
- factor memory: the factor and inverse bytes the optimizer state holds
  per worker (DP-KFAC packs only the worker's own layers, padded to the
  largest share), checked against `optax_zoo.kfac_worker_costs`;
- step time: median over repeats (8 XLA host devices sharing the machine's
  cores: indicative of compute, not of a network).

The device count is fixed when JAX starts, so the measurement runs in a
child process with ``--xla_force_host_platform_device_count``. Writes
``experiments/results/perf_kfac_distributed.json`` and a ``.md`` table.

  python -m experiments.perf.kfac_distributed --devices 2 --width 32 \\
      --repeats 1 --steps 1
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

NAME = 'perf_kfac_distributed'
ROOT = pathlib.Path(__file__).resolve().parents[2]
VARIANTS = ('dkfac', 'dp_kfac')


def measure(args) -> dict[str, Any]:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from flax import nnx
  from jax.sharding import AxisType
  from jax.sharding import PartitionSpec as P

  import optax_zoo

  n, ax = args.devices, 'workers'
  mesh = jax.make_mesh((n,), (ax,), axis_types=(AxisType.Auto,))
  w = args.width
  sizes = (40, w, w // 2, w // 4, 10)
  rngs = nnx.Rngs(0)
  layers = []
  for a, b in itertools.pairwise(sizes):
    layers += [nnx.Linear(a, b, rngs=rngs), nnx.relu]
  model = nnx.Sequential(*layers[:-1])
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = jax.random.normal(jax.random.key(0), (n * args.batch, 40))
  y = jax.random.randint(jax.random.key(1), (n * args.batch,), 0, 10)

  def ce(m, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

  kfac_layers = optax_zoo.kfac_layers(params)
  assignment = optax_zoo.kfac_assignment(
    params, n, rows=args.batch, inverse_every=1
  )
  out: dict[str, Any] = {
    'num_params': int(sum(a.size for a in jax.tree.leaves(params))),
    'layers': {k: list(v.dims) for k, v in kfac_layers.items()},
    'assignment': assignment,
  }

  costs = {
    variant: optax_zoo.kfac_worker_costs(
      params,
      variant,
      n,
      rows=args.batch,
      inverse_every=1,
      assignment=assignment if variant == 'dp_kfac' else None,
    )
    for variant in VARIANTS
  }
  # The busiest worker bounds the step.
  out['factor_flops'] = {k: float(max(c.flops(1))) for k, c in costs.items()}
  out['factor_memory_bytes'] = {}
  out['factor_memory_model_bytes'] = {
    k: float(4 * max(c.factor_floats)) for k, c in costs.items()
  }
  out['ms_per_step'], out['wire_bytes'] = {}, {}
  for variant in VARIANTS:
    kw = {'assignment': assignment} if variant == 'dp_kfac' else {}
    tx = getattr(optax_zoo, variant)(0.1, ax, inverse_every=1, **kw)

    def local(p, s, x, y, tx=tx):
      p = jax.lax.pcast(p, ax, to='varying')
      _, g, _, stats = optax_zoo.kfac_layer_stats(graphdef, p, rest, ce, x, y)
      u, s = tx.update(g, s, p, kfac_stats=stats)
      return optax.apply_updates(p, u), s

    # jit: one program, not a compilation per eager op.
    state = jax.jit(jax.vmap(lambda _, tx=tx: tx.init(params)))(jnp.arange(n))
    # The factor and inverse buffers the state holds, per worker (the
    # preconditioner's state is the chain's first: count, factors,
    # inverses).
    out['factor_memory_bytes'][variant] = float(
      sum(a.nbytes for a in jax.tree.leaves(state[0][1:])) / n
    )
    model_bytes = out['factor_memory_model_bytes'][variant]
    if out['factor_memory_bytes'][variant] != model_bytes:
      raise RuntimeError(
        f'{variant}: the state holds {out["factor_memory_bytes"][variant]} '
        f'factor bytes per worker, kfac_worker_costs says {model_bytes}.'
      )
    specs = jax.tree.map(lambda _: P(ax), state)

    # The new parameters leave per worker (equal on all), so the program
    # has no collective beyond the method's own.
    def local_state(p, s, x, y, local=local):
      s = jax.tree.map(lambda t: t[0], s)
      p, s = local(p, s, x, y)
      return jax.tree.map(lambda t: t[None], (p, s))

    step = jax.jit(
      jax.shard_map(
        local_state,
        mesh=mesh,
        in_specs=(P(), specs, P(ax), P(ax)),
        out_specs=(jax.tree.map(lambda _: P(ax), params), specs),
      )
    )
    wire = optax_zoo.wire_bytes(step, params, state, x, y)
    out['wire_bytes'][variant] = float(wire.per_worker)
    s = state
    for _ in range(2):
      _, s = jax.block_until_ready(step(params, s, x, y))
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      for _ in range(args.steps):
        _, s = jax.block_until_ready(step(params, s, x, y))
      times.append((time.perf_counter() - t0) / args.steps)
    out['ms_per_step'][variant] = 1000 * float(np.median(times))
  return out


def table(result: dict[str, Any]) -> str:
  m, c = result['measured'], result['config']
  ratio = lambda d, a, b: d[a] / d[b] if d[b] else float('nan')
  rows = [
    f'{c["devices"]} CPU devices in one process, MLP of {m["num_params"]:,} '
    f'parameters, {c["batch"]} examples per worker, inverses every step.',
    '',
    '| per worker, one second-order update | D-KFAC | DP-KFAC | D/DP | '
    'paper (D/DP) |',
    '|---|---|---|---|---|',
    f'| factor FLOPs | {m["factor_flops"]["dkfac"]:.3g} | '
    f'{m["factor_flops"]["dp_kfac"]:.3g} | '
    f'{ratio(m["factor_flops"], "dkfac", "dp_kfac"):.2f} | 1.55-1.65 |',
    f'| wire bytes | {m["wire_bytes"]["dkfac"]:,.0f} | '
    f'{m["wire_bytes"]["dp_kfac"]:,.0f} | '
    f'{ratio(m["wire_bytes"], "dkfac", "dp_kfac"):.2f} | 2.79-3.15 |',
    f'| factor memory (bytes of state) | '
    f'{m["factor_memory_bytes"]["dkfac"]:,.0f} | '
    f'{m["factor_memory_bytes"]["dp_kfac"]:,.0f} | '
    f'{ratio(m["factor_memory_bytes"], "dkfac", "dp_kfac"):.2f} | '
    '1.14-1.47 |',
    f'| step time (ms, shared CPU) | {m["ms_per_step"]["dkfac"]:.2f} | '
    f'{m["ms_per_step"]["dp_kfac"]:.2f} | '
    f'{ratio(m["ms_per_step"], "dkfac", "dp_kfac"):.2f} | - |',
  ]
  return '\n'.join(rows)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--devices', type=int, default=8)
  parser.add_argument('--width', type=int, default=512)
  parser.add_argument('--batch', type=int, default=128, help='per worker')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.devices < 2:
    raise ValueError(f'`--devices` must be >= 2, got {args.devices}.')
  if args.child:
    print(json.dumps(measure(args)))
    return
  from experiments import _lib

  env = dict(os.environ)
  env['XLA_FLAGS'] = (
    env.get('XLA_FLAGS', '')
    + f' --xla_force_host_platform_device_count={args.devices}'
  )
  env['JAX_PLATFORMS'] = 'cpu'
  child = [*(argv if argv is not None else sys.argv[1:]), '--child']
  done = subprocess.run(
    [sys.executable, '-m', 'experiments.perf.kfac_distributed', *child],
    env=env,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=1800,
    check=False,
  )
  if done.returncode != 0:
    raise RuntimeError(f'K-FAC mesh run failed:\n{done.stderr[-4000:]}')
  result = {
    'config': {k: v for k, v in vars(args).items() if k != 'child'},
    'machine': {'cores': len(os.sched_getaffinity(0))},
    'measured': json.loads(done.stdout.strip().splitlines()[-1]),
  }
  _lib.save(NAME, result)
  text = table(result)
  _lib.result_path(NAME).with_suffix('.md').write_text(text + '\n')
  print(text)


if __name__ == '__main__':
  main()
