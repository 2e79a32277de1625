"""Learning-rate grid for every registered method on the MNIST-1D CNN.

The registry's `MethodInfo.learning_rate` (the default of `optax-zoo bench`)
is the grid point with the best mean final test accuracy here; a test checks
that the two agree. Writes ``experiments/results/lr_grid.json`` after each
method; a rerun with the same steps and seeds resumes, computing only the
(method, rate) points the file lacks.

  python experiments/lr_grid/run.py            # ~20 min on 2 CPU cores
  python experiments/lr_grid/run.py --methods adam,sgd --steps 500
  python experiments/lr_grid/run.py --model mlp  # lr_grid_mlp.json

The MLP grid (Greydanus' 100-100 MLP) tunes the adaptive experiments' MLP
runs; the registry follows the CNN grid.
"""

import argparse
import json
import pathlib

import numpy as np

import optax_zoo
from optax_zoo import training

GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0)
RESULTS = pathlib.Path(__file__).parents[1] / 'results'
MODELS = {
  'cnn': lambda rngs: training.CNN1D(rngs=rngs),
  'mlp': lambda rngs: training.MLP(40, rngs=rngs),
}


def results_path(model: str) -> pathlib.Path:
  return RESULTS / (
    'lr_grid.json' if model == 'cnn' else f'lr_grid_{model}.json'
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--methods', default='all')
  parser.add_argument('--steps', type=int, default=2000)
  parser.add_argument('--seeds', type=int, default=2)
  parser.add_argument('--model', choices=sorted(MODELS), default='cnn')
  parser.add_argument('--out', type=pathlib.Path, default=None)
  args = parser.parse_args()
  args.out = args.out or results_path(args.model)
  names = (
    [m.name for m in optax_zoo.methods()]
    if args.methods == 'all'
    else args.methods.split(',')
  )
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
  for name in names:
    info = optax_zoo.get(name)
    accuracy = result['accuracy'].setdefault(name, {})
    for lr in GRID:
      if str(lr) in accuracy:
        continue
      histories = training.train_seeds(
        MODELS[args.model],
        info.build(lr),
        data,
        seeds=range(args.seeds),
        steps=args.steps,
        eval_every=250,
        desc=f'{name} lr={lr:g}',
      )
      accuracy[str(lr)] = float(np.mean([h.final_accuracy for h in histories]))
    best = max(accuracy, key=accuracy.get)
    print(f'{name}: best lr {best} ({accuracy[best]:.3f})', flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
  main()
