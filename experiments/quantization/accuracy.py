"""8-bit against 32-bit Adam and AdamW on MNIST-1D, same hyperparameters
(Dettmers et al. 2022: 8-bit state matches 32-bit accuracy without
retuning, at about 75% less state memory).

  python -m experiments.quantization.accuracy

For each model (`training.CNN1D`, `training.MLP` 40-100-100-10) and each
optimizer pair (``adam``/``adam8bit``, ``adamw``/``adamw8bit``), both run at
the 32-bit method's optimum of the learning-rate grid of
``experiments/lr_grid`` (2000 steps, batch 128), with the same
initializations and batch orders (paired seeds 100..109, vmapped as one
program). The 8-bit runs quantize every tensor (``min_size=0``): the
MNIST-1D models have no tensor of the references' 4096 elements but the
MLP's 100x100 layer, so the default would leave most state in 32 bits and
test nothing. AdamW decays by 1e-4 (the registry's example) in both forms.

Verdict: "same accuracy" is read with a non-inferiority margin of
`common.MARGIN` on the paired difference (8-bit minus 32-bit): reproduced
when its 95%
interval lies above minus the margin, not reproduced when it lies below
zero, a tie otherwise. State bytes per parameter are measured from each
optimizer's state pytree on the model.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from flax import nnx

import optax_zoo
from experiments import _lib
from experiments.adaptive import common
from experiments.lr_grid import run as lr_grid
from experiments.quantization import common as common8
from optax_zoo import quantization, training

NAME = 'quantization_accuracy'
WEIGHT_DECAY = 1e-4
PAIRS = {'adam': 'adam8bit', 'adamw': 'adamw8bit'}
# The guard of `quantize_state`: a second moment decodes to at least the
# unsigned map's smallest positive value times its block's maximum.
FLOOR = float(quantization.UNSIGNED_MAP[1])


def make_tx(name: str, lr: float):
  """The optimizer ``name`` at rate ``lr`` (8-bit ones quantize all).

  ``<8-bit name>_floor``: with the second-moment floor `FLOOR`.
  """
  if name == 'adam':
    return optax_zoo.adam(lr)
  if name == 'adamw':
    return optax_zoo.adamw(lr, weight_decay=WEIGHT_DECAY)
  base, _, floor = name.partition('_')
  kwargs = {'min_size': 0, 'second_moment_floor': FLOOR if floor else None}
  if base == 'adam8bit':
    return quantization.adam8bit(lr, **kwargs)
  return quantization.adamw8bit(lr, weight_decay=WEIGHT_DECAY, **kwargs)


def variants(base: str) -> tuple[str, str]:
  """The 8-bit forms compared with ``base``: plain and with the floor."""
  return PAIRS[base], f'{PAIRS[base]}_floor'


def state_bytes_per_param(tx, model: str) -> float:
  """Optimizer state bytes per parameter of ``model``, from its shapes."""
  params = nnx.state(
    nnx.eval_shape(lambda: lr_grid.MODELS[model](nnx.Rngs(0))), nnx.Param
  )
  state = jax.eval_shape(tx.init, params)
  size = sum(x.size for x in jax.tree.leaves(params))
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)) / size


def run_one(name, model, lr, seeds, args, data) -> dict:
  start = time.time()
  histories = common.train(
    make_tx(name, lr),
    model,
    seeds=seeds,
    steps=args.steps,
    batch_size=args.batch,
    data=data,
    desc=f'{model} {name}',
  )
  acc = [float(h.test_accuracy[-1]) for h in histories]
  print(
    f'{model} {name} lr {lr:g}: acc {np.mean(acc):.4f} '
    f'({time.time() - start:.0f} s)',
    flush=True,
  )
  return {
    'lr': lr,
    'accuracy': acc,
    'final_train_loss': [float(h.train_loss[-1]) for h in histories],
    'finite': common8.finite(histories),
    'state_bytes_per_param': state_bytes_per_param(make_tx(name, lr), model),
  }


def summarize(result) -> dict:
  summary = {}
  for key, run in result['runs'].items():
    model, name = key.split()
    if name not in PAIRS:
      continue
    for low in variants(name):
      q = result['runs'].get(f'{model} {low}')
      if q is None:
        continue
      diff = _lib.paired(q['accuracy'], run['accuracy'])
      summary[f'{model} {low}'] = {
        'lr': run['lr'],
        '32bit': _lib.summary(run['accuracy']),
        '8bit': _lib.summary(q['accuracy']),
        '8bit_minus_32bit': diff,
        'verdict': common8.word(diff),
        'state_bytes_per_param': {
          '32bit': run['state_bytes_per_param'],
          '8bit': q['state_bytes_per_param'],
        },
        'state_saving': 1
        - q['state_bytes_per_param'] / run['state_bytes_per_param'],
        'all_finite': run['finite'] and q['finite'],
      }
  return summary


def plot(result) -> None:
  import matplotlib.pyplot as plt

  rows = result['summary']
  fig, ax = plt.subplots(figsize=(6, 3.5))
  common8.paired_errorbars(ax, rows.values())
  ax.set_xticks(range(len(rows)), list(rows), fontsize=6, rotation=20)
  ax.set_ylabel('test accuracy (%)')
  ax.set_title('MNIST-1D: 8-bit vs 32-bit state, same rate', fontsize=9)
  ax.legend(fontsize=8)
  _lib.save_plot(fig, _lib.plot_path(__file__, 'accuracy.png'))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=2000)
  parser.add_argument('--batch', type=int, default=128)
  common.add_seeds_arg(parser)
  parser.add_argument('--models', nargs='+', default=['cnn', 'mlp'])
  parser.add_argument('--pairs', nargs='+', default=list(PAIRS))
  args = parser.parse_args(argv)
  seeds = common.eval_seeds(args.seeds)
  data = training.mnist1d()
  result = _lib.resume(
    NAME,
    steps=args.steps,
    batch=args.batch,
    seeds=seeds,
    weight_decay=WEIGHT_DECAY,
  )
  runs = result['runs']
  for model in args.models:
    for base in args.pairs:
      lr = common.grid_learning_rate(base, model)
      for name in (base, *variants(base)):
        key = f'{model} {name}'
        if key not in runs:
          runs[key] = run_one(name, model, lr, seeds, args, data)
          _lib.save(NAME, result)
  result['summary'] = summarize(result)
  result['setting'] = (
    f'MNIST-1D, batch {args.batch}, {args.steps} steps, seeds {seeds}; '
    "CNN1D and MLP 40-100-100-10; each pair at the 32-bit method's lr "
    f'grid optimum; 8-bit: block 256, min_size 0 (every tensor); AdamW '
    f'weight decay {WEIGHT_DECAY}; _floor: second_moment_floor {FLOOR:.3g}'
  )
  _lib.save(NAME, result)
  for key, s in result['summary'].items():
    print(
      f'{key:22s} 32-bit {_lib.fmt(s["32bit"])}  8-bit {_lib.fmt(s["8bit"])}'
      f'  diff {_lib.fmt(s["8bit_minus_32bit"])}  state '
      f'{s["state_bytes_per_param"]["32bit"]:.2f} -> '
      f'{s["state_bytes_per_param"]["8bit"]:.2f} B/param: {s["verdict"]}'
    )
  plot(result)


if __name__ == '__main__':
  main()
