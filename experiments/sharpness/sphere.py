"""The three regimes of training on the sphere (Kodryan et al. 2022).

The claim: a scale-invariant network trained by SGD on the sphere at a fixed
effective learning rate (ELR) shows three regimes as the ELR grows:
convergence (the training loss keeps falling towards 0), chaotic
equilibrium (it settles at a level that grows with the ELR and fluctuates
there) and divergence (the network does not learn: training accuracy at
chance). Here: `optax_zoo.training.ScaleInvariantCNN` on MNIST-1D (all
convolution kernels on one sphere, frozen head of norm 10, as the paper's
ConvNetSI with ``--fix_elr --noninvlr 0``), `optax_zoo.sphere_sgd` without
momentum or weight decay, batch 128, a log grid of ELRs, seeds vmapped.

Measured at every evaluation on the whole training set, BatchNorm in train
mode (the loss the sphere dynamics sees): the loss, the accuracy and the
effective gradient norm ``||grad_w L|| * ||w||`` (the gradient on the unit
sphere) over the kernels. A run is classified by the rule in ``REGIMES``.

  python -m experiments.sharpness.sphere   # ~17 min on 2 shared cores
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import optax_zoo
from experiments import _lib
from optax_zoo import training

NAME = 'sharpness_sphere'
# Log-spaced, denser where the regimes meet (found by the coarse grid).
ELRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 0.013, 0.016, 0.02, 0.025, 0.03, 0.1, 0.3)
BATCH_SIZE = 128
REGIME_COLORS = {
  'convergence': 'tab:blue',
  'chaotic equilibrium': 'tab:orange',
  'divergence': 'tab:red',
}
REGIMES = (
  'per seed: divergence if the final train accuracy (whole training set) '
  'is < 0.2 (chance: 0.1); else convergence if the mean batch loss of the '
  'last evaluation interval (5% of the steps) is < 0.7 x the median of '
  'those intervals over 40-60% of the steps (still falling, as t^-1/2 or '
  'faster); else chaotic equilibrium (a plateau). An ELR gets the regime '
  'of most of its seeds.'
)


def _model_fn(channels: int):
  return lambda rngs: training.ScaleInvariantCNN(channels=channels, rngs=rngs)


def _measurer(channels: int, data: training.Dataset):
  """``on_eval``: full-train-set loss, accuracy, effective gradient norm."""
  model = _model_fn(channels)(nnx.Rngs(0))
  model.train()
  train_def = nnx.split(model, nnx.Param, ...)[0]
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

  def one(params, rest):
    def loss_fn(p):
      logits = nnx.merge(train_def, p, rest, copy=True)(x)
      loss = training.cross_entropy_loss(logits, y)
      return loss, jnp.mean(jnp.argmax(logits, -1) == y)

    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    mask = jax.tree.leaves(training.scale_invariant_mask(params))
    sq = lambda t: sum(
      jnp.sum(jnp.square(a))
      for a, m in zip(jax.tree.leaves(t), mask, strict=True)
      if m
    )
    return loss, acc, jnp.sqrt(sq(grads) * sq(params))

  measure = jax.jit(jax.vmap(one))

  def on_eval(state):
    loss, acc, grad = measure(state.params, state.model_state)
    return {'loss': loss, 'accuracy': acc, 'effective_grad_norm': grad}

  return on_eval


def run_elr(elr: float, data, seeds, steps: int, channels: int) -> dict:
  tx = optax_zoo.sphere_sgd(
    effective_lr=elr,
    mask=training.scale_invariant_mask,
    learning_rate=0.0,
  )
  result = training.train_seeds(
    _model_fn(channels),
    tx,
    data,
    seeds=seeds,
    steps=steps,
    batch_size=BATCH_SIZE,
    eval_every=max(1, steps // 20),
    on_eval=_measurer(channels, data),
    desc=f'elr {elr:g}',
  )
  h, m = result.history, result.history.measurements
  return {
    'steps': h.steps.tolist(),
    # The mean batch loss since the previous evaluation (None at step 0).
    'batch_train_loss': _rows(h.train_loss),
    'train_loss': _rows(m['loss']),
    'train_accuracy': _rows(m['accuracy']),
    'effective_grad_norm': _rows(m['effective_grad_norm']),
    'test_accuracy': _rows(h.test_accuracy),
    'step_time': h.median_step_time,
  }


def _rows(a) -> list:
  a = np.asarray(a, np.float64).round(6)
  return [[None if np.isnan(x) else x for x in row] for row in a.tolist()]


def _regime(batch_loss, accuracy: float, mid) -> str:
  """`REGIMES` applied to one seed's batch-loss curve and train accuracy."""
  if accuracy < 0.2:
    return 'divergence'
  if batch_loss[-1] < 0.7 * np.median(batch_loss[mid]):
    return 'convergence'
  return 'chaotic equilibrium'


