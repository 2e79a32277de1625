"""2-D filter-normalized landscapes of a residual CNN with and without skips.

Li et al. (2018): skip connections keep the landscape of a deep network
smooth and convex-looking; without them it becomes chaotic. ResNet1D on
MNIST-1D with ``--blocks`` residual blocks, trained with Adam, with and
without the identity paths; the training loss on a grid of two
filter-normalized directions (biases and BatchNorm parameters zeroed).
Smoothness measure: the share of grid points where a second difference
along either axis is negative (0 for a convex surface), and the loss at
the grid's edge relative to the centre.

  python -m experiments.analysis.skip_landscape  (about 4 minutes on 2 cores)
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments import _lib
from experiments.analysis import common
from optax_zoo import analysis, training
from optax_zoo.analysis import plotting
from optax_zoo.training.stats import mean_ci


def nonconvex_share(surface):
  s = np.asarray(surface)
  d2a = s[2:, 1:-1] - 2 * s[1:-1, 1:-1] + s[:-2, 1:-1]
  d2b = s[1:-1, 2:] - 2 * s[1:-1, 1:-1] + s[1:-1, :-2]
  return float(np.mean((d2a < 0) | (d2b < 0)))


def run(skip, seed, data, coords, args):
  model = training.ResNet1D(
    channels=args.channels,
    num_blocks=args.blocks,
    skip=skip,
    rngs=nnx.Rngs(seed),
  )
  common.fit(model, optax.adam(1e-3), data, steps=args.steps, seed=seed)
  x = jnp.asarray(data.x_train[: args.examples])
  y = jnp.asarray(data.y_train[: args.examples])
  loss, _, _ = common.loss_fns(model, x, y)
  params = nnx.split(model, nnx.Param, ...)[1]
  k1, k2 = jax.random.split(jax.random.key(seed))
  dirs = [analysis.random_direction(k, params) for k in (k1, k2)]
  surface = np.asarray(
    analysis.loss_surface(loss, params, dirs, [coords, coords], batch_size=64)
  )
  centre = surface[len(coords) // 2, len(coords) // 2]
  edge = np.concatenate(
    [surface[0], surface[-1], surface[:, 0], surface[:, -1]]
  )
  return surface, {
    'centre_loss': float(centre),
    'edge_over_centre': float(np.mean(edge) / centre),
    'nonconvex_share': nonconvex_share(surface),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=1500)
  parser.add_argument('--blocks', type=int, default=6)
  parser.add_argument('--channels', type=int, default=16)
  parser.add_argument('--examples', type=int, default=1000)
  parser.add_argument('--grid', type=int, default=21)
  parser.add_argument('--seeds', type=int, default=3)
  common.add_plot_arg(parser)
  args = parser.parse_args(argv)
  data = training.mnist1d()
  coords = jnp.linspace(-1.0, 1.0, args.grid)
  results, surfaces = {}, {}
  for skip in (True, False):
    name = 'skip' if skip else 'no_skip'
    runs = [run(skip, s, data, coords, args) for s in range(args.seeds)]
    surfaces[name] = runs[0][0]
    per_seed = [r[1] for r in runs]
    results[name] = {
      'per_seed': per_seed,
      'summary': {k: mean_ci([r[k] for r in per_seed]) for k in per_seed[0]},
    }
    print(name, results[name]['summary'])
  common.save('analysis_skip_landscape', {**results, 'config': vars(args)})

  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
  for ax, (name, surface) in zip(axes, surfaces.items(), strict=True):
    plotting.plot_contour((coords, coords), np.log(surface), ax=ax, levels=25)
    ax.set_title(f'{name}: log training loss (seed 0)')
  _lib.save_plot(
    fig, common.plot_path(args, __file__, 'skip_landscape.png'), dpi=110
  )


if __name__ == '__main__':
  main()
