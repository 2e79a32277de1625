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

  python -m experiments.adaptive.batch_rule   # ~8 min on 2 cores
"""

from __future__ import annotations

import argparse
import itertools
import math

import numpy as np

import optax_zoo
from experiments import _lib
from experiments.adaptive import common as c

NAME = 'adaptive_batch_rule'
BATCHES = (32, 128, 512)
# Each optimizer's smallest rate; its grid doubles from there.
SMALLEST_RATE = {'sgd': 0.0125, 'adam': 0.000625}
NUM_RATES = 9


def grids(num_rates: int) -> dict[str, tuple[float, ...]]:
  return {
    name: tuple(lr * 2**i for i in range(num_rates))
    for name, lr in SMALLEST_RATE.items()
  }


def make(name: str, lr: float):
  if name == 'sgd':
    return optax_zoo.sgd(lr, momentum=0.9)
  return optax_zoo.adam(lr)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=1000)
  c.add_seeds_arg(parser)
  parser.add_argument('--batches', type=int, nargs='+', default=BATCHES)
  parser.add_argument(
    '--num-rates',
    type=int,
    default=NUM_RATES,
    help='grid points per optimizer, doubling from the smallest',
  )
  args = parser.parse_args(argv)
  seeds = c.eval_seeds(args.seeds)
  result = _lib.resume(NAME, steps=args.steps, seeds=seeds)
  runs = result['runs']
  for name, grid in grids(args.num_rates).items():
    for batch in args.batches:
      for lr in grid:
        key = f'{name} b={batch} lr={lr:g}'
        if key in runs:
          continue
        histories = c.train(
          make(name, lr),
          'mlp',
          seeds=seeds,
          steps=args.steps,
          batch_size=batch,
          desc=key,
        )
        runs[key] = {
          'accuracy': [h.final_accuracy for h in histories],
          'test_loss': [float(h.test_loss[-1]) for h in histories],
          'train_loss': [float(h.train_loss[-1]) for h in histories],
        }
        _lib.save(NAME, result)
  rows = [
    '| optimizer | batch | best lr (acc. %) | largest stable lr |',
    '|---|---|---|---|',
  ]
  summary = {}
  for name, grid in grids(args.num_rates).items():
    for batch in args.batches:
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
  for name in SMALLEST_RATE:
    for kind, i in (('best', 0), ('largest stable', 1)):
      lrs = [summary[(name, b)][i] for b in args.batches]
      if None not in lrs:
        factors = [b / a for a, b in itertools.pairwise(lrs)]
        print(f'{name} {kind} lr grows by {factors} per 4x batch')


if __name__ == '__main__':
  main()
