"""Optimizer step time of every adaptive method, as ratios, on one CPU.

For each ``optax_zoo.methods('adaptive')`` entry (built with `info.build()`)
one jitted ``update`` + ``apply_updates`` step on a ~10M-parameter float32
tree (an embedding, four transformer-like blocks of matrices, biases and norm
scales, a head), with parameters and state donated. Within each repeat the
method, a second instance of ``optax.adam``, a streaming ``x * c + y`` (the
copy bandwidth) and the PyTorch counterpart (``foreach=True``, as many threads
as this process may use) each run ``--steps`` steps, so every ratio is paired
within one repeat and the table reports its median over repeats:

- x adam: step time over ``optax.adam``'s;
- x floor: step time over the memory-traffic floor, the bytes a fused step
  must move (parameters in and out, gradients in, state in and out) over the
  measured copy bandwidth. Methods with per-layer norms (lamb, lars,
  novograd, ...) need a second pass over the data and sit above it; below a
  few million parameters the tree fits in cache and the ratio can fall
  under 1;
- x torch: step time over the PyTorch counterpart's ('-' where none exists).

Both sides get the cores this process may use (``taskset`` chooses them):
XLA:CPU sizes its thread pool from them and splits large fusions over it,
PyTorch gets as many ``torch.set_num_threads``. The JSON's ``busy_threads``
(CPU time over wall time) shows how many each kept busy. On a CPU shared
with other jobs PyTorch's threads wait on each other at every op (up to 100x
slower), so time there on one core: ``taskset -c 0 python -m ...``.

Writes ``experiments/results/perf_adaptive.json`` after each method and the
Markdown table to ``perf_adaptive.md`` next to it (also printed).

  python -m experiments.perf.adaptive_step_time
  python -m experiments.perf.adaptive_step_time --params 100000 \\
      --methods adam,sgd --repeats 2 --steps 3
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.metadata
import importlib.util
import math
import os
import pathlib
import platform
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

import optax_zoo
from experiments import _lib
from optax_zoo._src.test_utils import state_bytes

VOCAB, CLASSES, BLOCKS = 1024, 1000, 4
# The bandwidth probe streams at least this many floats per array (3 arrays
# of 64 MiB), more than this machine's L3 cache, so it measures memory.
MIN_COPY_FLOATS = 2**24

# Registry name -> (PyTorch class, keyword arguments): the configuration that
# does the same work per step as the registry's example hyperparameters.
TORCH_COUNTERPARTS = {
  'adam': ('torch.optim.Adam', {}),
  'adamax': ('torch.optim.Adamax', {}),
  'adamw': ('torch.optim.AdamW', {'weight_decay': 1e-4}),
  'radam': ('torch.optim.RAdam', {}),
  'nadam': ('torch.optim.NAdam', {}),
  # torch's Adafactor, like optax's default, keeps no first moment.
  'adafactor': ('torch.optim.Adafactor', {}),
  'novograd': ('pytorch_optimizer.NovoGrad', {}),
  # No global gradient clipping: optax_zoo's lamb does not clip either.
  'lamb': ('pytorch_optimizer.Lamb', {'max_grad_norm': 0.0}),
  # LAMBC's trust-ratio clip is one scalar op per layer over Lamb's work.
  'lambc': ('pytorch_optimizer.Lamb', {'max_grad_norm': 0.0}),
  'lars': ('pytorch_optimizer.LARS', {}),
  'adan': ('pytorch_optimizer.Adan', {}),
  'sgd': ('torch.optim.SGD', {'momentum': 0.9}),
  'sign_sgd': ('pytorch_optimizer.SignSGD', {'momentum': 0.0}),
  'signum': ('pytorch_optimizer.SignSGD', {'momentum': 0.9}),
  'diffgrad': ('pytorch_optimizer.DiffGrad', {}),
  'pnm': ('pytorch_optimizer.PNM', {}),
  'adapnm': ('pytorch_optimizer.AdaPNM', {}),
}

Runner = Callable[[int], float]


def tree_shapes(num_params: int) -> dict[str, Any]:
  """Layer shapes of about ``num_params`` parameters, nested like flax's.

  The width ``d`` solves ``48 d^2 + (VOCAB + CLASSES + 52) d + CLASSES =
  num_params``: per block a (d, 3d) attention projection, a (d, d) output,
  a (d, 4d) and a (4d, d) MLP, their biases and two norms' scales and biases.
  """
  a, b, c = 12 * BLOCKS, VOCAB + CLASSES + 13 * BLOCKS, CLASSES - num_params
  d = max(1, round((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)))

  def dense(n_in, n_out):
    return {'kernel': (n_in, n_out), 'bias': (n_out,)}

  def norm():
    return {'scale': (d,), 'bias': (d,)}

  block = {
    'qkv': dense(d, 3 * d),
    'out': dense(d, d),
    'norm1': norm(),
    'mlp_in': dense(d, 4 * d),
    'mlp_out': dense(4 * d, d),
    'norm2': norm(),
  }
  return {
    'embed': {'embedding': (VOCAB, d)},
    **{f'block_{i}': block for i in range(BLOCKS)},
    'head': dense(d, CLASSES),
  }


def random_tree(shapes: Any, seed: int, scale: float) -> Any:
  """Float32 NumPy arrays of the given shapes, normal with std ``scale``."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda s: scale * rng.standard_normal(s, np.float32),
    shapes,
    is_leaf=lambda x: isinstance(x, tuple),
  )


