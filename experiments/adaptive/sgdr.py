"""SGDR's anytime performance (Loshchilov & Hutter, 2017).

The claim: with warm restarts (cycle lengths T0, 2 T0, 4 T0, ...), the model
at the end of each cycle is about as good as a run whose single cosine
schedule ends there, so one SGDR run gives good models at many budgets. The
MNIST-1D CNN with SGD (momentum 0.9, peak 0.1, the grid optimum), batch 128:
SGDR with T0 = 125 steps and T_mult = 2 (cycles end at 125, 375, 875 and
1875 steps) against one cosine decay per budget, each run to exactly that
budget, and a constant rate; 10 seeds.

  python experiments/adaptive/sgdr.py   # ~6 min on 2 cores
"""

from __future__ import annotations

import common as c
import numpy as np
import optax

import optax_zoo
from optax_zoo.schedules import sgdr_schedule

NAME = 'adaptive_sgdr'
PEAK, T0, BUDGETS = 0.1, 125, (125, 375, 875, 1875)


def accuracy_at(histories, step: int) -> list[float]:
  i = int(np.flatnonzero(histories[0].steps == step)[0])
  return [float(h.test_accuracy[i]) for h in histories]


def main():
  result = c.resume(NAME)
  runs = result['runs']
  sgd = lambda lr: optax_zoo.sgd(lr, momentum=0.9)
  for name, lr in (
    ('sgdr', sgdr_schedule(PEAK, T0, cycle_mult=2)),
    ('constant', PEAK),
  ):
    if name not in runs:
      histories = c.train(
        sgd(lr), 'cnn', steps=BUDGETS[-1], desc=name, eval_every=T0
      )
      runs[name] = {str(b): accuracy_at(histories, b) for b in BUDGETS}
      c.save(NAME, result)
  for budget in BUDGETS:
    key = f'cosine to {budget}'
    if key not in runs:
      schedule = optax.cosine_decay_schedule(PEAK, budget)
      histories = c.train(sgd(schedule), 'cnn', steps=budget, desc=key)
      runs[key] = [h.final_accuracy for h in histories]
      c.save(NAME, result)
  rows = [
    '| budget (steps) | SGDR at the cycle end | cosine to the budget '
    '| SGDR - cosine | constant rate |',
    '|---|---|---|---|---|',
  ]
  for b in BUDGETS:
    s, k = runs['sgdr'][str(b)], runs[f'cosine to {b}']
    f = runs['constant'][str(b)]
    rows.append(
      f'| {b} | {c.pct(s)} | {c.pct(k)} | {c.pct_diff(s, k)} | {c.pct(f)} |'
    )
  print('\n'.join(rows))

  import matplotlib.pyplot as plt

  _, ax = plt.subplots(figsize=(5, 3.5))
  series = {
    'SGDR, cycle ends': [runs['sgdr'][str(b)] for b in BUDGETS],
    'cosine to each budget': [runs[f'cosine to {b}'] for b in BUDGETS],
    'constant rate': [runs['constant'][str(b)] for b in BUDGETS],
  }
  for label, values in series.items():
    means, halves = zip(*(c.mean_ci(v) for v in values), strict=True)
    ax.errorbar(
      BUDGETS,
      100 * np.asarray(means),
      100 * np.asarray(halves),
      marker='o',
      capsize=3,
      label=label,
    )
  ax.set_xscale('log')
  ax.set_xticks(BUDGETS, [str(b) for b in BUDGETS])
  ax.minorticks_off()
  ax.set_xlabel('training budget (steps)')
  ax.set_ylabel('test accuracy (%)')
  ax.set_title('MNIST-1D CNN, SGD: 10 seeds, 95% intervals')
  ax.legend()
  plt.tight_layout()
  plt.savefig(c.HERE / 'sgdr.png', dpi=120)
  plt.close()


if __name__ == '__main__':
  main()
