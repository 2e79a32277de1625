"""Private MNIST-1D accuracy at epsilon in {1, 3, 8} against the non-private
model, with and without averaging of the private iterates (De et al. 2022).

  python -m experiments.privacy.accuracy

`CNN1D` (no BatchNorm, so ghost clipping applies), DP-SGD with Poisson
batches of expected size 256, clip norm 1, SGD with momentum 0.9 and a
constant rate, the noise calibrated to each epsilon at delta 1e-5 (PLD).
Each configuration's rate is the best of one grid on one tuning seed (0);
the reported seeds are 1..n. The non-private baseline is the same model and
budget with `train_seeds` at its own best rate of the same grid (no
clipping, no noise). Averaging: SWA (a uniform average of the iterates from
half the budget, `optax_zoo.swa`), read through `eval_params`; the last
iterate of the same run is scored too. Augmentation multiplicity (De et
al.'s other trick) is not built yet.
"""

from __future__ import annotations

import argparse
import time

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import optax_zoo
from experiments import _lib
from optax_zoo import training

NAME = 'privacy_accuracy'
EPSILONS = (1.0, 3.0, 8.0)
RATES = (0.1, 0.3, 1.0)
DELTA, CLIP, BATCH = 1e-5, 1.0, 256


def _tx(lr: float, steps: int, average: bool) -> optax.GradientTransformation:
  sgd = optax_zoo.sgd(lr, momentum=0.9)
  return optax_zoo.swa(sgd, start_step=steps // 2) if average else sgd


def _scores(result, data) -> dict[str, float]:
  eval_fn = training.make_eval_fn(result.graphdef)
  x, y = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
  state = result.eval_model_state
  return {
    'averaged': float(eval_fn(result.eval_params, state, x, y)[1]),
    'last': float(eval_fn(result.params, state, x, y)[1]),
  }


def private_run(data, eps, lr, seed, steps, pld) -> dict:
  start = time.time()
  result = training.train_private(
    training.CNN1D(rngs=nnx.Rngs(seed)),
    _tx(lr, steps, average=True),
    data,
    clip_norm=CLIP,
    target_epsilon=eps,
    delta=DELTA,
    expected_batch_size=BATCH,
    steps=steps,
    eval_every=[steps],
    seed=seed,
    pld_discretization=pld,
    progress=False,
  )
  out = {
    **_scores(result, data),
    'epsilon': float(result.epsilons[-1]),
    'noise_multiplier': float(result.noise_multiplier),
  }
  print(
    f'eps {eps:g} lr {lr:g} seed {seed}: last {out["last"]:.3f} averaged '
    f'{out["averaged"]:.3f} (sigma {out["noise_multiplier"]:.2f}, '
    f'{time.time() - start:.0f} s)',
    flush=True,
  )
  return out


def public_runs(data, lr, seeds, steps) -> list[float]:
  result = training.train_seeds(
    lambda rngs: training.CNN1D(rngs=rngs),
    _tx(lr, steps, average=False),
    data,
    seeds=seeds,
    steps=steps,
    batch_size=BATCH,
    eval_every=[steps],
    progress=False,
  )
  return np.asarray(result.history.final_accuracy).tolist()


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=1500)
  parser.add_argument('--seeds', type=int, default=5)
  parser.add_argument('--epsilons', type=float, nargs='+', default=EPSILONS)
  parser.add_argument('--rates', type=float, nargs='+', default=RATES)
  parser.add_argument(
    '--pld-discretization',
    type=float,
    default=1e-3,
    help='PLD grid of the accountant (coarser is faster and pessimistic)',
  )
  args = parser.parse_args(argv)
  data = training.mnist1d()
  seeds = list(range(1, args.seeds + 1))
  result = _lib.resume(
    NAME, steps=args.steps, seeds=seeds, batch=BATCH, clip=CLIP, delta=DELTA
  )
  runs = result['runs']

  def run(k, fn):
    if k not in runs:
      runs[k] = fn()
      _lib.save(NAME, result)
    return runs[k]

  pld = args.pld_discretization
  for eps in args.epsilons:
    for lr in args.rates:
      run(
        f'tune eps {eps:g} lr {lr:g}',
        lambda eps=eps, lr=lr: private_run(data, eps, lr, 0, args.steps, pld),
      )
    best = max(
      args.rates, key=lambda r: runs[f'tune eps {eps:g} lr {r:g}']['averaged']
    )
    for seed in seeds:
      run(
        f'eps {eps:g} seed {seed}',
        lambda eps=eps, best=best, seed=seed: {
          **private_run(data, eps, best, seed, args.steps, pld),
          'lr': best,
        },
      )
  for lr in args.rates:
    run(
      f'public tune lr {lr:g}',
      lambda lr=lr: public_runs(data, lr, [0], args.steps),
    )
  public_lr = max(args.rates, key=lambda r: runs[f'public tune lr {r:g}'][0])
  public = run(
    'public', lambda: public_runs(data, public_lr, seeds, args.steps)
  )

  summary = {'non-private': {**_lib.summary(public), 'lr': public_lr}}
  for eps in args.epsilons:
    rows = [runs[f'eps {eps:g} seed {s}'] for s in seeds]
    for kind in ('last', 'averaged'):
      acc = [r[kind] for r in rows]
      summary[f'eps {eps:g} {kind}'] = {
        **_lib.summary(acc),
        'lr': rows[0]['lr'],
        'epsilon': max(r['epsilon'] for r in rows),
        'noise_multiplier': rows[0]['noise_multiplier'],
        'minus_non_private': _lib.paired(acc, public),
      }
    summary[f'eps {eps:g} averaged minus last'] = _lib.paired(
      [r['averaged'] for r in rows], [r['last'] for r in rows]
    )
  result['summary'] = summary
  result['setting'] = (
    f'MNIST-1D CNN1D, DP-SGD (Poisson, expected batch {BATCH}, clip {CLIP}, '
    f'SGD momentum 0.9, constant rate from {list(args.rates)} tuned on seed '
    f'0), {args.steps} steps, noise calibrated to each epsilon at delta '
    f'{DELTA} (PLD, discretization {pld}); seeds {seeds}; averaged = SWA '
    f'from step {args.steps // 2}'
  )
  _lib.save(NAME, result)
  for k, s in summary.items():
    print(f'{k:28s} {_lib.fmt(s)}')
  plot(result, args.epsilons)


def plot(result, epsilons) -> None:
  import matplotlib.pyplot as plt

  summary = result['summary']
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for kind, marker in (('last', 'o'), ('averaged', 's')):
    rows = [summary[f'eps {e:g} {kind}'] for e in epsilons]
    ax.errorbar(
      epsilons,
      [100 * r['mean'] for r in rows],
      [100 * r['ci95'] for r in rows],
      marker=marker,
      capsize=3,
      label=f'DP-SGD, {kind} iterate' if kind == 'last' else 'DP-SGD + SWA',
    )
  public = summary['non-private']
  ax.axhline(100 * public['mean'], color='k', ls='--', label='non-private')
  ax.set_xscale('log')
  ax.set_xlabel('epsilon (delta = 1e-5)')
  ax.set_ylabel('test accuracy (%)')
  ax.set_title('MNIST-1D CNN1D')
  ax.legend(fontsize=8)
  _lib.save_plot(fig, _lib.plot_path(__file__, 'accuracy.png'))


if __name__ == '__main__':
  main()
