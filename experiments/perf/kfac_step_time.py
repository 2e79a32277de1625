"""K-FAC's whole training step against Adam's, on one CPU, as ratios.

One jitted training step (forward, backward, for K-FAC the layer statistics,
the running factors, the inverse refresh and the preconditioning, then the
update and ``apply_updates``) of the MNIST-1D CNN (``CNN1D``) and MLP
(``MLP(40)``, 100-100 hidden) on a random batch of MNIST-1D shape
(``--batch`` examples of 40 features, 10 classes), parameters and optimizer
state donated. Variants, all timed in one process and interleaved within
each repeat so every ratio is paired:

- ``adam`` (the reference) and ``sgd`` (momentum 0.9, the first-order
  floor): `jax.value_and_grad` and the update;
- ``kfac_pi_T1`` / ``_T10``, ``kfac_eigen_T1`` / ``_T10``: `optax_zoo.kfac`
  (damping 1e-3, factor decay 0.95, KL clip 1e-3, momentum 0.9) with the
  inverses refreshed every step or every 10 steps; the gradient and the
  statistics come from ONE pass (`optax_zoo.kfac_layer_stats`). With
  ``T=10`` a timed loop of ``--steps`` steps (a multiple of 10) holds the
  refreshes in their share, so its time per step is the amortized cost;
- ``kfac_pi_T10_loop``: as the training loop (``optax_zoo.training``)
  runs it, the gradient from `jax.value_and_grad` and the statistics from a
  second forward and backward pass (the lazy ``kfac_stats``).

The extra cost is split by timing its parts as separate jitted functions on
the same inputs (each also pays a dispatch, ~0.05 ms here): the statistics
pass (``kfac_layer_stats`` minus ``value_and_grad``), the factor update
(`optax_zoo.kfac_factors` and `optax_zoo.kfac_running_factors`), the
inversion (`optax_zoo.kfac_inverses`, Cholesky for ``pi``, ``eigh`` for
``eigen``; divided by ``T`` when amortized) and the preconditioning
(`optax_zoo.kfac_precondition_updates` with the KL clip). State bytes per
parameter are those of ``tx.init``.

Times are medians over ``--repeats`` repeats of ``--steps`` steps; ratios
are medians of the per-repeat ratios. On a CPU shared with other jobs the
absolute times are indicative only; pin one core for steadier numbers:
``taskset -c 0 python -m ...``. Writes
``experiments/results/perf_kfac_step_time.json`` after each model and the
table to ``perf_kfac_step_time.md``.

  taskset -c 0 python -m experiments.perf.kfac_step_time
  python -m experiments.perf.kfac_step_time --models mlp --batch 64 \\
      --repeats 1 --steps 2
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import optax_zoo
from experiments import _lib
from experiments.lr_grid.run import MODELS
from experiments.perf.adaptive_step_time import machine_info, time_interleaved
from optax_zoo._src.test_utils import state_bytes

NAME = 'perf_kfac_step_time'
LR = 0.1
DAMPING, FACTOR_DECAY, KL_CLIP = 1e-3, 0.95, 1e-3
FEATURES, CLASSES = 40, 10
# (name, inverse, inverse_every, one pass for gradient and statistics)
KFAC_VARIANTS = (
  ('kfac_pi_T1', 'pi', 1, True),
  ('kfac_pi_T10', 'pi', 10, True),
  ('kfac_eigen_T1', 'eigen', 1, True),
  ('kfac_eigen_T10', 'eigen', 10, True),
  ('kfac_pi_T10_loop', 'pi', 10, False),
)

Runner = Callable[[int], float]


def cross_entropy(model, x, y):
  logits = model(x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def step_runner(step, params, state, x, y) -> Runner:
  """A timed loop of ``step(params, state, x, y) -> (params, state)``."""
  params = jax.tree.map(jnp.array, params)

  def run(steps):
    nonlocal params, state
    start = time.perf_counter()
    for _ in range(steps):
      params, state = step(params, state, x, y)
    jax.block_until_ready((params, state))
    return (time.perf_counter() - start) / steps

  return run


def part_runner(fn, *args) -> Runner:
  """A timed loop of the jitted ``fn(*args)``, its output fed back as arg 0."""
  fn = jax.jit(fn)

  def run(steps):
    nonlocal args
    start = time.perf_counter()
    for _ in range(steps):
      args = (fn(*args), *args[1:])
    jax.block_until_ready(args[0])
    return (time.perf_counter() - start) / steps

  return run


def setup(model_name: str, batch: int):
  """The split model, a random batch, and the K-FAC inputs at one point."""
  model = MODELS[model_name](nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = jax.random.normal(jax.random.key(1), (batch, FEATURES))
  y = jax.random.randint(jax.random.key(2), (batch,), 0, CLASSES)
  return graphdef, params, rest, x, y


def runners(
  model_name: str, batch: int, variants=KFAC_VARIANTS, parts: bool = True
) -> tuple[dict[str, Runner], dict]:
  """The timed variants (and parts) of one model; and its static facts."""
  graphdef, params, rest, x, y = setup(model_name, batch)

  def loss(p, x, y):
    return cross_entropy(nnx.merge(graphdef, p, rest, copy=True), x, y)

  def plain_step(tx):
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, s, x, y):
      g = jax.grad(loss)(p, x, y)
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s

    return step

  def kfac_step(tx, one_pass):
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, s, x, y):
      def stats():
        return optax_zoo.kfac_layer_stats(
          graphdef, p, rest, cross_entropy, x, y
        )

      if one_pass:
        _, g, _, st = stats()
        u, s = tx.update(g, s, p, kfac_stats=st)
      else:
        g = jax.grad(loss)(p, x, y)
        u, s = tx.update(g, s, p, kfac_stats=lambda: stats()[3])
      return optax.apply_updates(p, u), s

    return step

  txs = {
    'adam': (optax_zoo.adam(1e-3), plain_step),
    'sgd': (optax_zoo.sgd(LR, momentum=0.9), plain_step),
  }
  out: dict[str, Runner] = {}
  facts: dict[str, Any] = {
    'num_params': int(sum(a.size for a in jax.tree.leaves(params))),
    'state_bytes_per_param': {},
  }
  for name, (tx, make) in txs.items():
    out[name] = step_runner(make(tx), params, tx.init(params), x, y)
    facts['state_bytes_per_param'][name] = (
      state_bytes(tx.init(params)) / facts['num_params']
    )
  for name, inverse, every, one_pass in variants:
    tx = optax_zoo.kfac(
      LR,
      damping=DAMPING,
      factor_decay=FACTOR_DECAY,
      inverse_every=every,
      inverse=inverse,
      kl_clip=KL_CLIP,
    )
    state = tx.init(params)
    out[name] = step_runner(kfac_step(tx, one_pass), params, state, x, y)
    facts['state_bytes_per_param'][f'kfac_{inverse}'] = (
      state_bytes(state) / facts['num_params']
    )

  layers = optax_zoo.kfac_layers(params)
  facts['layers'] = {k: list(v.dims) for k, v in layers.items()}
  if not parts:
    return out, facts
  # The parts, on the batch's statistics at the initial parameters.
  _, grads, _, stats = optax_zoo.kfac_layer_stats(
    graphdef, params, rest, cross_entropy, x, y
  )
  batch_factors = optax_zoo.kfac_factors(stats)
  count = jnp.asarray(5, jnp.int32)

  def grad_only(g, p, x, y):
    del g
    return jax.grad(loss)(p, x, y)

  def grad_and_stats(g, p, x, y):
    del g
    _, g, _, st = optax_zoo.kfac_layer_stats(
      graphdef, p, rest, cross_entropy, x, y
    )
    return g, st

  def factor_update(f, st, count):
    return optax_zoo.kfac_running_factors(
      f, optax_zoo.kfac_factors(st), count, FACTOR_DECAY
    )

  def invert(inverse):
    def fn(inv, f):
      del inv
      return optax_zoo.kfac_inverses(f, DAMPING, inverse)

    return fn

  def precondition(inverse):
    def fn(u, g, inv):
      del u
      return optax_zoo.kfac_precondition_updates(
        g,
        layers,
        lambda n, rows: optax_zoo.kfac_precondition(
          rows, inv[n], DAMPING, inverse
        ),
        kl_clip=KL_CLIP,
        learning_rate=LR,
      )

    return fn

  out['part: value_and_grad'] = part_runner(grad_only, grads, params, x, y)
  out['part: gradient + statistics'] = part_runner(
    grad_and_stats, (grads, stats), params, x, y
  )
  out['part: factor update'] = part_runner(
    factor_update, batch_factors, stats, count
  )
  for inverse in sorted({v[1] for v in variants}):
    inv = optax_zoo.kfac_inverses(batch_factors, DAMPING, inverse)
    out[f'part: inversion {inverse}'] = part_runner(
      invert(inverse), inv, batch_factors
    )
    out[f'part: preconditioning {inverse}'] = part_runner(
      precondition(inverse), grads, grads, inv
    )
  return out, facts


def summarize(times: dict[str, np.ndarray], busy: dict[str, float]) -> dict:
  """Per variant: median ms/step, median ratio to adam, busy threads."""
  ref = times['adam']
  return {
    name: {
      'ms_per_step': 1e3 * float(np.median(t)),
      'x_adam': float(np.median(t / ref)),
      'busy_threads': busy[name],
      'times_ms': (1e3 * t).tolist(),
    }
    for name, t in times.items()
  }


def split(variants: dict[str, dict]) -> dict[str, dict[str, float]]:
  """K-FAC's extra cost over SGD's step by part, ms per step (amortized)."""
  ms = {k: v['ms_per_step'] for k, v in variants.items()}
  if 'part: value_and_grad' not in ms:
    return {}
  stats = ms['part: gradient + statistics'] - ms['part: value_and_grad']
  out = {}
  for _, inverse, every, one_pass in KFAC_VARIANTS:
    if not one_pass or f'kfac_{inverse}_T{every}' not in ms:
      continue
    parts = {
      'statistics pass': stats,
      'factor update': ms['part: factor update'],
      'inversion': ms[f'part: inversion {inverse}'] / every,
      'preconditioning': ms[f'part: preconditioning {inverse}'],
    }
    parts['sum of parts'] = sum(parts.values())
    parts['measured (step minus sgd step)'] = (
      ms[f'kfac_{inverse}_T{every}'] - ms['sgd']
    )
    out[f'kfac_{inverse}_T{every}'] = parts
  return out


def markdown(result: dict[str, Any]) -> str:
  config, machine = result['config'], result['machine']
  lines = [
    f'Batch {config["batch"]}, one jitted training step, parameters and '
    f'state donated; median of {config["repeats"]} repeats of '
    f'{config["steps"]} steps; {machine["cpu"]}, {machine["cores_usable"]} '
    'core(s) usable, shared with other jobs (absolute times indicative).',
    '',
    '| model (params) | variant | ms/step | x adam | state B/param |',
    '|---|---|---|---|---|',
  ]
  for model, r in result['models'].items():
    sb = r['state_bytes_per_param']
    for name, v in r['variants'].items():
      if name.startswith('part:'):
        continue
      key = name if name in sb else '_'.join(name.split('_')[:2])
      lines.append(
        f'| {model} ({r["num_params"]:,}) | {name} | {v["ms_per_step"]:.2f} '
        f'| {v["x_adam"]:.2f} | {sb[key]:.1f} |'
      )
  lines += [
    '',
    "K-FAC's extra cost over the SGD step, ms per step (parts timed as "
    'separate jitted functions; inversion divided by T):',
    '',
    '| model | variant | statistics pass | factor update | inversion '
    '| preconditioning | sum of parts | measured |',
    '|---|---|---|---|---|---|---|---|',
  ]
  for model, r in result['models'].items():
    for name, p in r['split'].items():
      lines.append(
        f'| {model} | {name} | {p["statistics pass"]:.2f} '
        f'| {p["factor update"]:.2f} | {p["inversion"]:.2f} '
        f'| {p["preconditioning"]:.2f} | {p["sum of parts"]:.2f} '
        f'| {p["measured (step minus sgd step)"]:.2f} |'
      )
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='cnn,mlp')
  parser.add_argument('--batch', type=int, default=1024)
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument(
    '--variants',
    default='all',
    help='K-FAC variants to time, comma-separated names (default: all)',
  )
  parser.add_argument(
    '--no-parts', action='store_true', help='skip the cost split'
  )
  args = parser.parse_args(argv)
  names = [v[0] for v in KFAC_VARIANTS]
  picked = names if args.variants == 'all' else args.variants.split(',')
  for name in picked:
    if name not in names:
      raise ValueError(f'`--variants` has {name!r}; allowed: {names}.')
  variants = [v for v in KFAC_VARIANTS if v[0] in picked]
  models = args.models.split(',')
  for m in models:
    if m not in MODELS:
      raise ValueError(f'`--models` has {m!r}; allowed: {sorted(MODELS)}.')
  for flag in ('batch', 'repeats', 'steps'):
    if getattr(args, flag) < 1:
      raise ValueError(f'`--{flag}` must be >= 1, got {getattr(args, flag)}.')
  result = {
    'config': {
      **vars(args),
      'lr': LR,
      'damping': DAMPING,
      'factor_decay': FACTOR_DECAY,
      'kl_clip': KL_CLIP,
      'amortized_exactly': args.steps % 10 == 0,
    },
    'machine': machine_info(len(os.sched_getaffinity(0))),
    'models': {},
  }
  for model in models:
    timed, facts = runners(model, args.batch, variants, parts=not args.no_parts)
    times, busy = time_interleaved(timed, args.repeats, args.steps)
    timings = summarize(times, busy)
    result['models'][model] = {
      **facts,
      'variants': timings,
      'split': split(timings),
    }
    _lib.save(NAME, result)
    print(model, {k: round(v['x_adam'], 2) for k, v in timings.items()})
  table = markdown(result)
  _lib.result_path(NAME).with_suffix('.md').write_text(table + '\n')
  print(table)


if __name__ == '__main__':
  main()
