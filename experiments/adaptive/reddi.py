"""ACProp, Adam and AMSGrad on Reddi et al.'s online counterexample.

Reddi, Kale & Kumar (2018), section 5: on x in [-1, 1], the loss at step t is
``1010 x`` when ``t % 101 == 1`` and ``-10 x`` otherwise (deterministic), or
``1010 x`` with probability 0.01 and ``-10 x`` otherwise (stochastic, one
sequence per seed). The best point is x = -1; Adam with b1 = 0.9, b2 = 0.99
drifts to the worst point x = +1. Zhuang et al. (2021) claim that ACProp, like
AMSGrad, converges here. Each method takes ``alpha / sqrt(t)`` steps, the
iterate projected back onto [-1, 1] after each update, for a grid of
``alpha`` and betas.

  python -m experiments.adaptive.reddi   # ~1 min
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_zoo
from experiments import _lib

METHODS = {
  'adam': lambda lr, b1, b2: optax.adam(lr, b1=b1, b2=b2),
  'amsgrad': lambda lr, b1, b2: optax.amsgrad(lr, b1=b1, b2=b2),
  'acprop': lambda lr, b1, b2: optax_zoo.acprop(lr, b1=b1, b2=b2),
}
ALPHAS = (0.01, 0.1, 0.5)
BETAS = ((0.9, 0.99), (0.0, 0.99), (0.9, 0.999))


def gradients(kind: str, steps: int, seed: int) -> np.ndarray:
  t = np.arange(1, steps + 1)
  if kind == 'deterministic':
    big = t % 101 == 1
  else:
    big = np.random.default_rng(seed).random(steps) < 0.01
  return np.where(big, 1010.0, -10.0).astype(np.float32)


def trajectories(make, alpha, b1, b2, grads: jax.Array, every: int = 100):
  """The iterates every ``every`` steps, one row per gradient sequence."""
  tx = make(lambda t: alpha / jnp.sqrt(t + 1.0), b1, b2)

  def run(g_seq):
    def step(carry, g):
      x, state = carry
      u, state = tx.update(jnp.reshape(g, (1,)), state, x)
      x = jnp.clip(x + u, -1.0, 1.0)
      return (x, state), x[0]

    x0 = jnp.zeros((1,))
    _, xs = jax.lax.scan(step, (x0, tx.init(x0)), g_seq)
    return xs[every - 1 :: every]

  return jax.jit(jax.vmap(run))(grads)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=100_000)
  parser.add_argument('--seeds', type=int, default=10)
  parser.add_argument(
    '--alphas',
    type=float,
    nargs='+',
    default=ALPHAS,
    help='step sizes alpha (the plot shows alpha 0.1)',
  )
  args = parser.parse_args(argv)
  result = {'steps': args.steps, 'seeds': args.seeds, 'runs': []}
  rows = [
    '| problem | alpha | b1, b2 | '
    + ' | '.join(f'{m} final x' for m in METHODS)
    + ' |',
    '|---|---|---|' + '---|' * len(METHODS),
  ]
  for kind in ('deterministic', 'stochastic'):
    seeds = 1 if kind == 'deterministic' else args.seeds
    grads = jnp.asarray(
      np.stack([gradients(kind, args.steps, s) for s in range(seeds)])
    )
    for alpha in args.alphas:
      for b1, b2 in BETAS:
        cells = []
        for name, make in METHODS.items():
          path = np.asarray(trajectories(make, alpha, b1, b2, grads))
          x = path[:, -1]
          result['runs'].append(
            {
              'problem': kind,
              'alpha': alpha,
              'b1': b1,
              'b2': b2,
              'method': name,
              'final_x': x.tolist(),
              'path_every_100': path[0].tolist(),
            }
          )
          cells.append(
            f'{x.mean():+.2f}'
            if seeds == 1
            else f'{x.mean():+.2f} ± {_lib.mean_ci(x)[1]:.2f}'
          )
        rows.append(
          f'| {kind} | {alpha:g} | {b1:g}, {b2:g} | ' + ' | '.join(cells) + ' |'
        )
        _lib.save('adaptive_reddi', result)
  print('\n'.join(rows))
  plot(result)


def plot(result: dict) -> None:
  """Iterates on the deterministic problem at Reddi et al.'s setting."""
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 3.5))
  for r in result['runs']:
    if (r['problem'], r['alpha'], r['b1'], r['b2']) == (
      'deterministic',
      0.1,
      0.9,
      0.99,
    ):
      steps = 100 * np.arange(1, len(r['path_every_100']) + 1)
      ax.plot(steps, r['path_every_100'], label=r['method'])
  ax.axhline(-1.0, color='k', ls='--', lw=0.8, label='optimum')
  ax.set_xscale('log')
  ax.set_xlabel('step')
  ax.set_ylabel('x')
  ax.set_title("Reddi et al.'s problem (b1 0.9, b2 0.99, alpha 0.1)")
  ax.legend()
  _lib.save_plot(fig, _lib.plot_path(__file__, 'reddi.png'))


if __name__ == '__main__':
  main()
