"""Time to the top Hessian eigenvalue: optax_zoo.analysis against PyHessian.

Same MLP, weights and data (one batch of MNIST-1D training examples), same
CPU, one process, float32, PyHessian's tolerance convention (relative change
of successive estimates < tol). Each side is timed cold (the first call,
including JAX's compilation or PyTorch's graph set-up) and warm (median of
repeated calls from fresh random starts). Needs torch and pyhessian:

  pip install torch==2.13.0 pyhessian==0.1
  python -m experiments.perf.hessian_vs_pyhessian

Writes experiments/results/hessian_vs_pyhessian.json.
"""

import argparse
import itertools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx
from pyhessian import hessian as PyHessian

from experiments import _lib
from optax_zoo import analysis, training


def torch_mlp(params, sizes):
  layers = []
  for i, (a, b) in enumerate(itertools.pairwise(sizes)):
    linear = torch.nn.Linear(a, b)
    layer = params['hidden'][i] if i < len(sizes) - 2 else params['head']
    with torch.no_grad():
      linear.weight.copy_(torch.tensor(np.asarray(layer['kernel'])).T)
      linear.bias.copy_(torch.tensor(np.asarray(layer['bias'])))
    layers += [linear, torch.nn.ReLU()]
  return torch.nn.Sequential(*layers[:-1])


def timed(fn, repeats):
  times, out = [], None
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
  return times, out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--examples', type=int, default=1000)
  parser.add_argument('--hidden', type=int, nargs='+', default=[100, 100])
  parser.add_argument('--tol', type=float, default=1e-3)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument(
    '--train-steps',
    type=int,
    default=300,
    help='Adam steps before the Hessian is measured',
  )
  parser.add_argument(
    '--out',
    type=pathlib.Path,
    default=None,
    help='the JSON (default: hessian_vs_pyhessian.json in the results)',
  )
  args = parser.parse_args(argv)
  args.out = args.out or _lib.result_path('hessian_vs_pyhessian')
  torch.set_num_threads(2)

  data = training.mnist1d()
  model = training.MLP(data.num_features, args.hidden, rngs=nnx.Rngs(0))
  training.train(model, optax.adam(1e-3), data, steps=args.train_steps)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = data.x_train[: args.examples]
  y = data.y_train[: args.examples]
  xj, yj = jnp.asarray(x), jnp.asarray(y)

  def loss_fn(p):
    logits = nnx.merge(graphdef, p, rest)(xj)
    return training.cross_entropy_loss(logits, yj)

  sizes = [data.num_features, *args.hidden, data.num_classes]
  tmodel = torch_mlp(jax.tree.map(np.asarray, nnx.to_pure_dict(params)), sizes)
  criterion = torch.nn.CrossEntropyLoss()
  data_t = (torch.tensor(x), torch.tensor(y, dtype=torch.long))

  def pyhessian_top():
    ref = PyHessian(tmodel, criterion, data=data_t, cuda=False)
    return ref.eigenvalues(maxIter=100, tol=args.tol, top_n=1)[0][0]

  results = {'num_params': int(sum(p.numel() for p in tmodel.parameters()))}
  torch.manual_seed(0)
  times, value = timed(pyhessian_top, args.repeats + 1)
  results['pyhessian'] = {
    'cold_s': times[0],
    'warm_s': float(np.median(times[1:])),
    'top': value,
  }
  for method in ('power', 'lanczos'):
    keys = iter(jax.random.split(jax.random.key(0), args.repeats + 1))

    def ours(method=method, keys=keys):
      out = analysis.top_hessian_eigenvalues(
        loss_fn,
        params,
        key=next(keys),
        tol=args.tol,
        method=method,
      )
      return float(out.eigenvalues[0]), out.num_matvecs

    times, (value, matvecs) = timed(ours, args.repeats + 1)
    results[method] = {
      'cold_s': times[0],
      'warm_s': float(np.median(times[1:])),
      'top': value,
      'matvecs': matvecs,
    }
  dense = None
  if results['num_params'] <= 3000:  # the dense Hessian's memory grows fast
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    dense = float(
      jnp.linalg.eigvalsh(jax.hessian(lambda f: loss_fn(unravel(f)))(flat))[-1]
    )
  results['dense_top'] = dense
  for method in ('power', 'lanczos'):
    r = results[method]
    r['warm_speedup_vs_pyhessian'] = (
      results['pyhessian']['warm_s'] / r['warm_s']
    )
    r['cold_speedup_vs_pyhessian'] = (
      results['pyhessian']['cold_s'] / r['cold_s']
    )
  results['config'] = {**vars(args), 'out': str(args.out)}
  _lib.write_json(args.out, results, indent=2)
  print(json.dumps(results, indent=2))


if __name__ == '__main__':
  main()
