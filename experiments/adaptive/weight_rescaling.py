"""Weight rescaling against weight decay in a BatchNorm network (Liu et al.).

Liu et al. (2021) claim that for scale-invariant weights (those followed by
BatchNorm) periodically rescaling them to a fixed norm does what weight decay
does (keep the effective learning rate from shrinking as the norms grow),
at least as well. ResNet1D (every convolution followed by BatchNorm; the
head is not scale-invariant and is left out of the mask), SGD with momentum
0.9 at 0.1 with a cosine decay, 2000 steps at batch 128, 10 seeds: plain SGD,
SGD with L2 weight decay 5e-4 on every parameter, and SGD with the
convolution kernels rescaled to their initial per-filter norms every step.

  python -m experiments.adaptive.weight_rescaling   # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse

import jax
import optax

import optax_zoo
from experiments import _lib
from experiments.adaptive import common as c
from optax_zoo import training
from optax_zoo.analysis import plotting

NAME = 'adaptive_weight_rescaling'


def conv_kernels(params):
  """The scale-invariant leaves: the convolution kernels (rank 3)."""
  return jax.tree.map(lambda p: p.ndim == 3, params)


def configs(steps: int) -> dict:
  lr = optax.cosine_decay_schedule(0.1, steps)
  return {
    'sgd': optax_zoo.sgd(lr, momentum=0.9),
    'sgd + weight decay': optax.chain(
      optax.add_decayed_weights(5e-4), optax_zoo.sgd(lr, momentum=0.9)
    ),
    'sgd + weight rescaling': optax_zoo.weight_rescaling(
      optax_zoo.sgd(lr, momentum=0.9), mask=conv_kernels
    ),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=2000)
  c.add_seeds_arg(parser)
  args = parser.parse_args(argv)
  seeds = c.eval_seeds(args.seeds)
  result = _lib.resume(NAME, steps=args.steps, seeds=seeds)
  data = training.mnist1d()
  for name, tx in configs(args.steps).items():
    if name in result['runs']:
      continue
    history = training.train_seeds(
      lambda rngs: training.ResNet1D(rngs=rngs),
      tx,
      data,
      seeds=seeds,
      steps=args.steps,
      eval_every=max(1, args.steps // 10),
      desc=name,
    ).history
    result['runs'][name] = history.final_accuracy.tolist()
    _lib.save(NAME, result)
  runs = result['runs']
  rows = [
    '| run | test acc. (%) | vs sgd | vs weight decay |',
    '|---|---|---|---|',
  ]
  for name, acc in runs.items():
    vs_sgd = '' if name == 'sgd' else _lib.pct_diff(acc, runs['sgd'])
    vs_wd = (
      _lib.pct_diff(acc, runs['sgd + weight decay'])
      if name == 'sgd + weight rescaling'
      else ''
    )
    rows.append(f'| {name} | {_lib.pct(acc)} | {vs_sgd} | {vs_wd} |')
  print('\n'.join(rows))

  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 3.8))
  plotting.seed_boxplot(runs, ax)
  ax.set_title(f'ResNet1D (BatchNorm), SGD, MNIST-1D: {len(seeds)} seeds')
  _lib.save_plot(fig, _lib.plot_path(__file__, 'weight_rescaling.png'))


if __name__ == '__main__':
  main()
