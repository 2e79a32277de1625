"""Every adaptive method on the MNIST-1D CNN and MLP, 10 seeds, tuned rates.

Each method runs at the best rate of its grid (``experiments/lr_grid``), for
2000 steps at batch 128, on seeds 100-109. Writes
``results/adaptive_leaderboard.json`` after each (method, model), so a rerun
resumes, and ``leaderboard.png``; prints the table of ``RESULTS.md``: final
accuracy, the paired difference to Adam, and the first step at which a method
reaches Adam's final mean accuracy (Adan's "fewer steps" claim).

  python -m experiments.adaptive.leaderboard              # ~40 min, 2 cores
  python -m experiments.adaptive.leaderboard --methods adam,adan --models cnn
"""

from __future__ import annotations

import argparse

import numpy as np

import optax_zoo
from experiments import _lib
from experiments.adaptive import common as c

NAME = 'adaptive_leaderboard'


def run(names, models, steps: int, seeds) -> dict:
  result = _lib.resume(NAME, steps=steps, seeds=seeds)
  for model in models:
    runs = result['runs'].setdefault(model, {})
    for name in names:
      lr = c.grid_learning_rate(name, model)
      if name in runs and runs[name]['learning_rate'] == lr:
        continue
      histories = c.train(
        optax_zoo.get(name).build(lr),
        model,
        seeds=seeds,
        steps=steps,
        desc=f'{model} {name}',
      )
      runs[name] = {
        'learning_rate': lr,
        'final_accuracy': [h.final_accuracy for h in histories],
        'eval_steps': histories[0].steps.tolist(),
        'test_accuracy': [h.test_accuracy.tolist() for h in histories],
      }
      _lib.save(NAME, result)
  return result


def table(result: dict, model: str) -> str:
  runs = result['runs'][model]
  adam = runs['adam']['final_accuracy']
  target = float(np.mean(adam))
  rows = [
    f'| method | lr | {model} final acc. (%) | vs adam | verdict '
    f"| first step at adam's {100 * target:.1f}% (median) |",
    '|---|---|---|---|---|---|',
  ]
  order = sorted(runs, key=lambda k: -np.mean(runs[k]['final_accuracy']))
  for name in order:
    r = runs[name]
    steps = np.asarray(r['eval_steps'])
    reach = [
      float(steps[np.argmax(np.asarray(a) >= target)])
      if np.max(a) >= target
      else np.inf
      for a in r['test_accuracy']
    ]
    vs = '' if name == 'adam' else _lib.pct_diff(r['final_accuracy'], adam)
    verdict = '' if name == 'adam' else _lib.verdict(r['final_accuracy'], adam)
    rows.append(
      f'| {name} | {r["learning_rate"]:g} | {_lib.pct(r["final_accuracy"])} '
      f'| {vs} | {verdict} | {np.median(reach):g} |'
    )
  return '\n'.join(rows)


def plot(result: dict) -> None:
  import matplotlib.pyplot as plt

  models = list(result['runs'])
  fig, axes = plt.subplots(
    1, len(models), figsize=(6 * len(models), 5), squeeze=False
  )
  for ax, model in zip(axes[0], models, strict=True):
    runs = result['runs'][model]
    order = sorted(runs, key=lambda k: np.mean(runs[k]['final_accuracy']))
    ax.boxplot(
      [100 * np.asarray(runs[k]['final_accuracy']) for k in order],
      orientation='horizontal',
    )
    ax.set_yticks(range(1, len(order) + 1), order)
    ax.set_xlabel(f'final test accuracy (%), {len(result["seeds"])} seeds')
    ax.set_title(f'MNIST-1D {model.upper()}, tuned learning rates')
  _lib.save_plot(fig, _lib.plot_path(__file__, 'leaderboard.png'))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--methods', default='all')
  parser.add_argument('--models', default='cnn,mlp')
  parser.add_argument('--steps', type=int, default=2000)
  c.add_seeds_arg(parser)
  args = parser.parse_args(argv)
  names = (
    [m.name for m in optax_zoo.methods('adaptive')]
    if args.methods == 'all'
    else args.methods.split(',')
  )
  if 'adam' not in names:
    names.insert(0, 'adam')
  result = run(
    names, args.models.split(','), args.steps, c.eval_seeds(args.seeds)
  )
  for model in result['runs']:
    print(table(result, model), end='\n\n')
  plot(result)


if __name__ == '__main__':
  main()