def classify(run: dict) -> dict:
  """The regime of one ELR's run, with the numbers the rule reads."""
  steps = np.asarray(run['steps'], np.float64)
  batch = np.asarray(run['batch_train_loss'], np.float64)  # None -> NaN
  losses = np.asarray(run['train_loss'])
  final_acc = np.asarray(run['train_accuracy'])[:, -1]
  grad = np.mean(run['effective_grad_norm'], axis=0)
  frac = steps / steps[-1]
  late = frac >= 0.8
  mid = (frac >= 0.4) & (frac <= 0.6)
  seeds = [
    _regime(b, float(a), mid) for b, a in zip(batch, final_acc, strict=True)
  ]
  counts = {r: seeds.count(r) for r in dict.fromkeys(seeds)}
  late_batch = batch[:, late]
  return {
    'regime': max(counts, key=counts.get),
    'seed_regimes': seeds,
    'late_train_loss': float(losses[:, late].mean()),
    # Fluctuation: the spread of one seed's late losses, seed-averaged.
    'late_loss_std': float(np.mean(np.std(losses[:, late], axis=1))),
    'late_batch_loss': float(late_batch.mean()),
    'late_batch_loss_cv': float(
      np.mean(np.std(late_batch, 1) / np.mean(late_batch, 1))
    ),
    'last_over_mid_batch_loss': [
      float(b[-1] / np.median(b[mid])) for b in batch
    ],
    'final_train_accuracy': float(final_acc.mean()),
    'late_effective_grad_norm': float(grad[late].mean()),
    'late_over_mid_grad_norm': float(grad[late].mean() / grad[mid].mean()),
    'final_test_accuracy': _lib.summary(
      np.asarray(run['test_accuracy'])[:, -1]
    ),
  }


def plot(result: dict, path) -> None:
  import matplotlib.pyplot as plt

  runs = result['runs']
  elrs = sorted(runs, key=float)
  colors = plt.cm.viridis(np.linspace(0, 0.9, len(elrs)))
  fig, axes = plt.subplots(1, 4, figsize=(16, 4), width_ratios=(1, 1, 1, 0.45))
  for key, color in zip(elrs, colors, strict=True):
    run, regime = runs[key], result['summary'][key]['regime']
    label = f'{float(key):g} ({regime.split()[-1]})'
    axes[0].plot(
      run['steps'], np.mean(run['train_loss'], 0), color=color, label=label
    )
    axes[2].plot(
      run['steps'][1:],
      np.mean(run['effective_grad_norm'], 0)[1:],
      color=color,
    )
  axes[0].set(
    yscale='log',
    xlabel='step',
    ylabel='train loss (full set)',
    title='training loss',
  )
  axes[3].axis('off')
  axes[3].legend(
    *axes[0].get_legend_handles_labels(), title='ELR', loc='center', fontsize=8
  )
  x = [float(k) for k in elrs]
  s = [result['summary'][k] for k in elrs]
  axes[1].errorbar(
    x,
    [r['late_train_loss'] for r in s],
    [r['late_loss_std'] for r in s],
    color='gray',
    capsize=3,
  )
  shown = set()
  for xi, r in zip(x, s, strict=True):
    regime = r['regime']
    axes[1].scatter(
      xi,
      r['late_train_loss'],
      color=REGIME_COLORS[regime],
      zorder=3,
      label=None if regime in shown else regime,
    )
    shown.add(regime)
  axes[1].legend(fontsize=7)
  axes[1].set(
    xscale='log',
    yscale='log',
    xlabel='effective learning rate',
    ylabel='late train loss (± its std)',
    title='loss level by ELR',
  )
  axes[2].set(
    yscale='log',
    xlabel='step',
    ylabel='||grad|| * ||w|| (kernels)',
    title='effective gradient norm',
  )
  fig.suptitle(
    f'ScaleInvariantCNN on MNIST-1D, sphere SGD, {len(result["seeds"])} '
    'seeds (mean)'
  )
  _lib.save_plot(fig, path)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=3000)
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--elrs', type=float, nargs='+', default=ELRS)
  parser.add_argument('--channels', type=int, default=8)
  args = parser.parse_args(argv)
  data, seeds = training.mnist1d(), list(range(args.seeds))
  result = _lib.resume(
    NAME,
    steps=args.steps,
    seeds=seeds,
    channels=args.channels,
    batch_size=BATCH_SIZE,
  )
  result['setting'] = (
    f'MNIST-1D, ScaleInvariantCNN(channels={args.channels}, depth=3, '
    f'head_norm=10, head frozen), sphere_sgd (no momentum, no weight '
    f'decay), batch {BATCH_SIZE}, {args.steps} steps, seeds {seeds}'
  )
  result['classification'] = REGIMES
  result.setdefault('summary', {})
  for elr in args.elrs:
    key = f'{elr:g}'
    if key not in result['runs']:
      result['runs'][key] = run_elr(elr, data, seeds, args.steps, args.channels)
      result['summary'][key] = classify(result['runs'][key])
      _lib.save(NAME, result)
    # Reclassified from the stored curves, so the rule in force applies.
    s = result['summary'][key] = classify(result['runs'][key])
    print(
      f'elr {key:>6s}: {s["regime"]:19s} late loss '
      f'{s["late_train_loss"]:.4f} ± {s["late_loss_std"]:.4f}, last/mid '
      + ' '.join(f'{x:.2f}' for x in s['last_over_mid_batch_loss'])
      + f', train acc '
      f'{s["final_train_accuracy"]:.3f}, eff. grad '
      f'{s["late_effective_grad_norm"]:.3g}, test acc '
      f'{_lib.fmt(s["final_test_accuracy"])}; seeds: '
      + ', '.join(r.split()[-1] for r in s['seed_regimes']),
      flush=True,
    )
  _lib.save(NAME, result)
  plot(result, _lib.plot_path(__file__, 'sphere.png'))
  return result


if __name__ == '__main__':
  main()
