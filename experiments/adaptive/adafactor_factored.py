"""Adafactor where its layers are factored (Shazeer & Stern 2018).

The claim: factoring the second moment into row and column statistics
trains as well as the full (unfactored) second moment, and as Adam, with
memory sublinear in each matrix. The leaderboard's MNIST-1D models have no
matrix wide enough for the default threshold (128), so there Adafactor never
factored. Here an MLP 40-256-256-10 with ``min_dim_size_to_factor=1`` (the
paper factors every matrix: all three kernels) against the same Adafactor
with ``factored=False`` and against Adam; Adafactor otherwise at its
defaults (update clipping 1, decay 1 - t^-0.8, parameter scaling). Each
configuration at its own best rate of its grid on selection seeds 0-2
(``experiments.training.common.tune``), then 10 fresh seeds (100-109);
batch 128, 2000 steps, constant rate. Reported: final test accuracy, paired
differences, and optimizer state bytes per parameter.

  python -m experiments.adaptive.adafactor_factored   # ~8 min on 2 cores
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import optax_zoo
from experiments import _lib
from experiments.training import common as c
from optax_zoo import training
from optax_zoo._src.test_utils import state_bytes

NAME = 'adaptive_adafactor_factored'
HIDDEN = (256, 256)
GRIDS = {
  'adam': (1e-3, 3e-3, 1e-2, 3e-2),
  'adafactor-factored': (3e-3, 1e-2, 3e-2, 0.1),
  'adafactor-unfactored': (3e-3, 1e-2, 3e-2, 0.1),
}


def make(name: str, lr: float) -> optax.GradientTransformation:
  if name == 'adam':
    return optax.adam(lr)
  return optax_zoo.adafactor(
    lr, min_dim_size_to_factor=1, factored=name == 'adafactor-factored'
  )


def model_fn(rngs: nnx.Rngs) -> nnx.Module:
  return training.MLP(40, HIDDEN, rngs=rngs)


def bytes_per_param(name: str) -> float:
  params = nnx.state(model_fn(nnx.Rngs(0)), nnx.Param)
  n = sum(np.size(x) for x in jax.tree.leaves(params))
  state = make(name, 1e-2).init(jax.tree.map(jnp.asarray, params))
  return state_bytes(state) / n


def run(name, lr, seeds, args, data) -> list[training.History]:
  return training.train_seeds(
    model_fn,
    make(name, lr),
    data,
    seeds=seeds,
    steps=args.steps,
    batch_size=128,
    eval_every=max(1, args.steps // 20),
    desc=f'{name} {lr:g}',
  ).histories


def plot(runs: dict, path) -> None:
  import matplotlib.pyplot as plt

  from optax_zoo.analysis import plotting

  fig, ax = plt.subplots(figsize=(5.5, 3.5))
  plotting.seed_boxplot(
    {
      f'{n}\n{r["lr"]:g}, {r["state_bytes_per_param"]:.2f} B/param': r[
        'accuracy'
      ]
      for n, r in runs.items()
    },
    ax,
  )
  ax.set_title(f'MLP 40-{HIDDEN[0]}-{HIDDEN[1]}-10, MNIST-1D, per seed')
  _lib.save_plot(fig, path)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  c.add_common_args(parser, steps=2000)
  parser.add_argument(
    '--methods', nargs='+', default=list(GRIDS), choices=list(GRIDS)
  )
  args = parser.parse_args(argv)
  # --rates replaces every method's grid (the smoke run uses one rate).
  if tuple(args.rates) != c.RATES:
    grids = {n: tuple(args.rates) for n in args.methods}
  else:
    grids = {n: GRIDS[n] for n in args.methods}
  data = training.mnist1d()
  seeds = c.eval_seeds(args.seeds)
  result = _lib.resume(
    NAME,
    steps=args.steps,
    seeds=seeds,
    hidden=list(HIDDEN),
    grids={n: list(g) for n, g in grids.items()},
  )

  def save():
    _lib.save(NAME, result)

  for name in args.methods:
    if name in result['runs']:
      continue
    lr = c.tune(
      result,
      name,
      grids[name],
      lambda lr, s, name=name: np.mean(
        [h.final_accuracy for h in run(name, lr, s, args, data)]
      ),
      selection_seeds=args.selection_seeds,
      save=save,
    )
    histories = run(name, lr, seeds, args, data)
    result['runs'][name] = {
      'lr': lr,
      'lr_at_grid_edge': lr in (min(grids[name]), max(grids[name])),
      'accuracy': [h.final_accuracy for h in histories],
      'state_bytes_per_param': bytes_per_param(name),
    }
    save()
  runs = result['runs']
  summary = {}
  for name, r in runs.items():
    summary[name] = {'accuracy': _lib.summary(r['accuracy'])}
    for other in runs:
      if other != name:
        summary[name][f'minus {other}'] = _lib.paired(
          r['accuracy'], runs[other]['accuracy']
        )
        summary[name][f'verdict vs {other}'] = _lib.verdict(
          r['accuracy'], runs[other]['accuracy']
        )
  result['summary'] = summary
  save()
  plot(runs, _lib.plot_path(__file__, 'adafactor_factored.png'))
  print(
    '| method | lr | accuracy (%) | state B/param | vs adam | vs unfactored |'
  )
  print('|---|---|---|---|---|---|')
  for name, r in runs.items():
    s = summary[name]
    cols = []
    for other in ('adam', 'adafactor-unfactored'):
      key = f'minus {other}'
      cols.append(
        f'{_lib.fmt(s[key])} ({s[f"verdict vs {other}"]})' if key in s else ''
      )
    print(
      f'| {name} | {r["lr"]:g} | {_lib.fmt(s["accuracy"])} | '
      f'{r["state_bytes_per_param"]:.2f} | {cols[0]} | {cols[1]} |'
    )


if __name__ == '__main__':
  main()
