"""Batch augmentation: M augmented copies per example (Hoffer et al. 2019).

The claim: repeating each example of a batch M times with different
augmentations reaches the same accuracy in fewer steps. MNIST-1D CNN, Adam,
batches of 128 drawn examples (so 128 M trained on per step), a fixed step
budget, M in {1, 2, 4, 8} and a run without augmentation; every
configuration at its own best rate of the same grid (``common.tune``), then
10 fresh seeds. The augmentation: a circular shift by up to 3 samples, a
crop of at least 90% resampled to full length, Gaussian noise of std 0.05
(MNIST-1D's own generator shifts, scales and adds noise, so these stay in
its distribution). Reported: final test accuracy, the steps each M needs to
reach M = 1's mean final accuracy, and the wall time per step.

  python -m experiments.training.batch_augmentation   # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse

import numpy as np

from experiments import _lib
from experiments.training import common as c
from optax_zoo import training

NAME = 'training_batch_augmentation'
MULTIPLICITIES = (1, 2, 4, 8)
FIXED_TARGET = 0.85


def augmentation() -> training.AugmentFn:
  return training.compose(
    training.random_shift(3),
    training.crop_and_resize(0.9),
    training.gaussian_noise(0.05),
  )


def label(m: int) -> str:
  return 'no augmentation' if m == 0 else f'M={m}'


def run(m, lr, seeds, *, steps, channels, data):
  transform = None if m == 0 else training.batch_augmentation(augmentation(), m)
  return training.train_seeds(
    c.model_fn(channels),
    c.adam(lr),
    data,
    seeds=seeds,
    steps=steps,
    eval_every=max(1, steps // 20),
    batch_transform=transform,
    desc=f'{label(m)} @ {lr:g}',
  ).histories


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  c.add_common_args(parser, steps=600)
  parser.add_argument(
    '--multiplicities',
    type=int,
    nargs='+',
    default=(0, *MULTIPLICITIES),
    help='0 is the run without augmentation',
  )
  args = parser.parse_args(argv)
  seeds = c.eval_seeds(args.seeds)
  data = training.mnist1d()
  config = dict(
    steps=args.steps,
    seeds=seeds,
    rates=list(args.rates),
    channels=args.channels,
    selection_seeds=args.selection_seeds,
    multiplicities=list(args.multiplicities),
  )
  result = _lib.resume(NAME, **config)

  def save():
    _lib.save(NAME, result)

  kw = dict(steps=args.steps, channels=args.channels, data=data)
  for m in args.multiplicities:
    key = label(m)
    if key in result['runs']:
      continue
    lr = c.tune(
      result,
      key,
      args.rates,
      lambda lr, s, m=m: np.mean(
        [h.final_accuracy for h in run(m, lr, s, **kw)]
      ),
      selection_seeds=args.selection_seeds,
      save=save,
    )
    histories = run(m, lr, seeds, **kw)
    result['runs'][key] = {
      'lr': lr,
      'final_accuracy': [h.final_accuracy for h in histories],
      'steps': histories[0].steps.tolist(),
      'mean_curve': np.mean([h.test_accuracy for h in histories], 0).tolist(),
      'step_time': float(np.median([h.median_step_time for h in histories])),
      'curves': [h.test_accuracy.tolist() for h in histories],
    }
    save()
  summarize(result, args.multiplicities)
  save()
  plot(result, args.multiplicities, len(seeds))


def _steps_to(run, target):
  return [
    next(
      (s for s, a in zip(run['steps'], curve, strict=True) if a >= target), None
    )
    for curve in run['curves']
  ]


def _reach_cell(reach):
  mean = reach['mean']
  cell = 'never' if mean is None else f'{mean:.0f} ± {reach["ci95"]:.0f}'
  return f'{cell} ({reach["reached"]}/{reach["of"]})'


def summarize(result, ms, fixed_target=FIXED_TARGET):
  """Final accuracy, and steps to two targets: M=1's mean final accuracy
  (which only about half of M=1's own seeds reach, by construction) and a
  fixed accuracy every configuration reaches."""
  runs = result['runs']
  base = runs.get(label(1))
  target = float(np.mean(base['final_accuracy'])) if base else None
  rows = [
    f"targets: M=1's mean final accuracy {100 * target:.1f}%, and "
    f'{100 * fixed_target:.0f}%'
    if target
    else '',
    '| run | lr | final test acc (%) | minus M=1 | steps to M=1 final '
    f'(seeds reached) | steps to {100 * fixed_target:.0f}% | time per step '
    'vs M=1 |',
    '|---|---|---|---|---|---|---|',
  ]
  summary = {}
  for m in ms:
    r = runs[label(m)]
    entry = {'final_accuracy': _lib.summary(r['final_accuracy'])}
    cells = [label(m), f'{r["lr"]:g}', _lib.pct(r['final_accuracy'])]
    if base:
      entry['steps_to_target'] = c.reached_summary(_steps_to(r, target))
      entry['steps_to_fixed'] = c.reached_summary(_steps_to(r, fixed_target))
      entry['minus_m1'] = _lib.paired(
        r['final_accuracy'], base['final_accuracy']
      )
      entry['verdict_vs_m1'] = _lib.verdict(
        r['final_accuracy'], base['final_accuracy']
      )
      entry['time_ratio'] = r['step_time'] / base['step_time']
      cells += [
        f'{_lib.pct_diff(r["final_accuracy"], base["final_accuracy"])} '
        f'({entry["verdict_vs_m1"]})',
        _reach_cell(entry['steps_to_target']),
        _reach_cell(entry['steps_to_fixed']),
        f'{entry["time_ratio"]:.2f}x',
      ]
    else:
      cells += ['', '', '', '']
    rows.append('| ' + ' | '.join(cells) + ' |')
    summary[label(m)] = entry
  result['summary'] = summary
  result['target'] = target
  result['fixed_target'] = fixed_target
  print('\n'.join(rows))


def plot(result, ms, num_seeds):
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for m in ms:
    r = result['runs'][label(m)]
    ax.plot(r['steps'], 100 * np.asarray(r['mean_curve']), label=label(m))
  if result.get('target'):
    ax.axhline(100 * result['target'], color='gray', ls=':', lw=1)
  ax.set_xlabel('step')
  ax.set_ylabel('test accuracy (%), mean over seeds')
  ax.set_title(f'Batch augmentation, MNIST-1D CNN, {num_seeds} seeds')
  ax.legend()
  _lib.save_plot(fig, _lib.plot_path(__file__, 'batch_augmentation.png'))


if __name__ == '__main__':
  main()
