"""Batch Hessian extreme eigenvalues against the full-data Hessian.

Granziol et al. (2022): the extreme eigenvalues of a mini-batch Hessian
exceed those of the full-data Hessian, by more for smaller batches. One
MLP trained on MNIST-1D; for each batch size, Lanczos (SLQ nodes) on
``--num-batches`` random batches gives the largest and smallest eigenvalue.

  python -m experiments.analysis.batch_hessian  (about 2 minutes on 2 cores)
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import _lib
from experiments.analysis import common
from optax_zoo import analysis, training
from optax_zoo.training.stats import mean_ci


def extremes(fun, params, key, steps, batches=None):
  sd = analysis.spectral_density(
    fun, params, key=key, lanczos_steps=steps, batches=batches, grid=2
  )
  return float(sd.nodes.max()), float(sd.nodes.min())


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=3000)
  parser.add_argument(
    '--batch-sizes', type=int, nargs='+', default=[16, 64, 256, 1024]
  )
  parser.add_argument('--num-batches', type=int, default=10)
  parser.add_argument('--lanczos-steps', type=int, default=60)
  parser.add_argument('--hidden', type=int, nargs='+', default=[100, 100])
  common.add_plot_arg(parser)
  args = parser.parse_args(argv)

  data = training.mnist1d()
  model = training.MLP(data.num_features, args.hidden, rngs=nnx.Rngs(0))
  common.fit(model, common.adam(), data, steps=args.steps)
  params = nnx.split(model, nnx.Param, ...)[1]
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  _, batch_loss, _ = common.loss_fns(model, x, y)
  key = jax.random.key(0)
  full_batches = [
    (x[i : i + 1000], y[i : i + 1000]) for i in range(0, len(y), 1000)
  ]
  full = extremes(batch_loss, params, key, args.lanczos_steps, full_batches)
  rng = np.random.default_rng(0)
  rows = {}
  for size in args.batch_sizes:
    values = []
    for i in range(args.num_batches):
      idx = rng.choice(len(y), size, replace=False)
      fun = lambda p, idx=idx: batch_loss(p, (x[idx], y[idx]))
      values.append(
        extremes(fun, params, jax.random.fold_in(key, i), args.lanczos_steps)
      )
    values = np.asarray(values)
    rows[size] = {
      'max': mean_ci(values[:, 0]),
      'min': mean_ci(values[:, 1]),
      'frac_max_above_full': float(np.mean(values[:, 0] > full[0])),
      'frac_min_below_full': float(np.mean(values[:, 1] < full[1])),
    }
    print(size, rows[size])
  common.save(
    'analysis_batch_hessian',
    {
      'full': {'max': full[0], 'min': full[1]},
      'batches': rows,
      'config': vars(args),
    },
  )

  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
  sizes = list(rows)
  for ax, which in zip(axes, ('max', 'min'), strict=True):
    mean = [rows[s][which][0] for s in sizes]
    err = [rows[s][which][1] for s in sizes]
    ax.errorbar(sizes, mean, yerr=err, marker='o', label='batch Hessian')
    ax.axhline(
      full[0 if which == 'max' else 1],
      color='k',
      ls='--',
      label='full-data Hessian',
    )
    ax.set_xscale('log')
    ax.set_xlabel('batch size')
    ax.set_title(
      f'{which} eigenvalue (mean, 95% CI, {args.num_batches} batches)'
    )
    ax.legend()
  _lib.save_plot(
    fig, common.plot_path(args, __file__, 'batch_hessian.png'), dpi=120
  )


if __name__ == '__main__':
  main()
