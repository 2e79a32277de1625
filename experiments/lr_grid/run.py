"""Learning-rate grid for every registered method on the MNIST-1D CNN.

The registry's `MethodInfo.learning_rate` (the default of `optax-zoo bench`)
is the grid point with the best mean final test accuracy here; a test checks
that the two agree. Any registered method runs, wrappers and methods with
extra update arguments included (`MethodInfo.build` puts the rate where it
belongs, the training loop supplies the arguments). Writes
``experiments/results/lr_grid.json`` after each method; a rerun with the same
steps and seeds resumes, computing only the (method, rate) points the file
lacks.

  python -m experiments.lr_grid.run            # ~20 min on 2 CPU cores
  python -m experiments.lr_grid.run --methods adam,sgd --steps 500
  python -m experiments.lr_grid.run --model mlp  # lr_grid_mlp.json

The MLP grid (Greydanus' 100-100 MLP) tunes the adaptive experiments' MLP
runs; the registry follows the CNN grid.
"""

import argparse
import json
import pathlib

import numpy as np

import optax_zoo
from experiments import _lib
from optax_zoo import training

GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0)
MODELS = {
  'cnn': lambda rngs: training.CNN1D(rngs=rngs),
  'mlp': lambda rngs: training.MLP(40, rngs=rngs),
}


def results_path(model: str) -> pathlib.Path:
  return _lib.result_path('lr_grid' if model == 'cnn' else f'lr_grid_{model}')


def method_names(methods: str) -> list[str]:
  """The registry names in ``methods`` ('all' or comma-separated).

  'all' leaves out the methods a single-model, single-device grid cannot
  train (`MethodInfo.single_model_skip_reason`: the distributed ones and
  those with replicated parameters).
  """
  if methods == 'all':
    return [
      m.name for m in optax_zoo.methods() if not m.single_model_skip_reason()
    ]
  return methods.split(',')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--methods', default='all')
  parser.add_argument('--steps', type=int, default=2000)
  parser.add_argument('--seeds', type=int, default=2)
  parser.add_argument('--model', choices=sorted(MODELS), default='cnn')
  parser.add_argument(
    '--rates',
    type=float,
    nargs='+',
    default=GRID,
    help='the grid points to run (default: the whole grid)',
  )
  parser.add_argument('--out', type=pathlib.Path, default=None)
  args = parser.parse_args(argv)
  args.out = args.out or results_path(args.model)
  infos = [optax_zoo.get(name) for name in method_names(args.methods)]
  for info in infos:
    why = info.single_model_skip_reason()
    if why:
      parser.error(f'{info.name} {why}')
  data = training.mnist1d()
  config = {
    'model': args.model,
    'data': 'mnist1d',
    'steps': args.steps,
    'seeds': list(range(args.seeds)),
    'batch_size': 128,
    'metric': 'mean final test accuracy',
    'grid': list(GRID),
  }
  result = {'config': config, 'accuracy': {}}
  if args.out.exists():
    previous = json.loads(args.out.read_text())
    same = ('steps', 'seeds', 'batch_size')
    if all(previous['config'][k] == config[k] for k in same):
      result['accuracy'] = previous['accuracy']
  for info in infos:
    accuracy = result['accuracy'].setdefault(info.name, {})
    for lr in args.rates:
      if str(lr) in accuracy:
        continue
      history = training.train_seeds(
        MODELS[args.model],
        info.build(lr),
        data,
        seeds=config['seeds'],
        steps=args.steps,
        eval_every=250,
        desc=f'{info.name} lr={lr:g}',
      ).history
      accuracy[str(lr)] = float(np.mean(history.final_accuracy))
    best = max(accuracy, key=accuracy.get)
    print(f'{info.name}: best lr {best} ({accuracy[best]:.3f})', flush=True)
    _lib.write_json(args.out, result)


if __name__ == '__main__':
  main()
