"""RAdam without warmup against Adam with and without warmup (Liu et al. 2020).

The claim: RAdam's rectification does what a learning-rate warmup does for
Adam, so RAdam without warmup matches Adam with warmup and, at large rates,
beats Adam without it. MNIST-1D CNN, 2000 steps at batch 128, 10 seeds, over
a log grid of peak rates; the warmup is linear over the first 10% of steps.

  python experiments/adaptive/warmup.py   # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse

import common as c
import numpy as np
import optax

import optax_zoo

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


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=2000)
  args = parser.parse_args()
  result = c.resume(NAME, steps=args.steps)
  for name, make in configs(args.steps).items():
    for lr in RATES:
      key = f'{name} @ {lr:g}'
      if key in result['runs']:
        continue
      histories = c.train(make(lr), 'cnn', steps=args.steps, desc=key)
      result['runs'][key] = [h.final_accuracy for h in histories]
      c.save(NAME, result)
  runs = result['runs']
  rows = [
    '| peak lr | adam | adam + warmup | radam | radam - (adam + warmup) '
    '| radam - adam |',
    '|---|---|---|---|---|---|',
  ]
  for lr in RATES:
    a, w, r = (runs[f'{n} @ {lr:g}'] for n in configs(args.steps))
    rows.append(
      f'| {lr:g} | {c.pct(a)} | {c.pct(w)} | {c.pct(r)} '
      f'| {c.pct_diff(r, w)} ({c.verdict(r, w)}) '
      f'| {c.pct_diff(r, a)} ({c.verdict(r, a)}) |'
    )
  print('\n'.join(rows))
  plot(runs)


def plot(runs) -> None:
  import matplotlib.pyplot as plt

  _, ax = plt.subplots(figsize=(5, 3.5))
  for name in ('adam', 'adam + warmup', 'radam'):
    means, halves = zip(
      *(c.mean_ci(runs[f'{name} @ {lr:g}']) for lr in RATES), strict=True
    )
    ax.errorbar(
      RATES,
      100 * np.asarray(means),
      100 * np.asarray(halves),
      label=name,
      capsize=3,
      marker='o',
    )
  ax.set_xscale('log')
  ax.set_xlabel('peak learning rate')
  ax.set_ylabel('final test accuracy (%)')
  ax.set_title('MNIST-1D CNN, 10 seeds, 95% intervals')
  ax.legend()
  plt.tight_layout()
  plt.savefig(c.HERE / 'warmup.png', dpi=120)
  plt.close()


if __name__ == '__main__':
  main()
