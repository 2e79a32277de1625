"""Private training throughput against Opacus, as ratios, on one CPU.

Examples per second of one whole training step (forward, per-example
clipping, Gaussian noise, the SGD update) on the same architectures in both
libraries, on MNIST-1D shaped inputs ``(N, 40)`` with 10 classes:

- ``mlp``: Linear 40-256-256-10 with ReLUs (``--width``);
- ``cnn``: two 1-D convolutions (``--channels`` filters of width 5, 'SAME'
  padding), each followed by ReLU and max pooling by 2, then a Linear
  ``10 * channels -> 10``; no normalization layers. Flax ``nnx.Conv``
  works channels-last, torch ``nn.Conv1d`` channels-first: the same layer
  sizes and FLOPs, a different flattening order before the head.

The inputs are random (standard normal features, uniform labels): the step
time does not depend on the values. Every batch is on the device before the
clock starts; each runner reuses one batch.

Runners, per model (``--batch`` examples a step):

- ``nonprivate``: ``jax.grad`` of the mean loss + ``optax_zoo.sgd``, jitted;
- ``vmap``: `optax_zoo.privacy.model_clipped_grad_sum(..., method='vmap')`
  (materialized per-example gradients) + `optax_zoo.privacy.dp_aggregate`
  + ``optax_zoo.sgd``, one jitted step with parameters and state donated;
- ``vmap_mb<k>``: the same with ``microbatch_size=k`` (``--microbatch``);
- ``ghost``: the same with ``method='ghost'`` (ghost clipping); its
  executable also holds the vmap path, the ``lax.cond`` fallback taken only
  when the weighted sum is non-finite;
- ``ghost_nofallback``: `optax_zoo.privacy.ghost_clipped_grad_sum` with
  ``nonfinite_fallback=False`` (no vmap branch compiled in);
- ``opacus_hooks``: ``opacus.PrivacyEngine.make_private(...,
  grad_sample_mode='hooks')`` (``GradSampleModule``, per-sample gradients
  from hooks) with ``torch.optim.SGD``;
- ``opacus_ghost``: ``make_private(..., grad_sample_mode='ghost')``
  (``GradSampleModuleFastGradientClipping`` with the
  ``DPLossFastGradientClipping`` criterion it returns: ghost norms for
  Linear, materialized per-sample gradients for Conv1d, then a second
  backward of the rescaled loss).

Both sides use ``noise_multiplier=1.0``, ``clip_norm=1.0``, lr 0.1; PyTorch
gets ``torch.set_num_threads`` equal to the cores this process may use
(``taskset`` chooses them), the size of XLA:CPU's thread pool. Within a
repeat every runner runs ``--steps`` steps (runners interleaved, after
two warm-up steps each that also compile), so ratios are paired within a
repeat; the JSON reports medians over ``--repeats``:

- ``x_opacus_hooks`` / ``x_opacus_ghost``: our throughput over Opacus's;
- ``x_slower_than_nonprivate``: our non-private throughput over this
  runner's (the cost of privacy, 1 = free).

``best_examples_per_s`` is the fastest repeat's. On a CPU shared with other
jobs PyTorch's threads wait on each other at every op and its medians
scatter (up to 100x between repeats); time there on one core too:
``taskset -c 0 python -m experiments.perf.private_throughput``.

The issue's goal: at least 10x each Opacus mode and within 4x of our own
non-private step (``goal`` in the JSON, for the best private runner and for
each).

Memory: for each JAX step, XLA's compiled memory analysis
(``jax.jit(step).lower(...).compile().memory_analysis()``): the sizes of
the buffers XLA's buffer assignment allocates for that one executable,
known at compile time (``temp`` is the scratch space for intermediates,
reused across non-overlapping live ranges; ``argument`` and ``output`` the
inputs and results, ``alias`` the donated part counted in both). ``peak``
here is ``argument + output - alias + temp``: an upper bound on what the
step holds at once, not a measured resident set, and it excludes the
runtime's own allocations. Compare ``vmap`` with ``vmap_mb<k>`` for what
microbatching saves.

Writes ``experiments/results/perf_private.json`` after each model and
prints a table.

  python -m experiments.perf.private_throughput
  python -m experiments.perf.private_throughput --steps 2 --repeats 1 \\
      --batch 8 --models mlp
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import os
import pathlib
import platform
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import optax_zoo
from experiments import _lib
from optax_zoo import privacy

FEATURES, CLASSES, KERNEL = 40, 10, 5
CLIP_NORM, NOISE_MULTIPLIER, LEARNING_RATE = 1.0, 1.0, 0.1

Runner = Callable[[int], float]
RUNNERS = (
  'nonprivate',
  'vmap',
  'vmap_mb',
  'ghost',
  'ghost_nofallback',
  'opacus_hooks',
  'opacus_ghost',
)


# --- models -----------------------------------------------------------------


class MLP(nnx.Module):
  """Linear 40-width-width-10 with ReLUs."""

  def __init__(self, width: int, *, rngs: nnx.Rngs):
    self.l1 = nnx.Linear(FEATURES, width, rngs=rngs)
    self.l2 = nnx.Linear(width, width, rngs=rngs)
    self.l3 = nnx.Linear(width, CLASSES, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.l1(x))
    x = nnx.relu(self.l2(x))
    return self.l3(x)


class CNN(nnx.Module):
  """Conv-ReLU-pool twice, then a Linear head; ``(..., 40)`` inputs."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(1, channels, (KERNEL,), padding='SAME', rngs=rngs)
    self.conv2 = nnx.Conv(
      channels, channels, (KERNEL,), padding='SAME', rngs=rngs
    )
    self.head = nnx.Linear(channels * (FEATURES // 4), CLASSES, rngs=rngs)

  def __call__(self, x):
    x = x.reshape(-1, FEATURES, 1)
    x = nnx.max_pool(nnx.relu(self.conv1(x)), (2,), (2,))
    x = nnx.max_pool(nnx.relu(self.conv2(x)), (2,), (2,))
    return self.head(x.reshape(x.shape[0], -1))


def flax_model(name: str, args) -> nnx.Module:
  rngs = nnx.Rngs(0)
  if name == 'mlp':
    return MLP(args.width, rngs=rngs)
  return CNN(args.channels, rngs=rngs)


def torch_model(name: str, args):
  """The same architecture in PyTorch (``nn.Linear`` / ``nn.Conv1d``)."""
  import torch
  from torch import nn

  torch.manual_seed(0)
  if name == 'mlp':
    return nn.Sequential(
      nn.Linear(FEATURES, args.width),
      nn.ReLU(),
      nn.Linear(args.width, args.width),
      nn.ReLU(),
      nn.Linear(args.width, CLASSES),
    )
  c = args.channels

  class TorchCNN(nn.Module):
    def __init__(self):
      super().__init__()
      self.conv1 = nn.Conv1d(1, c, KERNEL, padding=KERNEL // 2)
      self.conv2 = nn.Conv1d(c, c, KERNEL, padding=KERNEL // 2)
      self.pool = nn.MaxPool1d(2)
      self.head = nn.Linear(c * (FEATURES // 4), CLASSES)

    def forward(self, x):
      x = x.view(-1, 1, FEATURES)
      x = self.pool(torch.relu(self.conv1(x)))
      x = self.pool(torch.relu(self.conv2(x)))
      return self.head(x.flatten(1))

  return TorchCNN()


def random_batch(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Random MNIST-1D shaped data: x ``(batch, 40)`` float32, y int labels."""
  rng = np.random.default_rng(seed)
  return {
    'x': rng.standard_normal((batch, FEATURES), np.float32),
    'y': rng.integers(0, CLASSES, batch).astype(np.int32),
  }


# --- JAX steps --------------------------------------------------------------


def example_loss(model, example):
  """Cross-entropy of one example (``x`` of shape ``(40,)``)."""
  logits = model(example['x'][None])
  return optax.softmax_cross_entropy_with_integer_labels(
    logits, example['y'][None]
  ).sum()


def batch_loss(model, batch):
  logits = model(batch['x'])
  return optax.softmax_cross_entropy_with_integer_labels(
    logits, batch['y']
  ).mean()


def jax_step(model: nnx.Module, kind: str, microbatch: int | None, batch: int):
  """``(step, params, opt_state)`` for one runner kind.

  ``kind`` is 'nonprivate', 'vmap', 'ghost' or 'ghost_nofallback';
  ``step(params, opt_state,
  batch) -> (params, opt_state)`` is jitted with the first two donated.
  """
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  if kind == 'nonprivate':
    tx = optax_zoo.sgd(LEARNING_RATE)

    def grads_of(params, data):
      return jax.grad(lambda p: batch_loss(nnx.merge(graphdef, p, rest), data))(
        params
      )

  else:
    tx = optax.chain(
      privacy.dp_aggregate(
        clip_norm=CLIP_NORM,
        noise_multiplier=NOISE_MULTIPLIER,
        expected_batch_size=batch,
        key=jax.random.key(0),
      ),
      optax_zoo.sgd(LEARNING_RATE),
    )

    def grads_of(params, data):
      model = nnx.merge(graphdef, params, rest)
      common = dict(clip_norm=CLIP_NORM, microbatch_size=microbatch)
      if kind == 'ghost_nofallback':
        grad_sum, _ = privacy.ghost_clipped_grad_sum(
          model, example_loss, data, nonfinite_fallback=False, **common
        )
      else:
        grad_sum, _ = privacy.model_clipped_grad_sum(
          model, example_loss, data, method=kind, **common
        )
      return grad_sum

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, data):
    updates, opt_state = tx.update(grads_of(params, data), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return step, params, tx.init(params)


def memory(compiled) -> dict[str, int]:
  """XLA's compile-time buffer sizes of a compiled step (module docs)."""
  stats = compiled.memory_analysis()
  out = {
    'argument_bytes': int(stats.argument_size_in_bytes),
    'output_bytes': int(stats.output_size_in_bytes),
    'alias_bytes': int(stats.alias_size_in_bytes),
    'temp_bytes': int(stats.temp_size_in_bytes),
  }
  out['peak_bytes'] = (
    out['argument_bytes']
    + out['output_bytes']
    - out['alias_bytes']
    + out['temp_bytes']
  )
  return out


def jax_runner(model, kind, microbatch, data) -> tuple[Runner, dict]:
  """A timed loop of the jitted step and its compiled memory analysis."""
  batch = len(data['x'])
  step, params, opt_state = jax_step(model, kind, microbatch, batch)
  data = jax.device_put(data)
  params = jax.tree.map(jnp.array, params)
  # Compiled once, ahead of time: the memory analysis and the timed loop
  # use the same executable (donation included).
  start = time.perf_counter()
  step = step.lower(params, opt_state, data).compile()
  mem = memory(step) | {'compile_s': time.perf_counter() - start}

  def run(steps):
    nonlocal params, opt_state
    start = time.perf_counter()
    for _ in range(steps):
      params, opt_state = step(params, opt_state, data)
    jax.block_until_ready((params, opt_state))
    return (time.perf_counter() - start) / steps

  return run, mem


# --- Opacus steps -----------------------------------------------------------


def opacus_runner(name: str, mode: str, data, args) -> Runner:
  """A timed loop of Opacus's private step in ``grad_sample_mode=mode``."""
  import torch
  from opacus import PrivacyEngine

  # Opacus warns that secure RNG is off and that its full backward hooks
  # fire without input gradients: both expected here.
  warnings.filterwarnings('ignore', 'Secure RNG turned off')
  warnings.filterwarnings('ignore', 'Full backward hook is firing')

  x = torch.from_numpy(data['x'])
  y = torch.from_numpy(data['y']).long()
  model = torch_model(name, args)
  optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
  loader = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(x, y), batch_size=len(x)
  )
  engine = PrivacyEngine(accountant='rdp')
  made = engine.make_private(
    module=model,
    optimizer=optimizer,
    criterion=torch.nn.CrossEntropyLoss(),
    data_loader=loader,
    noise_multiplier=NOISE_MULTIPLIER,
    max_grad_norm=CLIP_NORM,
    grad_sample_mode=mode,
  )
  if mode == 'ghost':
    model, optimizer, criterion, _ = made
  else:
    (model, optimizer, _), criterion = made, torch.nn.CrossEntropyLoss()

  def run(steps):
    start = time.perf_counter()
    for _ in range(steps):
      optimizer.zero_grad(set_to_none=True)
      loss = criterion(model(x), y)
      loss.backward()
      optimizer.step()
    return (time.perf_counter() - start) / steps

  return run


# --- timing -----------------------------------------------------------------


def time_interleaved(
  runners: dict[str, Runner], repeats: int, steps: int
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
  """Seconds per step of each runner in each repeat, runners interleaved.

  Returns:
    The per-repeat times and each runner's median busy threads (process
    CPU time over wall time).
  """
  for run in runners.values():
    run(2)  # compiles (JAX) and allocates the gradient buffers (torch)
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


def benchmark(name: str, args) -> dict[str, Any]:
  """Throughputs, ratios and memory of every runner on model ``name``."""
  data = random_batch(args.batch)
  mb = args.microbatch
  wanted = set(args.runners.split(',')) | {'nonprivate'}
  unknown = wanted - set(RUNNERS)
  if unknown:
    raise ValueError(f'`--runners` must be among {RUNNERS}, got {unknown}.')
  # Runner name in the JSON -> (its --runners name, kind, microbatch_size).
  all_kinds = {
    'nonprivate': ('nonprivate', 'nonprivate', None),
    'vmap': ('vmap', 'vmap', None),
    f'vmap_mb{mb}': ('vmap_mb', 'vmap', mb),
    'ghost': ('ghost', 'ghost', None),
    'ghost_nofallback': ('ghost_nofallback', 'ghost_nofallback', None),
  }
  if not (mb and mb < args.batch and args.batch % mb == 0):
    del all_kinds[f'vmap_mb{mb}']
  kinds = {k: v[1:] for k, v in all_kinds.items() if v[0] in wanted}
  runners, mem = {}, {}
  for key, (kind, micro) in kinds.items():
    runners[key], mem[key] = jax_runner(
      flax_model(name, args), kind, micro, data
    )
  opacus_modes = [m for m in ('hooks', 'ghost') if f'opacus_{m}' in wanted]
  for mode in opacus_modes:
    runners[f'opacus_{mode}'] = opacus_runner(name, mode, data, args)
  times, busy = time_interleaved(runners, args.repeats, args.steps)
  eps = {k: args.batch / t for k, t in times.items()}
  ours_private = [k for k in kinds if k != 'nonprivate']
  entry = {
    'num_params': int(
      sum(p.size for p in jax.tree.leaves(nnx.state(flax_model(name, args))))
    ),
    'examples_per_s': {k: float(np.median(v)) for k, v in eps.items()},
    'ms_per_step': {k: 1e3 * float(np.median(v)) for k, v in times.items()},
    # The fastest repeat: less sensitive to other jobs on a shared CPU.
    'best_examples_per_s': {k: float(np.max(v)) for k, v in eps.items()},
    'ratios': {},
    'goal': {},
    'memory': mem,
    'busy_threads': busy,
    # Other jobs on this CPU slow PyTorch most: the load after the timing.
    'load_average_1m_after': os.getloadavg()[0],
    'times_ms': {k: (1e3 * v).tolist() for k, v in times.items()},
  }
  for k in ours_private:
    r = {
      'x_slower_than_nonprivate': float(np.median(eps['nonprivate'] / eps[k]))
    }
    for mode in opacus_modes:
      r[f'x_opacus_{mode}'] = float(np.median(eps[k] / eps[f'opacus_{mode}']))
    entry['ratios'][k] = r
    entry['goal'][k] = {
      'within_4x_of_nonprivate': r['x_slower_than_nonprivate'] <= 4.0,
      **{f'10x_opacus_{m}': r[f'x_opacus_{m}'] >= 10.0 for m in opacus_modes},
    }
  for k in opacus_modes:
    entry['ratios'][f'opacus_{k}'] = {
      'x_slower_than_nonprivate': float(
        np.median(eps['nonprivate'] / eps[f'opacus_{k}'])
      )
    }
  best = max(ours_private, key=lambda k: entry['examples_per_s'][k])
  entry['best_private'] = best
  entry['goal_met'] = all(entry['goal'][best].values())
  return entry


def machine_info(threads: int) -> dict[str, Any]:
  """CPU model, cores, load, thread settings and library versions."""
  model = platform.processor() or platform.machine()
  cpuinfo = pathlib.Path('/proc/cpuinfo')
  if cpuinfo.exists():
    for line in cpuinfo.read_text().splitlines():
      if line.startswith('model name'):
        model = line.split(':', 1)[1].strip()
        break
  versions = {'python': platform.python_version()}
  for name in (
    'jax',
    'jaxlib',
    'flax',
    'optax',
    'jax-privacy',
    'torch',
    'opacus',
  ):
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return {
    'cpu': model,
    'cores_usable': threads,
    'cpu_count': os.cpu_count(),
    'torch_threads': threads,
    'load_average_1m_at_start': os.getloadavg()[0],
    'jax_device': str(jax.devices()[0]),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'versions': versions,
  }


def table(result: dict[str, Any]) -> str:
  config = result['config']
  lines = [
    f'batch {config["batch"]}, median of {config["repeats"]} repeats of '
    f'{config["steps"]} steps; {result["machine"]["cpu"]}, '
    f'{result["machine"]["cores_usable"]} cores = torch threads; random data.',
    '',
    '| model | runner | examples/s | x slower than non-private '
    '| x opacus hooks | x opacus ghost | XLA peak MiB | best examples/s |',
    '|---|---|---|---|---|---|---|---|',
  ]
  for model, entry in result['models'].items():
    for k, v in entry['examples_per_s'].items():
      r = entry['ratios'].get(k, {})
      mem = entry['memory'].get(k)

      def f(x, spec='.2f'):
        return '-' if x is None else format(x, spec)

      lines.append(
        f'| {model} | {k} | {v:,.0f} '
        f'| {f(r.get("x_slower_than_nonprivate"))} '
        f'| {f(r.get("x_opacus_hooks"))} | {f(r.get("x_opacus_ghost"))} '
        f'| {f(mem and mem["peak_bytes"] / 2**20, ".1f")} '
        f'| {entry["best_examples_per_s"][k]:,.0f} |'
      )
  for model, entry in result['models'].items():
    lines.append(
      f'\n{model}: best private runner {entry["best_private"]}, goal (>= 10x '
      f'each Opacus mode, <= 4x non-private) met: {entry["goal_met"]}'
    )
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='mlp,cnn')
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--width', type=int, default=256)
  parser.add_argument('--channels', type=int, default=32)
  parser.add_argument(
    '--microbatch',
    type=int,
    default=32,
    help='microbatch_size of the vmap_mb runner (0: none)',
  )
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument(
    '--runners',
    default=','.join(RUNNERS),
    help='comma-separated subset of ' + ','.join(RUNNERS),
  )
  args = parser.parse_args(argv)
  threads = len(os.sched_getaffinity(0))
  if 'opacus' in args.runners:
    import torch

    torch.set_num_threads(threads)
  result = {
    'config': vars(args)
    | {
      'clip_norm': CLIP_NORM,
      'noise_multiplier': NOISE_MULTIPLIER,
      'learning_rate': LEARNING_RATE,
      'data': 'random normal features (N, 40), uniform labels, on device',
    },
    'machine': machine_info(threads),
    'models': {},
  }
  for name in args.models.split(','):
    if name not in ('mlp', 'cnn'):
      raise ValueError(f'`--models` must name mlp or cnn, got {name!r}.')
    result['models'][name] = benchmark(name, args)
    _lib.save('perf_private', result)
  print(table(result))


if __name__ == '__main__':
  main()
