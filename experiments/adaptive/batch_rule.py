"""Learning rate against batch size: linear for SGD, square root for Adam?

Granziol et al. (2022) derive that the largest stable learning rate (and the
best one) grows linearly with the batch size for SGD and as its square root
for adaptive methods. On the MNIST-1D MLP, for batch sizes 32, 128 and 512
(1000 steps, 10 seeds), SGD with momentum 0.9 and Adam each run over a grid
of rates spaced by factors of 2; per batch size we report the best rate and
the largest stable one (every seed ends with a finite training loss below
the initial ln 10; the test loss would mix in overfitting, which grows with
the rate at the large batches' 128 epochs), and the growth factor per 4x
batch that each implies.

  python experiments/adaptive/batch_rule.py   # ~8 min on 2 cores
"""

from __future__ import annotations

import itertools
import math

import common as c
import numpy as np

import optax_zoo

NAME = 'adaptive_batch_rule'
BATCHES = (32, 128, 512)
GRIDS = {
  'sgd': tuple(0.0125 * 2**i for i in range(9)),
  'adam': tuple(0.000625 * 2**i for i in range(9)),
}


def make(name: str, lr: float):
  if name == 'sgd':
    return optax_zoo.sgd(lr, momentum=0.9)
  return optax_zoo.adam(lr)


def main():
  result = c.resume(NAME)
  runs = result['runs']
  for name, grid in GRIDS.items():
    for batch in BATCHES:
      for lr in grid:
        key = f'{name} b={batch} lr={lr:g}'
        if key in runs:
          continue
        histories = c.train(
          make(name, lr), 'mlp', steps=1000, batch_size=batch, desc=key
        )
        runs[key] = {
          'accuracy': [h.final_accuracy for h in histories],
          'test_loss': [float(h.test_loss[-1]) for h in histories],
          'train_loss': [float(h.train_loss[-1]) for h in histories],
        }
        c.save(NAME, result)
  rows = [
    '| optimizer | batch | best lr (acc. %) | largest stable lr |',
    '|---|---|---|---|',
  ]
  summary = {}
  for name, grid in GRIDS.items():
    for batch in BATCHES:
      cells = [runs[f'{name} b={batch} lr={lr:g}'] for lr in grid]
      acc = [np.mean(r['accuracy']) for r in cells]
      stable = [
        all(np.isfinite(x) and x < math.log(10) for x in r['train_loss'])
        for r in cells
      ]
      best = int(np.argmax(acc))
      largest = max((i for i, s in enumerate(stable) if s), default=None)
      summary[(name, batch)] = (
        grid[best],
        None if largest is None else grid[largest],
      )
      rows.append(
        f'| {name} | {batch} | {grid[best]:g} ({100 * acc[best]:.1f}) '
        f'| {grid[largest]:g} |'
        if largest is not None
        else f'| {name} | {batch} | {grid[best]:g} | none |'
      )
  print('\n'.join(rows))
  for name in GRIDS:
    for kind, i in (('best', 0), ('largest stable', 1)):
      lrs = [summary[(name, b)][i] for b in BATCHES]
      if None not in lrs:
        factors = [b / a for a, b in itertools.pairwise(lrs)]
        print(f'{name} {kind} lr grows by {factors} per 4x batch')


if __name__ == '__main__':
  main()
