"""FGSM with a random start against PGD adversarial training (Wong et al. 2020).

The claim: FGSM adversarial training with a random start (one step of
1.25 eps) is about as robust as PGD-7 training at a fraction of its cost;
FGSM from zero, or with too large a step, overfits catastrophically (its
PGD robustness collapses during training). MNIST-1D CNN, Adam, batch 128,
L-infinity eps = 0.2 (the features have std ~1), no input bounds. Every
configuration at its own best rate of the same grid on selection seeds (by
PGD robust accuracy; the standard run by clean accuracy), then 10 fresh
seeds. Robust accuracy: PGD-20, step 2.5 eps / 20, random start, on the
whole test set; during training the authors' check (PGD-5 on a held-out
batch of 200 test examples) at every evaluation, and a collapse is a fall
of more than 0.2 between two evaluations (``catastrophic_overfitting``).
Cost: the median wall time per step of the 10 seeds trained together.

  python -m experiments.training.fast_adversarial   # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from experiments import _lib
from experiments.training import common as c
from optax_zoo import training

NAME = 'training_fast_adversarial'
METHODS = ('standard', 'fgsm-rs', 'fgsm-zero', 'fgsm-rs 2eps', 'pgd-7')


def transform(method: str, eps: float):
  if method == 'standard':
    return None
  if method == 'fgsm-rs':
    return training.adversarial_training(eps, attack='fgsm')
  if method == 'fgsm-zero':
    return training.adversarial_training(
      eps, attack='fgsm', random_start=False, rel_step_size=1.0
    )
  if method == 'fgsm-rs 2eps':
    return training.adversarial_training(eps, attack='fgsm', rel_step_size=2.0)
  if method == 'pgd-7':
    return training.adversarial_training(eps, attack='pgd', steps=7)
  raise ValueError(f'unknown method {method!r}')


def run(method, lr, seeds, *, args, data, check_size=200):
  x, y = data.x_test[:check_size], data.y_test[:check_size]
  result = training.train_seeds(
    c.model_fn(args.channels),
    c.adam(lr),
    data,
    seeds=seeds,
    steps=args.steps,
    eval_every=max(1, args.steps // 20),
    batch_transform=transform(method, args.eps),
    on_eval=training.pgd_check(x, y, eps=args.eps, steps=5, seeds=len(seeds)),
    desc=f'{method} @ {lr:g}',
  )
  eval_fn = training.make_robust_eval_fn(
    result.graphdef, eps=args.eps, steps=args.attack_steps, vmap=True
  )
  clean, robust, _ = eval_fn(
    result.eval_params,
    result.eval_model_state,
    data.x_test,
    data.y_test,
    jax.random.split(jax.random.key(1), len(seeds)),
  )
  hist = result.history
  return {
    'clean': np.asarray(clean).tolist(),
    'robust': np.asarray(robust).tolist(),
    'check_steps': hist.steps.tolist(),
    'check_robust': np.asarray(hist.measurements['pgd_accuracy']).tolist(),
    'step_time': hist.median_step_time,
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  c.add_common_args(parser, steps=1000)
  parser.add_argument('--eps', type=float, default=0.2)
  parser.add_argument('--attack-steps', type=int, default=20)
  parser.add_argument('--methods', nargs='+', default=METHODS, choices=METHODS)
  args = parser.parse_args(argv)
  seeds = c.eval_seeds(args.seeds)
  data = training.mnist1d()
  config = dict(
    steps=args.steps,
    seeds=seeds,
    rates=list(args.rates),
    eps=args.eps,
    channels=args.channels,
    selection_seeds=args.selection_seeds,
    attack_steps=args.attack_steps,
  )
  result = _lib.resume(NAME, **config)

  def save():
    _lib.save(NAME, result)

  for method in args.methods:
    if method in result['runs']:
      continue
    metric = 'clean' if method == 'standard' else 'robust'
    lr = c.tune(
      result,
      method,
      args.rates,
      lambda lr, s, m=method, metric=metric: np.mean(
        run(m, lr, s, args=args, data=data)[metric]
      ),
      selection_seeds=args.selection_seeds,
      save=save,
    )
    result['runs'][method] = {
      'lr': lr,
      **run(method, lr, seeds, args=args, data=data),
    }
    save()
  summarize(result, args.methods)
  save()
  plot(result, args.methods, len(seeds), args.eps)


def summarize(result, methods):
  runs = result['runs']
  base = runs.get('standard')
  pgd = runs.get('pgd-7')
  rows = [
    '| training | lr | clean acc (%) | PGD-20 robust acc (%) | robust minus '
    'PGD-7 | collapsed seeds | time per step vs standard |',
    '|---|---|---|---|---|---|---|',
  ]
  summary = {}
  for m in methods:
    r = runs[m]
    collapsed = [
      training.catastrophic_overfitting(curve) is not None
      for curve in r['check_robust']
    ]
    entry = {
      'clean': _lib.summary(r['clean']),
      'robust': _lib.summary(r['robust']),
      'collapsed': int(sum(collapsed)),
    }
    vs_pgd = ''
    if pgd and m != 'pgd-7':
      entry['robust_minus_pgd7'] = _lib.paired(r['robust'], pgd['robust'])
      vs_pgd = (
        f'{_lib.pct_diff(r["robust"], pgd["robust"])} '
        f'({_lib.verdict(r["robust"], pgd["robust"])})'
      )
    ratio = ''
    if base:
      entry['time_ratio'] = r['step_time'] / base['step_time']
      ratio = f'{entry["time_ratio"]:.2f}x'
    rows.append(
      f'| {m} | {r["lr"]:g} | {_lib.pct(r["clean"])} | {_lib.pct(r["robust"])} '
      f'| {vs_pgd} | {entry["collapsed"]}/{len(collapsed)} | {ratio} |'
    )
    summary[m] = entry
  result['summary'] = summary
  print('\n'.join(rows))


def plot(result, methods, num_seeds, eps):
  import matplotlib.pyplot as plt

  fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
  for m in methods:
    r = result['runs'][m]
    curves = 100 * np.asarray(r['check_robust'])
    (line,) = ax.plot(r['check_steps'], curves.mean(0), label=m)
    ax.plot(
      r['check_steps'], curves.T, color=line.get_color(), lw=0.4, alpha=0.4
    )
    s = result['summary'][m]
    bx.errorbar(
      100 * s['clean']['mean'],
      100 * s['robust']['mean'],
      xerr=100 * s['clean']['ci95'],
      yerr=100 * s['robust']['ci95'],
      marker='o',
      capsize=3,
      label=m,
      color=line.get_color(),
    )
  ax.set_xlabel('step')
  ax.set_ylabel('PGD-5 accuracy on a held-out batch (%)')
  ax.set_title(f'eps={eps:g}: mean and each of {num_seeds} seeds')
  ax.legend(fontsize=8)
  bx.set_xlabel('clean test accuracy (%)')
  bx.set_ylabel('PGD-20 robust accuracy (%)')
  bx.set_title('MNIST-1D CNN, 95% intervals')
  _lib.save_plot(fig, _lib.plot_path(__file__, 'fast_adversarial.png'))


if __name__ == '__main__':
  main()
