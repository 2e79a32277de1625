"""Noise scale, gradient norm and weight distributions along SGD training.

McCandlish et al. (2018): the simple noise scale B_simple grows as the loss
falls. Zhang et al. (2022): the weights' distribution (histogram) settles
while the full-batch gradient norm stays large and the weights keep moving.
An MLP trained on MNIST-1D with plain SGD; at each checkpoint: full
training loss, full-batch gradient norm, B_simple (batches of ``--big``
examples split in parts of ``--small``, averaged over 4 batches), the
1-Wasserstein distance between consecutive checkpoints' weight
distributions and their Euclidean distance, per ``--seeds``.

  python -m experiments.analysis.trajectory  (about 2 minutes on 2 cores)
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.flatten_util import ravel_pytree

from experiments import _lib
from experiments.analysis import common
from optax_zoo import analysis, training


def run_seed(seed, data, args):
  model = training.MLP(data.num_features, args.hidden, rngs=nnx.Rngs(seed))
  checkpoints = np.linspace(0, args.steps, args.num_checkpoints + 1)
  saved = common.fit(
    model,
    optax.sgd(args.lr),
    data,
    steps=args.steps,
    seed=seed,
    checkpoints=[int(c) for c in checkpoints],
  )
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  loss, batch_loss, _ = common.loss_fns(model, x, y)
  rng = np.random.default_rng(seed)
  rows, previous = [], None
  for step, params in sorted(saved.items()):
    estimates = []
    for _ in range(4):
      idx = rng.choice(len(y), args.big, replace=False)
      estimates.append(
        analysis.gradient_noise_scale(
          batch_loss,
          params,
          (x[idx], y[idx]),
          num_splits=args.big // args.small,
        )
      )
    grad_sq = np.mean([e.grad_sq for e in estimates])
    trace_cov = np.mean([e.trace_cov for e in estimates])
    row = {
      'step': step,
      'loss': float(loss(params)),
      'grad_norm': float(
        jnp.linalg.norm(ravel_pytree(jax.grad(loss)(params))[0])
      ),
      'b_simple': float(trace_cov / grad_sq),
    }
    if previous is not None:
      dist = analysis.weight_distance(previous, params)
      row['weight_wasserstein'] = float(sum(jax.tree.leaves(dist)))
      row['weight_l2_move'] = float(
        jnp.linalg.norm(ravel_pytree(params)[0] - ravel_pytree(previous)[0])
      )
    rows.append(row)
    previous = params
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=6000)
  parser.add_argument('--num-checkpoints', type=int, default=12)
  parser.add_argument('--lr', type=float, default=0.05)
  parser.add_argument('--hidden', type=int, nargs='+', default=[100, 100])
  parser.add_argument('--small', type=int, default=32)
  parser.add_argument('--big', type=int, default=1024)
  parser.add_argument('--seeds', type=int, default=3)
  common.add_plot_arg(parser)
  args = parser.parse_args(argv)
  data = training.mnist1d()
  runs = [run_seed(s, data, args) for s in range(args.seeds)]
  common.save('analysis_trajectory', {'runs': runs, 'config': vars(args)})

  import matplotlib.pyplot as plt

  keys = [
    'loss',
    'grad_norm',
    'b_simple',
    'weight_wasserstein',
    'weight_l2_move',
  ]
  fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
  for ax, key in zip(axes, keys, strict=True):
    for seed, rows in enumerate(runs):
      pts = [(r['step'], r[key]) for r in rows if key in r]
      ax.plot(*zip(*pts, strict=True), marker='.', label=f'seed {seed}')
    ax.set_title(key)
    ax.set_xlabel('step')
    if key == 'loss':
      ax.set_yscale('log')
  axes[0].legend()
  _lib.save_plot(
    fig, common.plot_path(args, __file__, 'trajectory.png'), dpi=110
  )


if __name__ == '__main__':
  main()