def jax_runner(
  tx: optax.GradientTransformation,
  params: Any,
  grads: Any,
  extra_args: tuple[str, ...] = (),
) -> tuple[Runner, Callable[[], Any]]:
  """A timed loop of ``tx``'s jitted step on its own copy of ``params``.

  Returns:
    ``run(steps) -> seconds per step`` and a function returning the current
    optimizer state. ``extra_args`` are passed to ``update`` as scalars 1.0.
  """

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, state, grads, extra):
    updates, state = tx.update(grads, state, params, **extra)
    return optax.apply_updates(params, updates), state

  params = jax.tree.map(jnp.array, params)
  grads = jax.tree.map(jnp.asarray, grads)
  extra = {name: jnp.ones((), jnp.float32) for name in extra_args}
  state = tx.init(params)

  def run(steps):
    nonlocal params, state
    start = time.perf_counter()
    for _ in range(steps):
      params, state = step(params, state, grads, extra)
    jax.block_until_ready((params, state))
    return (time.perf_counter() - start) / steps

  return run, lambda: state


def copy_runner(num_floats: int) -> tuple[Runner, int]:
  """A timed streaming ``x * c + y``; returns it and the bytes it moves."""

  @functools.partial(jax.jit, donate_argnums=0)
  def stream(x, y):
    return x * 1.0001 + y

  x = jnp.ones(num_floats, jnp.float32)
  y = jnp.full(num_floats, 1e-3, jnp.float32)

  def run(steps):
    nonlocal x
    start = time.perf_counter()
    for _ in range(steps):
      x = stream(x, y)
    x.block_until_ready()
    return (time.perf_counter() - start) / steps

  return run, 3 * 4 * num_floats


def torch_counterpart(name: str) -> str | None:
  """The PyTorch class compared with ``name``, if it and torch are here."""
  if name not in TORCH_COUNTERPARTS:
    return None
  path, _ = TORCH_COUNTERPARTS[name]
  module = path.rsplit('.', 1)[0].split('.')[0]
  return path if importlib.util.find_spec(module) else None


def torch_runner(name: str, params: Any, grads: Any, lr: float) -> Runner:
  """A timed loop of ``name``'s PyTorch counterpart, ``foreach=True``."""
  import torch

  path, kwargs = TORCH_COUNTERPARTS[name]
  module, cls = path.rsplit('.', 1)
  make = getattr(importlib.import_module(module), cls)
  tensors = []
  for p, g in zip(jax.tree.leaves(params), jax.tree.leaves(grads), strict=True):
    t = torch.nn.Parameter(torch.from_numpy(np.array(p)))
    t.grad = torch.from_numpy(np.array(g))
    tensors.append(t)
  optimizer = make(tensors, lr=lr, foreach=True, **kwargs)

  def run(steps):
    start = time.perf_counter()
    for _ in range(steps):
      optimizer.step()
    return (time.perf_counter() - start) / steps

  return run


