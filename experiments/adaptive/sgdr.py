"""SGDR's anytime performance (Loshchilov & Hutter, 2017).

The claim: with warm restarts (cycle lengths T0, 2 T0, 4 T0, ...), the model
at the end of each cycle is about as good as a run whose single cosine
schedule ends there, so one SGDR run gives good models at many budgets. The
MNIST-1D CNN with SGD (momentum 0.9, peak 0.1, the grid optimum), batch 128:
SGDR with T0 = 125 steps and T_mult = 2 (cycles end at 125, 375, 875 and
1875 steps) against one cosine decay per budget, each run to exactly that
budget, and a constant rate; 10 seeds.

  python -m experiments.adaptive.sgdr   # ~6 min on 2 cores
"""

from __future__ import annotations

import argparse

import numpy as np
import optax

import optax_zoo
from experiments import _lib
from experiments.adaptive import common as c
from optax_zoo.schedules import sgdr_schedule

NAME = 'adaptive_sgdr'
PEAK, T0, CYCLES = 0.1, 125, 4


def budgets(t0: int, cycles: int) -> tuple[int, ...]:
  """The steps at which the cycles of length t0, 2 t0, 4 t0, ... end."""
  return tuple(t0 * (2**i - 1) for i in range(1, cycles + 1))


def accuracy_at(histories, step: int) -> list[float]:
  i = int(np.flatnonzero(histories[0].steps == step)[0])
  return [float(h.test_accuracy[i]) for h in histories]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--t0', type=int, default=T0, help='first cycle, steps')
  parser.add_argument('--cycles', type=int, default=CYCLES)
  c.add_seeds_arg(parser)
  args = parser.parse_args(argv)
  seeds = c.eval_seeds(args.seeds)
  result = _lib.resume(NAME, t0=args.t0, cycles=args.cycles, seeds=seeds)
  runs = result['runs']
  ends = budgets(args.t0, args.cycles)
  sgd = lambda lr: optax_zoo.sgd(lr, momentum=0.9)
  for name, lr in (
    ('sgdr', sgdr_schedule(PEAK, args.t0, cycle_mult=2)),
    ('constant', PEAK),
  ):
    if name not in runs:
      histories = c.train(
        sgd(lr),
        'cnn',
        seeds=seeds,
        steps=ends[-1],
        desc=name,
        eval_every=args.t0,
      )
      runs[name] = {str(b): accuracy_at(histories, b) for b in ends}
      _lib.save(NAME, result)
  for budget in ends:
    key = f'cosine to {budget}'
    if key not in runs:
      schedule = optax.cosine_decay_schedule(PEAK, budget)
      histories = c.train(
        sgd(schedule), 'cnn', seeds=seeds, steps=budget, desc=key
      )
      runs[key] = [h.final_accuracy for h in histories]
      _lib.save(NAME, result)
  rows = [
    '| budget (steps) | SGDR at the cycle end | cosine to the budget '
    '| SGDR - cosine | constant rate |',
    '|---|---|---|---|---|',
  ]
  for b in ends:
    s, k = runs['sgdr'][str(b)], runs[f'cosine to {b}']
    f = runs['constant'][str(b)]
    rows.append(
      f'| {b} | {_lib.pct(s)} | {_lib.pct(k)} | {_lib.pct_diff(s, k)} '
      f'| {_lib.pct(f)} |'
    )
  print('\n'.join(rows))

  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 3.5))
  series = {
    'SGDR, cycle ends': [runs['sgdr'][str(b)] for b in ends],
    'cosine to each budget': [runs[f'cosine to {b}'] for b in ends],
    'constant rate': [runs['constant'][str(b)] for b in ends],
  }
  for label, values in series.items():
    means, halves = zip(*(_lib.mean_ci(v) for v in values), strict=True)
    ax.errorbar(
      ends,
      100 * np.asarray(means),
      100 * np.asarray(halves),
      marker='o',
      capsize=3,
      label=label,
    )
  ax.set_xscale('log')
  ax.set_xticks(ends, [str(b) for b in ends])
  ax.minorticks_off()
  ax.set_xlabel('training budget (steps)')
  ax.set_ylabel('test accuracy (%)')
  ax.set_title(f'MNIST-1D CNN, SGD: {len(seeds)} seeds, 95% intervals')
  ax.legend()
  _lib.save_plot(fig, _lib.plot_path(__file__, 'sgdr.png'))


if __name__ == '__main__':
  main()
