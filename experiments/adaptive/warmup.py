"""RAdam without warmup against Adam with and without warmup (Liu et al. 2020).

The claim: RAdam's rectification does what a learning-rate warmup does for
Adam, so RAdam without warmup matches Adam with warmup and, at large rates,
beats Adam without it. MNIST-1D CNN, 2000 steps at batch 128, 10 seeds, over
a log grid of peak rates; the warmup is linear over the first 10% of steps.

  python -m experiments.adaptive.warmup   # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse

import numpy as np
import optax

import optax_zoo
from experiments import _lib
from experiments.adaptive import common as c

NAME = 'adaptive_warmup'
RATES = (3e-3, 1e-2, 3e-2, 1e-1)


def configs(steps: int):
  warmup = steps // 10
  return {
    'adam': lambda lr: optax_zoo.adam(lr),
    'adam + warmup': lambda lr: optax_zoo.adam(
      optax.linear_schedule(0.0, lr, warmup)
    ),
    'radam': lambda lr: optax_zoo.radam(lr),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=2000)
  c.add_seeds_arg(parser)
  parser.add_argument('--rates', type=float, nargs='+', default=RATES)
  args = parser.parse_args(argv)
  seeds = c.eval_seeds(args.seeds)
  result = _lib.resume(NAME, steps=args.steps, seeds=seeds)
  for name, make in configs(args.steps).items():
    for lr in args.rates:
      key = f'{name} @ {lr:g}'
      if key in result['runs']:
        continue
      histories = c.train(
        make(lr), 'cnn', seeds=seeds, steps=args.steps, desc=key
      )
      result['runs'][key] = [h.final_accuracy for h in histories]
      _lib.save(NAME, result)
  runs = result['runs']
  rows = [
    '| peak lr | adam | adam + warmup | radam | radam - (adam + warmup) '
    '| radam - adam |',
    '|---|---|---|---|---|---|',
  ]
  for lr in args.rates:
    a, w, r = (runs[f'{n} @ {lr:g}'] for n in configs(args.steps))
    rows.append(
      f'| {lr:g} | {_lib.pct(a)} | {_lib.pct(w)} | {_lib.pct(r)} '
      f'| {_lib.pct_diff(r, w)} ({_lib.verdict(r, w)}) '
      f'| {_lib.pct_diff(r, a)} ({_lib.verdict(r, a)}) |'
    )
  print('\n'.join(rows))
  plot(runs, args.rates, len(seeds))


def plot(runs, rates, num_seeds: int) -> None:
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name in ('adam', 'adam + warmup', 'radam'):
    means, halves = zip(
      *(_lib.mean_ci(runs[f'{name} @ {lr:g}']) for lr in rates), strict=True
    )
    ax.errorbar(
      rates,
      100 * np.asarray(means),
      100 * np.asarray(halves),
      label=name,
      capsize=3,
      marker='o',
    )
  ax.set_xscale('log')
  ax.set_xlabel('peak learning rate')
  ax.set_ylabel('final test accuracy (%)')
  ax.set_title(f'MNIST-1D CNN, {num_seeds} seeds, 95% intervals')
  ax.legend()
  _lib.save_plot(fig, _lib.plot_path(__file__, 'warmup.png'))


if __name__ == '__main__':
  main()