def time_interleaved(
  runners: dict[str, Runner], repeats: int, steps: int
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
  """Seconds per step of each runner in each repeat, runners interleaved.

  Returns:
    The per-repeat times, and each runner's median busy threads (process
    CPU time over wall time: how many cores its step actually used).
  """
  for run in runners.values():
    run(2)  # compiles and allocates the state
  times = {k: [] for k in runners}
  busy = {k: [] for k in runners}
  for _ in range(repeats):
    for name, run in runners.items():
      cpu = time.process_time()
      seconds = run(steps)
      times[name].append(seconds)
      busy[name].append((time.process_time() - cpu) / (seconds * steps))
  return (
    {k: np.array(v) for k, v in times.items()},
    {k: float(np.median(v)) for k, v in busy.items()},
  )


def benchmark(
  info: optax_zoo.MethodInfo,
  params: Any,
  grads: Any,
  references: dict[str, Runner],
  copy_bytes: int,
  *,
  repeats: int,
  steps: int,
) -> dict[str, Any]:
  """One method's step times and ratios (medians over ``repeats``)."""
  run, state = jax_runner(info.build(), params, grads, info.extra_args)
  runners = {'method': run, **references}
  counterpart = torch_counterpart(info.name)
  if counterpart:
    runners['torch'] = torch_runner(
      info.name, params, grads, info.learning_rate
    )
  times, busy = time_interleaved(runners, repeats, steps)
  param_bytes = sum(np.asarray(p).nbytes for p in jax.tree.leaves(params))
  num_params = sum(np.size(p) for p in jax.tree.leaves(params))
  s_bytes = state_bytes(state())
  step_bytes = 3 * param_bytes + 2 * s_bytes
  bandwidth = copy_bytes / times['copy']
  entry = {
    'ms_per_step': 1e3 * float(np.median(times['method'])),
    'x_adam': float(np.median(times['method'] / times['adam'])),
    'x_floor': float(np.median(times['method'] * bandwidth / step_bytes)),
    'floor_ms': 1e3 * float(np.median(step_bytes / bandwidth)),
    'bytes_per_step': step_bytes,
    'state_bytes_per_param': s_bytes / num_params,
    'bandwidth_gb_s': float(np.median(bandwidth)) / 1e9,
    'torch_counterpart': counterpart,
    'torch_ms_per_step': None,
    'x_torch': None,
    'busy_threads': busy,
    'times_ms': {k: (1e3 * v).tolist() for k, v in times.items()},
  }
  if counterpart:
    entry['torch_ms_per_step'] = 1e3 * float(np.median(times['torch']))
    entry['x_torch'] = float(np.median(times['method'] / times['torch']))
  return entry


def machine_info(threads: int) -> dict[str, Any]:
  """CPU model, cores, thread settings and library versions."""
  model = platform.processor() or platform.machine()
  cpuinfo = pathlib.Path('/proc/cpuinfo')
  if cpuinfo.exists():
    for line in cpuinfo.read_text().splitlines():
      if line.startswith('model name'):
        model = line.split(':', 1)[1].strip()
        break
  versions = {'python': platform.python_version()}
  for name in ('jax', 'jaxlib', 'optax', 'torch', 'pytorch_optimizer'):
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return {
    'cpu': model,
    'cores_usable': threads,
    'cpu_count': os.cpu_count(),
    'torch_threads': threads,
    'jax_device': str(jax.devices()[0]),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'versions': versions,
  }


def markdown(result: dict[str, Any]) -> str:
  """The results table, with one line of setting above it."""

  def fmt(x, spec):
    return '-' if x is None else format(x, spec)

  config, machine = result['config'], result['machine']
  lines = [
    f'{config["num_params"]:,} float32 parameters in '
    f'{config["num_leaves"]} arrays; {machine["cpu"]}, '
    f'{machine["cores_usable"]} cores, torch threads '
    f'{machine["torch_threads"]}; median of {config["repeats"]} repeats of '
    f'{config["steps"]} steps.',
    '',
    '| method | ms/step | x adam | x floor | torch ms/step | x torch '
    '| state B/param |',
    '|---|---|---|---|---|---|---|',
  ]
  for name, r in result['methods'].items():
    lines.append(
      f'| {name} | {r["ms_per_step"]:.2f} | {r["x_adam"]:.2f} '
      f'| {r["x_floor"]:.2f} | {fmt(r["torch_ms_per_step"], ".2f")} '
      f'| {fmt(r["x_torch"], ".2f")} | {r["state_bytes_per_param"]:.2f} |'
    )
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--methods', default='all')
  parser.add_argument('--params', type=int, default=10_000_000)
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument(
    '--min-copy-floats',
    type=int,
    default=MIN_COPY_FLOATS,
    help='floats per array of the bandwidth probe, at least',
  )
  parser.add_argument(
    '--out',
    type=pathlib.Path,
    default=None,
    help='the JSON (default: perf_adaptive.json in the results)',
  )
  args = parser.parse_args(argv)
  args.out = args.out or _lib.result_path('perf_adaptive')
  infos = (
    optax_zoo.methods('adaptive')
    if args.methods == 'all'
    else [optax_zoo.get(name) for name in args.methods.split(',')]
  )
  threads = len(os.sched_getaffinity(0))
  if importlib.util.find_spec('torch'):
    import torch

    torch.set_num_threads(threads)
  shapes = tree_shapes(args.params)
  params = random_tree(shapes, seed=0, scale=0.02)
  grads = random_tree(shapes, seed=1, scale=1e-3)
  num_params = sum(p.size for p in jax.tree.leaves(params))
  copy, copy_bytes = copy_runner(max(num_params, args.min_copy_floats))
  references = {
    'adam': jax_runner(optax.adam(1e-3), params, grads)[0],
    'copy': copy,
  }
  result = {
    'config': {
      **{k: v for k, v in vars(args).items() if k != 'out'},
      'num_params': num_params,
      'num_leaves': len(jax.tree.leaves(params)),
      'copy_bytes': copy_bytes,
    },
    'machine': machine_info(threads),
    'methods': {},
  }
  for info in (bar := tqdm(infos, unit='method')):
    bar.set_description(info.name)
    result['methods'][info.name] = benchmark(
      info,
      params,
      grads,
      references,
      copy_bytes,
      repeats=args.repeats,
      steps=args.steps,
    )
    _lib.write_json(args.out, result)
  table = markdown(result)
  args.out.with_suffix('.md').write_text(table + '\n')
  print(table)


if __name__ == '__main__':
  main()
