"""Lookahead over an inner learning-rate sweep (Zhang et al. 2019).

The claims: Lookahead lowers the variance of its inner optimizer and makes
it robust to the inner learning rate. MNIST-1D CNN1D, batch 128, 1500
steps, constant inner rates, SGD with momentum 0.9 over 0.01-1 and Adam
over 1e-3-0.1 (factors of about 3), each with and without Lookahead (k = 5,
alpha = 0.5, the paper's CIFAR setting; slow weights evaluated), 10 seeds
(100-109) at every grid point. Reported per grid point: the final test
accuracy, its spread over seeds, and the iterates' fluctuation, the standard
deviation of each seed's test loss over the evaluations in the last 40% of
training (every 75 steps), paired per seed against the inner optimizer
alone. Robustness: the grid rates whose mean accuracy is within 2 points of
that configuration's best, and its worst-to-best range over the grid.

  python -m experiments.averaging.lookahead   # ~25 min on 2 cores
"""

from __future__ import annotations

import argparse

import numpy as np
import optax

import optax_zoo
from experiments import _lib
from experiments.averaging import common as c
from optax_zoo import training

NAME = 'averaging_lookahead'
GRIDS = {
  'sgd': (0.01, 0.03, 0.1, 0.3, 1.0),
  'adam': (1e-3, 3e-3, 1e-2, 3e-2, 0.1),
}
FIRST_SEED = 100
# Robust rates: within this many points of the configuration's best.
WITHIN = 0.02
TAIL = 0.4  # the fraction of training whose evaluations measure fluctuation


def inner(name: str, lr: float) -> optax.GradientTransformation:
  if name == 'sgd':
    return optax.sgd(lr, momentum=0.9)
  return optax.adam(lr)


def key(name: str, lr: float, la: bool) -> str:
  return f'{"lookahead+" if la else ""}{name} {lr:g}'


def fluctuation(history: training.History, steps: int) -> list[float]:
  """Per seed: the std of the test loss over the last ``TAIL`` of training."""
  tail = history.steps >= (1 - TAIL) * steps
  loss = np.asarray(history.test_loss)[:, tail]
  return np.std(loss, axis=-1).tolist()


