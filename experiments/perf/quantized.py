"""8-bit Adam's step time and state memory against 32-bit Adam, on one CPU.

On the ~10M-parameter tree of ``adaptive_step_time`` (same shapes, same
runners), one run interleaves, per repeat, ``--steps`` jitted and donated
steps of:

- ``adam``: ``optax.adam`` (the baseline of every ratio);
- ``adam_bf16_mu``: ``optax.adam(mu_dtype=bfloat16)``, optax's only
  state-memory option;
- ``adam8bit``: `quantization.adam8bit` at its defaults (block 256, tensors
  under 4096 elements in float32, as the references);
- ``torch_adam``: ``torch.optim.Adam(fused=True)``, PyTorch's fastest CPU path;
- ``bnb_adam8bit``: bitsandbytes ``Adam8bit`` on CPU tensors;
- ``torchao_adamw8bit``: torchao ``AdamW8bit(weight_decay=0)`` run eagerly
  (``torch.compile`` replaced by the identity: compiling its update takes
  27-72 s per tensor shape on this CPU).

The torch runners run where torch, bitsandbytes and torchao are installed.
Ratios are medians over repeats of the per-repeat step time over
``optax.adam``'s; state bytes per parameter come from each state (the JAX
pytrees; the torch optimizers' state tensors).

  python -m experiments.perf.quantized
  python -m experiments.perf.quantized --params 100000 --repeats 1 --steps 1

On the CPU most of the 8-bit step's extra time is the kernel zeroing fresh
pages: XLA:CPU allocates each run's temporaries (the dequantized moments,
about 8 bytes per parameter, 83 MB here) anew, glibc serves an allocation
that large with ``mmap``, and every page faults on first touch (20,000
minor faults per step). With glibc told to keep freed memory
(the two variables below: one malloc arena, no ``mmap``, no trimming)
the same program reuses it. ``--suffix _malloc`` saves such a run beside the
default one:

  export MALLOC_ARENA_MAX=1 T=glibc.malloc
  export GLIBC_TUNABLES=$T.mmap_max=0:$T.trim_threshold=8589934592
  python -m experiments.perf.quantized --suffix _malloc
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import _lib
from experiments.perf import adaptive_step_time as ast
from optax_zoo import quantization
from optax_zoo._src.test_utils import state_bytes

NAME = 'perf_quantized'
LR = 1e-3


def torch_runner(kind: str, params: Any, grads: Any):
  """A timed loop of a torch optimizer; its state bytes once stepped."""
  import torch

  tensors = []
  for p, g in zip(jax.tree.leaves(params), jax.tree.leaves(grads), strict=True):
    t = torch.nn.Parameter(torch.from_numpy(np.array(p)))
    t.grad = torch.from_numpy(np.array(g))
    tensors.append(t)
  if kind == 'torch_adam':
    opt = torch.optim.Adam(tensors, lr=LR, fused=True)
  elif kind == 'bnb_adam8bit':
    import bitsandbytes

    opt = bitsandbytes.optim.Adam8bit(tensors, lr=LR)
  else:
    import torchao.optim

    opt = torchao.optim.AdamW8bit(tensors, lr=LR, weight_decay=0.0)

  def run(steps):
    # torchao compiles its update with torch.compile: identity while timing
    # (eager), restored after, so nothing else in the process is affected.
    compile_fn = torch.compile
    torch.compile = lambda fn, **kwargs: fn
    try:
      start = time.perf_counter()
      for _ in range(steps):
        opt.step()
      return (time.perf_counter() - start) / steps
    finally:
      torch.compile = compile_fn

  def nbytes():
    total = 0
    for state in opt.state.values():
      for v in state.values():
        if not isinstance(v, torch.Tensor):
          continue
        parts = [getattr(v, a) for a in ('codes', 'scale') if hasattr(v, a)]
        parts = parts or [v]
        total += sum(x.numel() * x.element_size() for x in parts)
    return total

  return run, nbytes


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--params', type=int, default=10_000_000)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--no-torch', action='store_true')
  parser.add_argument(
    '--suffix', default='', help='appended to the results file names'
  )
  args = parser.parse_args(argv)
  threads = len(os.sched_getaffinity(0))
  shapes = ast.tree_shapes(args.params)
  params = ast.random_tree(shapes, 0, 0.02)
  grads = ast.random_tree(shapes, 1, 1e-3)
  num = sum(np.size(p) for p in jax.tree.leaves(params))
  txs = {
    'adam': optax.adam(LR),
    'adam_bf16_mu': optax.adam(LR, mu_dtype=jnp.bfloat16),
    'adam8bit': quantization.adam8bit(LR),
  }
  runners, sizes = {}, {}
  for name, tx in txs.items():
    runners[name], state = ast.jax_runner(tx, params, grads)
    sizes[name] = lambda state=state: state_bytes(state())
  if not args.no_torch and importlib.util.find_spec('torch'):
    import torch

    torch.set_num_threads(threads)
    needs = {
      'torch_adam': 'torch',
      'bnb_adam8bit': 'bitsandbytes',
      'torchao_adamw8bit': 'torchao',
    }
    for name, module in needs.items():
      if importlib.util.find_spec(module):
        runners[name], sizes[name] = torch_runner(name, params, grads)
  times, busy = ast.time_interleaved(runners, args.repeats, args.steps)
  methods = {
    name: {
      'ms_per_step': 1e3 * float(np.median(times[name])),
      'x_adam': float(np.median(times[name] / times['adam'])),
      'state_bytes_per_param': sizes[name]() / num,
      'busy_threads': busy[name],
      'times_ms': (1e3 * times[name]).tolist(),
    }
    for name in runners
  }
  result = {
    'config': {
      'num_params': int(num),
      'num_leaves': len(jax.tree.leaves(params)),
      'repeats': args.repeats,
      'steps': args.steps,
    },
    'machine': {
      **ast.machine_info(threads),
      'malloc_env': {
        k: os.environ.get(k) for k in ('MALLOC_ARENA_MAX', 'GLIBC_TUNABLES')
      },
    },
    'methods': methods,
  }
  out_name = NAME + args.suffix
  _lib.save(out_name, result)
  lines = [
    f'{num:,} float32 parameters in {result["config"]["num_leaves"]} '
    f'arrays; {result["machine"]["cpu"]}, {threads} cores; median of '
    f'{args.repeats} repeats of {args.steps} steps.',
    '',
    '| optimizer | ms/step | x optax.adam | state B/param |',
    '|---|---|---|---|',
  ]
  for name, m in methods.items():
    lines.append(
      f'| {name} | {m["ms_per_step"]:.1f} | {m["x_adam"]:.2f} '
      f'| {m["state_bytes_per_param"]:.2f} |'
    )
  table = '\n'.join(lines)
  (_lib.results_dir() / f'{out_name}.md').write_text(table + '\n')
  print(table)


if __name__ == '__main__':
  main()
