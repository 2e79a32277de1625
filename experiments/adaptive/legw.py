"""LEGW when the batch grows 8x, against keeping or linearly scaling the rate.

You et al. (2019) claim that linear-epoch gradual warmup with square-root
rate scaling (LEGW) carries a recipe tuned at batch B0 to batch k B0 without
retuning. Base recipe: Adam on the MNIST-1D CNN at batch 128 for 2000 steps
(64 epochs), peak rate 1e-2 (the grid optimum), 100 warmup steps and a
quadratic decay. At batch 1024 (k = 8) and the same 64 epochs (250 steps),
three ways to carry the recipe over are compared on 10 seeds: LEGW (peak
x sqrt 8, warmup x 8 in epochs), the same schedule unchanged, and the
linear scaling rule (peak x 8, same warmup).

  python experiments/adaptive/legw.py   # ~8 min on 2 cores
"""

from __future__ import annotations

import argparse

import common as c

import optax_zoo
from optax_zoo.analysis import plotting
from optax_zoo.schedules import legw_schedule, scale_lr_for_batch

NAME = 'adaptive_legw'
BASE_LR, BASE_BATCH, WARMUP, BASE_STEPS = 1e-2, 128, 100, 2000


def configs(k: int) -> dict:
  batch = BASE_BATCH * k
  steps = BASE_STEPS // k
  unchanged = legw_schedule(BASE_LR, batch, batch, WARMUP, steps)
  return {
    'base (batch 128)': (legw_schedule(BASE_LR, 128, 128, WARMUP, 2000), 128),
    f'unchanged (batch {batch})': (unchanged, batch),
    f'LEGW (batch {batch})': (
      legw_schedule(BASE_LR, BASE_BATCH, batch, WARMUP, BASE_STEPS),
      batch,
    ),
    f'linear rule (batch {batch})': (
      scale_lr_for_batch(unchanged, BASE_BATCH, batch, rule='linear'),
      batch,
    ),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--k', type=int, default=8)
  args = parser.parse_args()
  result = c.resume(NAME, k=args.k)
  for name, (schedule, batch) in configs(args.k).items():
    if name in result['runs']:
      continue
    histories = c.train(
      optax_zoo.adam(schedule),
      'cnn',
      steps=BASE_STEPS * BASE_BATCH // batch,
      batch_size=batch,
      desc=name,
    )
    result['runs'][name] = [h.final_accuracy for h in histories]
    c.save(NAME, result)
  runs = result['runs']
  base = runs['base (batch 128)']
  legw = next(v for k, v in runs.items() if k.startswith('LEGW'))
  rows = ['| recipe | test acc. (%) | vs base | vs LEGW |', '|---|---|---|---|']
  for name, acc in runs.items():
    vs_base = '' if acc is base else c.pct_diff(acc, base)
    vs_legw = '' if acc is legw else c.pct_diff(acc, legw)
    rows.append(f'| {name} | {c.pct(acc)} | {vs_base} | {vs_legw} |')
  print('\n'.join(rows))

  import matplotlib.pyplot as plt

  _, ax = plt.subplots(figsize=(7, 3.8))
  plotting.seed_boxplot(runs, ax)
  ax.set_title(f'Adam, MNIST-1D CNN, 64 epochs, batch x{args.k}: 10 seeds')
  plt.tight_layout()
  plt.savefig(c.HERE / 'legw.png', dpi=120)
  plt.close()


if __name__ == '__main__':
  main()
