"""Entropy-SGD and Replicated-SGD against SGD at equal gradient evaluations
on MNIST-1D (MLP), with the flatness of the minima each finds and the rank
correlation of flatness with test accuracy (Chaudhari et al. 2017,
Pittorino et al. 2021).

Every method gets the same budget of ``--grads`` minibatch gradients of
``--batch`` examples per seed: SGD takes that many steps; Entropy-SGD takes
``grads / L`` outer steps of ``L`` Langevin gradients, each on its own
minibatch (a step's batch holds ``L`` minibatches); Replicated-SGD takes
``grads / R`` steps of ``R`` replicas, each replica on its own minibatch.
All three use SGD with Nesterov momentum 0.9 and a cosine-decayed rate
(Entropy-SGD's outer optimizer, each replica's optimizer), each at the best
rate of one grid measured on separate tuning seeds. Entropy-SGD is
evaluated at its weights x, Replicated-SGD at the replicas' centre.

  python -m experiments.sharpness.entropy_replicated --seeds 10 --grads 8000
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import stats

import optax_zoo
from experiments import _lib
from optax_zoo import analysis, training
from optax_zoo._src import extra_args

NAME = 'sharpness_entropy_replicated'
METHODS = ('sgd', 'entropy_sgd', 'replicated_sgd')
HIDDEN = (100, 100)
FIRST_EVAL_SEED, FIRST_TUNE_SEED = 100, 0


# -- the model: optax_zoo.training.MLP's architecture and initialization
# (LeCun-normal kernels, zero biases), written functionally so that seeds
# and replicas are plain vmapped axes.


def init_mlp(key, sizes):
  params = []
  for k, (a, b) in zip(
    jax.random.split(key, len(sizes) - 1),
    itertools.pairwise(sizes),
    strict=True,
  ):
    w = jax.nn.initializers.lecun_normal()(k, (a, b), jnp.float32)
    params.append({'w': w, 'b': jnp.zeros(b)})
  return params


def logits_fn(params, x):
  for layer in params[:-1]:
    x = jax.nn.relu(x @ layer['w'] + layer['b'])
  return x @ params[-1]['w'] + params[-1]['b']


def per_example_loss(params, batch):
  x, y = batch
  return optax.softmax_cross_entropy_with_integer_labels(
    logits_fn(params, x), y
  )


def mean_loss(params, batch):
  return jnp.mean(per_example_loss(params, batch))


def accuracy(params, x, y):
  return jnp.mean(jnp.argmax(logits_fn(params, x), -1) == y)


# -- one method, all seeds of one rate in one vmapped program


def _inner(lr, steps):
  return optax.sgd(
    optax.cosine_decay_schedule(lr, steps), momentum=0.9, nesterov=True
  )


def method_steps(method, cfg):
  """Optimizer steps of ``method`` within the gradient budget."""
  per_step = {
    'sgd': 1,
    'entropy_sgd': cfg['langevin_steps'],
    'replicated_sgd': cfg['replicas'],
  }[method]
  return cfg['grads'] // per_step, per_step


def train_method(method, lr, seeds, data, cfg):
  """Trains ``method`` at rate ``lr`` on every seed; per-seed metrics.

  Returns the evaluated parameters (stacked over seeds) and a dict of
  per-seed arrays.
  """
  steps, per_step = method_steps(method, cfg)
  m, n_train = cfg['batch'], data.x_train.shape[0]
  sizes = (data.num_features, *HIDDEN, data.num_classes)
  x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
  inner = _inner(lr, steps)
  r = cfg['replicas']

  if method == 'sgd':
    tx = inner
  elif method == 'entropy_sgd':
    tx = None  # built per seed: its noise key is the seed's
  else:
    loss_r = optax_zoo.replicated_loss(per_example_loss, r)

  def run(seed):
    key_init, key_data, key_noise = jax.random.split(jax.random.key(seed), 3)
    if method == 'replicated_sgd':
      # Independent initializations, as the reference (one Net() each).
      params = jax.vmap(lambda k: init_mlp(k, sizes))(
        jax.random.split(key_init, r)
      )
      # The reference's initial coupling: its coupling loss equals the
      # training loss at the start (g = loss / mean_a ||x_a - c||^2; ours
      # is 2 g), grown by gmax over the run's epochs.
      batch0 = (x_train[:1000], y_train[:1000])
      loss0 = jnp.mean(jax.vmap(mean_loss, (0, None))(params, batch0))
      centre = optax_zoo.replica_mean(params)
      dist0 = sum(
        jnp.sum((a - c) ** 2) / r
        for a, c in zip(
          jax.tree.leaves(params), jax.tree.leaves(centre), strict=True
        )
      )
      steps_per_epoch = max(1, n_train // m)  # each replica sees m a step
      epochs = max(1, math.ceil(steps / steps_per_epoch))
      coupling = optax_zoo.exponential_coupling(
        cfg['coupling_scale'] * 2 * loss0 / dist0,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        max_factor=cfg['gmax'],
      )
      opt = optax_zoo.replicated_sgd(inner, num_replicas=r, coupling=coupling)
    elif method == 'entropy_sgd':
      params = init_mlp(key_init, sizes)
      opt = optax_zoo.entropy_sgd(
        inner,
        langevin_steps=cfg['langevin_steps'],
        gamma=cfg['gamma'],
        scoping=cfg['scoping'],
        langevin_lr=cfg['langevin_lr'],
        noise=cfg['noise'],
        key=key_noise,
      )
    else:
      params = init_mlp(key_init, sizes)
      opt = tx
    state = opt.init(params)

    def step(carry, t):
      params, state = carry
      idx = jax.random.randint(
        jax.random.fold_in(key_data, t), (per_step * m,), 0, n_train
      )
      batch = (x_train[idx], y_train[idx])
      if method == 'entropy_sgd':
        # The gradient at x is unused (only its NaNs pass): zeros cost
        # nothing, so a step costs exactly L minibatch gradients.
        extra = extra_args.supply(['grad_fn'], per_example_loss, params, batch)
        grads = jax.tree.map(jnp.zeros_like, params)
        loss = jnp.nan
      elif method == 'replicated_sgd':
        loss, grads = jax.value_and_grad(lambda p: jnp.mean(loss_r(p, batch)))(
          params
        )
        extra = {}
      else:
        loss, grads = jax.value_and_grad(mean_loss)(params, batch)
        extra = {}
      updates, state = opt.update(grads, state, params, **extra)
      return (optax.apply_updates(params, updates), state), loss

    (params, state), _ = jax.lax.scan(step, (params, state), jnp.arange(steps))
    out = {}
    if method == 'replicated_sgd':
      replicas = params
      params = optax_zoo.replica_mean(replicas)
      out['replica_accuracy'] = jnp.mean(
        jax.vmap(accuracy, (0, None, None))(replicas, x_test, y_test)
      )
      out['replica_spread'] = jnp.sqrt(
        sum(
          jnp.sum((a - c) ** 2) / r
          for a, c in zip(
            jax.tree.leaves(replicas), jax.tree.leaves(params), strict=True
          )
        )
      )
    out['test_accuracy'] = accuracy(params, x_test, y_test)
    out['train_accuracy'] = accuracy(params, x_train, y_train)
    out['train_loss'] = mean_loss(params, (x_train, y_train))
    out['test_loss'] = mean_loss(params, (x_test, y_test))
    return params, out

  params, out = jax.jit(jax.vmap(run))(jnp.asarray(seeds))
  return params, {k: np.asarray(v) for k, v in out.items()}


def measure_names(cfg) -> list[str]:
  """One name per flatness measure and scale, e.g. ``sam_sharpness@0.05``."""
  return [
    *(f'sam_sharpness@{r:g}' for r in cfg['rho']),
    *(f'average_sharpness@{s:g}' for s in cfg['sigma']),
    *(f'local_energy@{s:g}' for s in cfg['le_sigma']),
  ]


def flatness(params, seeds, data, cfg):
  """The flatness measures of each seed's minimum, on the training set.

  SAM sharpness (one ascent step, radius rho), average sharpness (Gaussian
  noise of standard deviation sigma) and Pittorino et al.'s local energy
  (multiplicative noise sigma * z * w), each at every scale of ``cfg``.
  """
  n = data.x_train.shape[0]
  size = cfg['flat_batch']
  nb = n // size
  batches = (
    jnp.asarray(data.x_train[: nb * size]).reshape(nb, size, -1),
    jnp.asarray(data.y_train[: nb * size]).reshape(nb, size),
  )

  def measure(p, seed):
    key = jax.random.key(seed + 12345)
    values = [
      analysis.sam_sharpness(mean_loss, p, batches, rho=r).value
      for r in cfg['rho']
    ]
    for i, sigma in enumerate(cfg['sigma']):
      values.append(
        analysis.average_sharpness(
          mean_loss,
          p,
          batches,
          sigma=sigma,
          key=jax.random.fold_in(key, i),
          num_samples=cfg['samples'],
        ).value
      )
    for i, sigma in enumerate(cfg['le_sigma']):
      values.append(
        analysis.local_energy(
          mean_loss,
          p,
          batches,
          sigma=sigma,
          key=jax.random.fold_in(key, 1000 + i),
          num_samples=cfg['samples'],
        ).value
      )
    return values

  values = jax.jit(jax.vmap(measure))(params, jnp.asarray(seeds))
  return {
    k: np.asarray(v) for k, v in zip(measure_names(cfg), values, strict=True)
  }


def spearman(x, y) -> dict:
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  ok = np.isfinite(x) & np.isfinite(y)
  if ok.sum() < 3:
    return {'rho': None, 'p': None, 'n': int(ok.sum())}
  res = stats.spearmanr(x[ok], y[ok])
  return {
    'rho': float(res.statistic),
    'p': float(res.pvalue),
    'n': int(ok.sum()),
  }


def _plot(out, path):
  import matplotlib.pyplot as plt

  methods = [m for m in METHODS if m in out['runs']]
  measures = measure_names(out)
  cols = math.ceil((1 + len(measures)) / 2)
  fig, axes = plt.subplots(2, cols, figsize=(4.2 * cols, 7.2))
  axes = axes.ravel()
  for ax in axes[1 + len(measures) :]:
    ax.axis('off')
  colors = dict(zip(METHODS, ('C0', 'C1', 'C2'), strict=True))
  ax = axes[0]
  for i, m in enumerate(methods):
    acc = 100 * np.asarray(out['runs'][m]['test_accuracy'])
    ax.scatter(np.full(acc.shape, i), acc, color=colors[m], alpha=0.6)
    s = out['summary'][m]['test_accuracy']
    ax.errorbar(
      i + 0.15,
      100 * s['mean'],
      yerr=100 * s['ci95'],
      fmt='o',
      color='k',
      capsize=4,
    )
  ax.set_xticks(range(len(methods)), methods)
  ax.set_ylabel('test accuracy (%)')
  ax.set_title(f'equal gradient evaluations ({out["grads"]})')
  for ax, measure in zip(axes[1:], measures, strict=False):
    for m in methods:
      run = out['runs'][m]
      ax.scatter(
        run[measure],
        100 * np.asarray(run['test_accuracy']),
        color=colors[m],
        label=m,
        alpha=0.7,
      )
    rho = out['correlation'][measure]['pooled']['rho']
    label = 'n/a' if rho is None else f'{rho:+.2f}'
    ax.set_title(f'{measure}\n(Spearman {label})', fontsize=9)
    ax.set_xlabel(measure, fontsize=8)
  axes[1].legend(fontsize=8)
  _lib.save_plot(fig, path)


def main(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument('--seeds', type=int, default=10, help='evaluation seeds')
  p.add_argument('--tune-seeds', type=int, default=2, help='for the lr grid')
  p.add_argument(
    '--grads', type=int, default=8000, help='minibatch gradients per seed'
  )
  p.add_argument('--batch', type=int, default=32, help='minibatch size')
  p.add_argument(
    '--rates',
    type=float,
    nargs='+',
    default=None,
    help='the rate grid (one rate: used without tuning)',
  )
  p.add_argument('--methods', nargs='+', default=list(METHODS))
  p.add_argument('--langevin-steps', type=int, default=5)
  p.add_argument('--gamma', type=float, default=0.03)
  p.add_argument('--scoping', type=float, default=1e-3)
  p.add_argument('--langevin-lr', type=float, default=0.1)
  p.add_argument('--noise', type=float, default=1e-4)
  p.add_argument('--replicas', type=int, default=3)
  p.add_argument('--gmax', type=float, default=1e4)
  p.add_argument(
    '--coupling-scale',
    type=float,
    default=1.0,
    help='times the reference initial coupling (loss / distance)',
  )
  p.add_argument('--rho', type=float, nargs='+', default=[0.05, 0.5])
  p.add_argument('--sigma', type=float, nargs='+', default=[0.01, 0.03])
  p.add_argument('--le-sigma', type=float, nargs='+', default=[0.1, 0.3])
  p.add_argument('--samples', type=int, default=16)
  p.add_argument('--flat-batch', type=int, default=500)
  args = p.parse_args(argv)
  rates = args.rates or [0.01, 0.03, 0.1, 0.3, 1.0]
  cfg = {
    'grads': args.grads,
    'batch': args.batch,
    'seeds': args.seeds,
    'tune_seeds': args.tune_seeds,
    'rates': rates,
    'langevin_steps': args.langevin_steps,
    'gamma': args.gamma,
    'scoping': args.scoping,
    'langevin_lr': args.langevin_lr,
    'noise': args.noise,
    'replicas': args.replicas,
    'gmax': args.gmax,
    'coupling_scale': args.coupling_scale,
    'rho': args.rho,
    'sigma': args.sigma,
    'le_sigma': args.le_sigma,
    'samples': args.samples,
    'flat_batch': args.flat_batch,
  }
  data = training.mnist1d()
  out = _lib.resume(NAME, **cfg)
  out.setdefault('grid', {})
  tune = list(range(FIRST_TUNE_SEED, FIRST_TUNE_SEED + args.tune_seeds))
  seeds = list(range(FIRST_EVAL_SEED, FIRST_EVAL_SEED + args.seeds))
  t_start = time.time()
  for method in args.methods:
    grid = out['grid'].setdefault(method, {})
    for lr in rates:
      if str(lr) in grid or len(rates) == 1:  # one rate: nothing to tune
        continue
      t0 = time.time()
      _, res = train_method(method, lr, tune, data, cfg)
      grid[str(lr)] = float(np.mean(res['test_accuracy']))
      _lib.save(NAME, out)
      print(
        f'[grid] {method:15s} lr {lr:<6g} acc {grid[str(lr)]:.4f} '
        f'({time.time() - t0:.0f}s, total {time.time() - t_start:.0f}s)',
        flush=True,
      )
    best = float(max(grid, key=lambda k: grid[k])) if grid else rates[0]
    if method in out['runs'] and out['runs'][method].get('lr') == best:
      continue
    t0 = time.time()
    params, res = train_method(method, best, seeds, data, cfg)
    flat = flatness(params, seeds, data, cfg)
    steps, per_step = method_steps(method, cfg)
    out['runs'][method] = {
      'lr': best,
      'steps': steps,
      'grads_per_step': per_step,
      **{k: v.tolist() for k, v in res.items()},
      **{k: v.tolist() for k, v in flat.items()},
    }
    _lib.save(NAME, out)
    print(
      f'[eval] {method:15s} lr {best:<6g} '
      f'acc {_lib.pct(res["test_accuracy"])} ({time.time() - t0:.0f}s)',
      flush=True,
    )
  done = [m for m in METHODS if m in out['runs']]
  measures = measure_names(cfg)
  keys = ['test_accuracy', 'train_loss', *measures]
  out['summary'] = {
    m: {k: _lib.summary(out['runs'][m][k]) for k in keys} for m in done
  }
  if 'sgd' in done:
    out['paired_vs_sgd'] = {
      m: _lib.paired(
        out['runs'][m]['test_accuracy'], out['runs']['sgd']['test_accuracy']
      )
      for m in done
      if m != 'sgd'
    }
  out['correlation'] = {
    k: {
      'pooled': spearman(
        np.concatenate([out['runs'][m][k] for m in done]),
        np.concatenate([out['runs'][m]['test_accuracy'] for m in done]),
      ),
      **{
        m: spearman(out['runs'][m][k], out['runs'][m]['test_accuracy'])
        for m in done
      },
    }
    for k in measures
  }
  out['setting'] = (
    f'MNIST-1D MLP {HIDDEN}, {args.grads} minibatch gradients of '
    f'{args.batch} per seed, {args.seeds} seeds from {FIRST_EVAL_SEED} (rate '
    f'grid {rates} on {args.tune_seeds} seeds from {FIRST_TUNE_SEED}); '
    f'Entropy-SGD L={args.langevin_steps}, gamma={args.gamma}, '
    f'scoping={args.scoping}; Replicated-SGD R={args.replicas}, coupling '
    f'from the reference balance x{args.coupling_scale}, grown by '
    f'{args.gmax:g} over the epochs; flatness on the training set: SAM '
    f'rho={args.rho}, average sharpness sigma={args.sigma}, local energy '
    f'sigma={args.le_sigma}, {args.samples} draws'
  )
  _lib.save(NAME, out)
  if done:
    _plot(out, _lib.plot_path(__file__, 'entropy_replicated.png'))
  for m in done:
    s = out['summary'][m]
    print(
      f'{m:15s} lr {out["runs"][m]["lr"]:<6g} test '
      f'{_lib.fmt(s["test_accuracy"])}  '
      + '  '.join(f'{k} {s[k]["mean"]:.4g}' for k in measures)
    )
  for k in measures:
    print(f'spearman({k}, test acc) pooled: {out["correlation"][k]["pooled"]}')
  return out


if __name__ == '__main__':
  main()