def run_one(name, lr, la, args, data, seeds) -> dict:
  tx = inner(name, lr)
  if la:
    tx = optax_zoo.lookahead(tx, sync_period=args.k, alpha=args.alpha)
  result = training.train_seeds(
    c.model_fn,
    tx,
    data,
    seeds=seeds,
    steps=args.steps,
    batch_size=c.BATCH_SIZE,
    eval_every=max(1, args.steps // 20),
    desc=key(name, lr, la),
  )
  acc = np.asarray(result.history.test_accuracy)[:, -1]
  finite = np.isfinite(np.asarray(result.history.test_loss)[:, -1])
  return {
    'accuracy': acc.tolist(),
    'fluctuation': fluctuation(result.history, args.steps),
    'diverged': int((~finite).sum()),
  }


def summarize(result: dict, optimizers, grids) -> dict:
  out = {}
  for name in optimizers:
    for la in (False, True):
      label = f'{"lookahead+" if la else ""}{name}'
      means = {
        f'{lr:g}': float(np.mean(result['runs'][key(name, lr, la)]['accuracy']))
        for lr in grids[name]
      }
      best = max(means.values())
      out[label] = {
        'mean_accuracy': means,
        'best_rate': max(means, key=means.get),
        'best': best,
        'worst': min(means.values()),
        'robust_rates': [r for r, m in means.items() if m >= best - WITHIN],
      }
    for lr in grids[name]:
      base = result['runs'][key(name, lr, False)]
      la = result['runs'][key(name, lr, True)]
      out[key(name, lr, True)] = {
        'accuracy': _lib.summary(la['accuracy']),
        'base_accuracy': _lib.summary(base['accuracy']),
        'accuracy_minus_base': _lib.paired(la['accuracy'], base['accuracy']),
        'seed_std': float(np.std(la['accuracy'], ddof=1)),
        'base_seed_std': float(np.std(base['accuracy'], ddof=1)),
        'fluctuation': _lib.summary(la['fluctuation']),
        'base_fluctuation': _lib.summary(base['fluctuation']),
        'fluctuation_minus_base': _lib.paired(
          la['fluctuation'], base['fluctuation']
        ),
        # 'lower': Lookahead's fluctuation is below the inner optimizer's.
        'fluctuation_verdict': {
          'better': 'lower',
          'worse': 'higher',
          'tie': 'tie',
        }[_lib.verdict(base['fluctuation'], la['fluctuation'])],
      }
  return out


def plot(result: dict, optimizers, grids, path) -> None:
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(
    2, len(optimizers), figsize=(5 * len(optimizers), 7), squeeze=False
  )
  for j, name in enumerate(optimizers):
    for la, color in ((False, 'tab:blue'), (True, 'tab:orange')):
      rates = list(grids[name])
      for i, metric in enumerate(('accuracy', 'fluctuation')):
        s = [
          _lib.summary(result['runs'][key(name, lr, la)][metric])
          for lr in rates
        ]
        scale = 100.0 if metric == 'accuracy' else 1.0
        axes[i, j].errorbar(
          rates,
          [scale * x['mean'] for x in s],
          yerr=[scale * x['ci95'] for x in s],
          marker='o',
          capsize=3,
          color=color,
          label=f'{"Lookahead + " if la else ""}{name}',
        )
    axes[0, j].set_ylabel('final test accuracy (%)')
    axes[1, j].set_ylabel('std of test loss, last 40% of training')
    for i in range(2):
      axes[i, j].set_xscale('log')
      axes[i, j].set_xlabel(f'inner {name} learning rate')
      axes[i, j].legend(fontsize=8)
  fig.suptitle('Lookahead (k=5, alpha=0.5) on MNIST-1D CNN, 10 seeds, 95% CI')
  fig.tight_layout()
  _lib.save_plot(fig, path)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=1500)
  parser.add_argument('--seeds', type=int, default=10)
  parser.add_argument('--k', type=int, default=5)
  parser.add_argument('--alpha', type=float, default=0.5)
  parser.add_argument(
    '--optimizers', nargs='+', default=list(GRIDS), choices=list(GRIDS)
  )
  parser.add_argument(
    '--rates', type=float, nargs='+', default=None, help='one grid for all'
  )
  args = parser.parse_args(argv)
  grids = {n: tuple(args.rates) if args.rates else GRIDS[n] for n in GRIDS}
  seeds = list(range(FIRST_SEED, FIRST_SEED + args.seeds))
  data = training.mnist1d()
  result = _lib.resume(
    NAME,
    steps=args.steps,
    seeds=seeds,
    k=args.k,
    alpha=args.alpha,
    grids={n: list(grids[n]) for n in args.optimizers},
  )
  runs = result.setdefault('runs', {})
  for name in args.optimizers:
    for lr in grids[name]:
      for la in (False, True):
        if key(name, lr, la) not in runs:
          runs[key(name, lr, la)] = run_one(name, lr, la, args, data, seeds)
          _lib.save(NAME, result)
  result['summary'] = summarize(result, args.optimizers, grids)
  _lib.save(NAME, result)
  plot(
    result, args.optimizers, grids, _lib.plot_path(__file__, 'lookahead.png')
  )
  print(
    '| inner | lr | accuracy (%) | Lookahead minus inner | seed std '
    'inner / LA | loss fluctuation inner / LA | LA minus inner |'
  )
  print('|---|---|---|---|---|---|---|')
  for name in args.optimizers:
    for lr in grids[name]:
      s = result['summary'][key(name, lr, True)]
      print(
        f'| {name} | {lr:g} | {_lib.fmt(s["base_accuracy"])} -> '
        f'{_lib.fmt(s["accuracy"])} | {_lib.fmt(s["accuracy_minus_base"])} | '
        f'{100 * s["base_seed_std"]:.2f} / {100 * s["seed_std"]:.2f} | '
        f'{_lib.fmt(s["base_fluctuation"], 1.0, 4)} / '
        f'{_lib.fmt(s["fluctuation"], 1.0, 4)} | '
        f'{_lib.fmt(s["fluctuation_minus_base"], 1.0, 4)} '
        f'({s["fluctuation_verdict"]}) |'
      )
    for la in ('', 'lookahead+'):
      s = result['summary'][la + name]
      print(
        f'{la}{name}: best {100 * s["best"]:.1f} at {s["best_rate"]}, worst '
        f'{100 * s["worst"]:.1f}; within 2 points: {s["robust_rates"]}'
      )


if __name__ == '__main__':
  main()
