"""R_med along the trajectories of Adam and SGD (Jiang et al., 2023).

Claim: Adam drives R_med = max_i H_ii / median_i H_ii (per weight matrix,
exact Hessian diagonal of the training loss on ``--examples`` examples)
lower than SGD. Per seed, R_med is the median over the checkpoints after
the first; reported as mean and 95% interval over ``--seeds`` seeds for
each layer.

  python -m experiments.analysis.r_med  (about 3 minutes on 2 cores)
"""

import argparse

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments import _lib
from experiments.analysis import common
from optax_zoo import analysis, training
from optax_zoo.training.stats import mean_ci

OPTIMIZERS = {'adam': lambda: optax.adam(1e-3), 'sgd': lambda: optax.sgd(0.05)}


def run(name, seed, data, args):
  model = training.MLP(data.num_features, args.hidden, rngs=nnx.Rngs(seed))
  checkpoints = [int(c) for c in np.linspace(0, args.steps, 6)]
  saved = common.fit(
    model,
    OPTIMIZERS[name](),
    data,
    steps=args.steps,
    seed=seed,
    checkpoints=checkpoints,
  )
  x = jnp.asarray(data.x_train[: args.examples])
  y = jnp.asarray(data.y_train[: args.examples])
  loss, _, _ = common.loss_fns(model, x, y)
  per_step = []
  for step in checkpoints[1:]:
    diag = nnx.to_pure_dict(analysis.hessian_diagonal(loss, saved[step]))
    kernels = {
      f'layer{i}': float(analysis.r_med(layer['kernel']))
      for i, layer in enumerate([*diag['hidden'].values(), diag['head']])
    }
    per_step.append(kernels)
  medians = {k: float(np.median([s[k] for s in per_step])) for k in per_step[0]}
  return medians, per_step


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=2000)
  parser.add_argument('--hidden', type=int, nargs='+', default=[32])
  parser.add_argument('--examples', type=int, default=1000)
  parser.add_argument('--seeds', type=int, default=10)
  common.add_plot_arg(parser)
  args = parser.parse_args(argv)
  data = training.mnist1d()
  results = {}
  for name in OPTIMIZERS:
    runs = [run(name, s, data, args) for s in range(args.seeds)]
    layers = list(runs[0][0])
    results[name] = {
      'per_seed': [r[0] for r in runs],
      'trajectories': [r[1] for r in runs],
      'summary': {k: mean_ci([r[0][k] for r in runs]) for k in layers},
    }
    print(name, results[name]['summary'])
  common.save('analysis_r_med', {**results, 'config': vars(args)})

  import matplotlib.pyplot as plt

  layers = list(results['adam']['summary'])
  fig, ax = plt.subplots(figsize=(5, 3.5))
  width = 0.35
  for i, name in enumerate(OPTIMIZERS):
    mean = [results[name]['summary'][k][0] for k in layers]
    err = [results[name]['summary'][k][1] for k in layers]
    ax.bar(
      np.arange(len(layers)) + i * width, mean, width, yerr=err, label=name
    )
  ax.set_xticks(np.arange(len(layers)) + width / 2, layers)
  ax.set_ylabel('R_med (median over iterates)')
  ax.set_yscale('log')
  ax.set_title(f'R_med, mean and 95% CI over {args.seeds} seeds')
  ax.legend()
  _lib.save_plot(fig, common.plot_path(args, __file__, 'r_med.png'), dpi=120)


if __name__ == '__main__':
  main()
