"""Weight rescaling against weight decay in a BatchNorm network (Liu et al.).

Liu et al. (2021) claim that for scale-invariant weights (those followed by
BatchNorm) periodically rescaling them to a fixed norm does what weight decay
does (keep the effective learning rate from shrinking as the norms grow),
at least as well. ResNet1D (every convolution followed by BatchNorm; the
head is not scale-invariant and is left out of the mask), SGD with momentum
0.9 at 0.1 with a cosine decay, 2000 steps at batch 128, 10 seeds: plain SGD,
SGD with L2 weight decay 5e-4 on every parameter, and SGD with the
convolution kernels rescaled to their initial per-filter norms every step.

  python experiments/adaptive/weight_rescaling.py   # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse

import common as c
import jax
import optax

import optax_zoo
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


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=2000)
  args = parser.parse_args()
  result = c.resume(NAME, steps=args.steps)
  data = training.mnist1d()
  for name, tx in configs(args.steps).items():
    if name in result['runs']:
      continue
    histories = training.train_seeds(
      lambda rngs: training.ResNet1D(rngs=rngs),
      tx,
      data,
      seeds=c.EVAL_SEEDS,
      steps=args.steps,
      eval_every=args.steps // 10,
      desc=name,
    )
    result['runs'][name] = [h.final_accuracy for h in histories]
    c.save(NAME, result)
  runs = result['runs']
  rows = [
    '| run | test acc. (%) | vs sgd | vs weight decay |',
    '|---|---|---|---|',
  ]
  for name, acc in runs.items():
    vs_sgd = '' if name == 'sgd' else c.pct_diff(acc, runs['sgd'])
    vs_wd = (
      c.pct_diff(acc, runs['sgd + weight decay'])
      if name == 'sgd + weight rescaling'
      else ''
    )
    rows.append(f'| {name} | {c.pct(acc)} | {vs_sgd} | {vs_wd} |')
  print('\n'.join(rows))

  import matplotlib.pyplot as plt

  _, ax = plt.subplots(figsize=(6, 3.8))
  plotting.seed_boxplot(runs, ax)
  ax.set_title('ResNet1D (BatchNorm), SGD, MNIST-1D: 10 seeds')
  plt.tight_layout()
  plt.savefig(c.HERE / 'weight_rescaling.png', dpi=120)
  plt.close()


if __name__ == '__main__':
  main()
