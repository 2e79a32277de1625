"""LEGW when the batch grows 8x, against keeping or linearly scaling the rate.

You et al. (2019) claim that linear-epoch gradual warmup with square-root
rate scaling (LEGW) carries a recipe tuned at batch B0 to batch k B0 without
retuning. Base recipe: Adam on the MNIST-1D CNN at batch 128 for 2000 steps
(64 epochs), peak rate 1e-2 (the grid optimum), 100 warmup steps and a
quadratic decay. At batch 1024 (k = 8) and the same 64 epochs (250 steps),
three ways to carry the recipe over are compared on 10 seeds: LEGW (peak
x sqrt 8, warmup x 8 in epochs), the same schedule unchanged, and the
linear scaling rule (peak x 8, same warmup).

  python -m experiments.adaptive.legw   # ~8 min on 2 cores
"""

from __future__ import annotations

import argparse

import optax_zoo
from experiments import _lib
from experiments.adaptive import common as c
from optax_zoo.analysis import plotting
from optax_zoo.schedules import legw_schedule, scale_lr_for_batch

NAME = 'adaptive_legw'
BASE_LR, BASE_BATCH, BASE_STEPS = 1e-2, 128, 2000
# The base recipe warms up over its first 5% of steps (100 of 2000).
WARMUP_FRACTION = 20


def configs(k: int, base_steps: int = BASE_STEPS) -> dict:
  batch = BASE_BATCH * k
  steps = base_steps // k
  warmup = base_steps // WARMUP_FRACTION
  unchanged = legw_schedule(BASE_LR, batch, batch, warmup, steps)
  return {
    'base (batch 128)': (
      legw_schedule(BASE_LR, BASE_BATCH, BASE_BATCH, warmup, base_steps),
      BASE_BATCH,
    ),
    f'unchanged (batch {batch})': (unchanged, batch),
    f'LEGW (batch {batch})': (
      legw_schedule(BASE_LR, BASE_BATCH, batch, warmup, base_steps),
      batch,
    ),
    f'linear rule (batch {batch})': (
      scale_lr_for_batch(unchanged, BASE_BATCH, batch, rule='linear'),
      batch,
    ),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--k', type=int, default=8)
  parser.add_argument(
    '--base-steps',
    type=int,
    default=BASE_STEPS,
    help='steps of the base recipe at batch 128',
  )
  c.add_seeds_arg(parser)
  args = parser.parse_args(argv)
  seeds = c.eval_seeds(args.seeds)
  result = _lib.resume(NAME, k=args.k, base_steps=args.base_steps, seeds=seeds)
  for name, (schedule, batch) in configs(args.k, args.base_steps).items():
    if name in result['runs']:
      continue
    histories = c.train(
      optax_zoo.adam(schedule),
      'cnn',
      seeds=seeds,
      steps=args.base_steps * BASE_BATCH // batch,
      batch_size=batch,
      desc=name,
    )
    result['runs'][name] = [h.final_accuracy for h in histories]
    _lib.save(NAME, result)
  runs = result['runs']
  base = runs['base (batch 128)']
  legw = next(v for k, v in runs.items() if k.startswith('LEGW'))
  rows = ['| recipe | test acc. (%) | vs base | vs LEGW |', '|---|---|---|---|']
  for name, acc in runs.items():
    vs_base = '' if acc is base else _lib.pct_diff(acc, base)
    vs_legw = '' if acc is legw else _lib.pct_diff(acc, legw)
    rows.append(f'| {name} | {_lib.pct(acc)} | {vs_base} | {vs_legw} |')
  print('\n'.join(rows))

  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 3.8))
  plotting.seed_boxplot(runs, ax)
  ax.set_title(
    f'Adam, MNIST-1D CNN, {args.base_steps * BASE_BATCH // 4000} epochs, '
    f'batch x{args.k}: {len(seeds)} seeds'
  )
  _lib.save_plot(fig, _lib.plot_path(__file__, 'legw.png'))


if __name__ == '__main__':
  main()
