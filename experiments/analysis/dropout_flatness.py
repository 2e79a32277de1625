"""Flatness of minima found with and without dropout (Zhang & Xu, 2022).

Claim: training with dropout finds flatter minima. An MNIST-1D MLP is trained
with SGD with momentum at several dropout rates, 10 seeds each; at the end,
with dropout switched off, the top Hessian eigenvalue (Lanczos) and the
Hessian trace (Hutchinson) of the full training loss measure sharpness. The
training loss and test accuracy are reported beside them, since a sharper
minimum at a higher loss is a different comparison: cross-entropy's Hessian
shrinks as the loss goes to zero. So the top eigenvalue is also tracked
along training, and each dropout run's final sharpness is
compared with the no-dropout run of the same seed at the same training loss
(log-log interpolation along its checkpoints).

  python -m experiments.analysis.dropout_flatness  (about 8 minutes on 2 cores)
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments import _lib
from experiments.analysis import common
from optax_zoo import analysis, training
from optax_zoo.training.stats import mean_ci, paired_ci


def run(rate, seed, data, args):
  model = training.MLP(
    data.num_features, args.hidden, dropout=rate, rngs=nnx.Rngs(seed)
  )
  # Dense early, where the loss falls fastest, so that every dropout run's
  # final loss is bracketed by the no-dropout trajectory.
  early = (25, 50, 100, 200, 300, 500, 750)
  checkpoints = sorted(
    {s for s in early if s < args.steps} | {*range(1000, args.steps + 1, 1000)}
  )
  saved = common.fit(
    model,
    optax.sgd(args.lr, momentum=0.9),
    data,
    steps=args.steps,
    seed=seed,
    checkpoints=checkpoints,
  )
  params = nnx.split(model, nnx.Param, ...)[1]
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  loss, _, metrics = common.loss_fns(model, x, y)
  key = jax.random.key(seed)
  top = analysis.top_hessian_eigenvalues(loss, params, key=key, max_iters=60)
  trace = analysis.hessian_trace(loss, params, key=key, num_samples=50)
  test = common.loss_fns(
    model, jnp.asarray(data.x_test), jnp.asarray(data.y_test)
  )[2](params)
  path = [
    (
      float(loss(saved[s])),
      float(
        analysis.top_hessian_eigenvalues(
          loss, saved[s], key=key, max_iters=60
        ).eigenvalues[0]
      ),
    )
    for s in checkpoints
  ]
  return {
    'top_eigenvalue': float(top.eigenvalues[0]),
    'trace': float(trace.trace),
    'train_loss': float(metrics(params)['loss']),
    'test_accuracy': float(test['accuracy']),
    'path': path,
  }


def sharpness_at_loss(path, target: float) -> float:
  """The top eigenvalue along ``path`` at training loss ``target``.

  Log-log interpolation between the checkpoints that bracket ``target``;
  NaN when the path never reaches it.
  """
  losses, tops = np.log([p[0] for p in path]), np.log([p[1] for p in path])
  order = np.argsort(losses)
  if not losses.min() <= np.log(target) <= losses.max():
    return float('nan')
  return float(np.exp(np.interp(np.log(target), losses[order], tops[order])))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=4000)
  parser.add_argument('--lr', type=float, default=0.05)
  parser.add_argument('--hidden', type=int, nargs='+', default=[100, 100])
  parser.add_argument('--rates', type=float, nargs='+', default=[0, 0.1, 0.3])
  parser.add_argument('--seeds', type=int, default=10)
  common.add_plot_arg(parser)
  args = parser.parse_args(argv)
  data = training.mnist1d()
  runs = {}
  for rate in args.rates:
    runs[rate] = [run(rate, s, data, args) for s in range(args.seeds)]
    first = runs[rate][0]
    print(
      rate,
      {k: mean_ci([r[k] for r in runs[rate]]) for k in first if k != 'path'},
    )
  metrics = [k for k in runs[args.rates[0]][0] if k != 'path']
  summary = {
    str(rate): {k: mean_ci([r[k] for r in rs]) for k in metrics}
    for rate, rs in runs.items()
  }
  base = runs[args.rates[0]]
  versus = {
    str(rate): {
      k: paired_ci([r[k] for r in rs], [r[k] for r in base]) for k in metrics
    }
    for rate, rs in runs.items()
    if rate != args.rates[0]
  }
  base = runs[args.rates[0]]
  matched = {
    str(rate): [
      r['top_eigenvalue'] / sharpness_at_loss(b['path'], r['train_loss'])
      for r, b in zip(rs, base, strict=True)
    ]
    for rate, rs in runs.items()
    if rate != args.rates[0]
  }
  common.save(
    'analysis_dropout_flatness',
    {
      'config': vars(args),
      'runs': {str(k): v for k, v in runs.items()},
      'summary': summary,
      'paired_vs_no_dropout': versus,
      'top_eigenvalue_ratio_at_matched_loss': matched,
    },
  )
  print('| dropout | top eigenvalue | trace | train loss | test acc. (%) |')
  print('|---|---|---|---|---|')
  for rate in args.rates:
    s = summary[str(rate)]
    print(
      f'| {rate:g} | {s["top_eigenvalue"][0]:.2f} ± '
      f'{s["top_eigenvalue"][1]:.2f} | {s["trace"][0]:.1f} ± '
      f'{s["trace"][1]:.1f} | {s["train_loss"][0]:.3f} ± '
      f'{s["train_loss"][1]:.3f} | {100 * s["test_accuracy"][0]:.1f} ± '
      f'{100 * s["test_accuracy"][1]:.1f} |'
    )

  for rate, ratios in matched.items():
    finite = [x for x in ratios if np.isfinite(x)]
    if len(finite) > 1:
      mean, half = mean_ci(finite)
      print(
        f'dropout {rate}: top eigenvalue / no-dropout at the same train loss '
        f'= {mean:.2f} ± {half:.2f} ({len(finite)} seeds)'
      )
    else:
      print(f'dropout {rate}: the no-dropout runs never had its train loss')

  import matplotlib.pyplot as plt
  import matplotlib.ticker

  fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
  for ax, key, label in zip(
    axes[:2],
    ('top_eigenvalue', 'trace'),
    ('top Hessian eigenvalue', 'Hessian trace'),
    strict=True,
  ):
    ax.boxplot(
      [[r[key] for r in runs[rate]] for rate in args.rates],
      tick_labels=[f'{rate:g}' for rate in args.rates],
    )
    ax.set_xlabel('dropout rate')
    ax.set_ylabel(label)
    ax.set_yscale('log')
  for rate, rs in runs.items():
    for i, r in enumerate(rs):
      losses, tops = zip(*r['path'], strict=True)
      axes[2].plot(
        losses,
        tops,
        '.-',
        color=f'C{args.rates.index(rate)}',
        alpha=0.5,
        label=f'dropout {rate:g}' if i == 0 else None,
      )
  axes[2].set_xscale('log')
  axes[2].set_yscale('log')
  for axis in (axes[2].xaxis, axes[2].yaxis):
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  axes[2].set_xlabel('training loss (dropout off)')
  axes[2].set_ylabel('top Hessian eigenvalue')
  axes[2].set_title('along training')
  axes[2].legend()
  fig.suptitle(f'MNIST-1D MLP, SGD, {args.seeds} seeds: sharpness')
  _lib.save_plot(
    fig, common.plot_path(args, __file__, 'dropout_flatness.png'), dpi=120
  )


if __name__ == '__main__':
  main()
