"""RigL and SET against dense, static sparse and small-dense on MNIST-1D.

  python -m experiments.sparsity.rigl            # ~25 min on 2 CPU cores

Claims (Evci et al. 2020, ``shared/METHODS.md`` row 31): at 80% and 90%
sparsity RigL comes close to the dense model and beats static sparse
training at a fraction of the FLOPs, and the ERK distribution beats
uniform; the reproducibility report's CIFAR-10 WRN-22-2 at 80% (calibration,
not re-measured here): RigL-ERK 93.1, SET-ERK 92.9, static 91.2.

Protocol. Both models (`training.MLP` 40-100-100-10 and `training.CNN1D`),
SGD with momentum 0.9 at a constant rate (the lr grid's and the registry's
form), 2000 steps, batch 128, seeds 0..9 trained as one vmapped program.
Per model and sparsity (0.8, 0.9) and distribution (ERK, uniform): `rigl`
and `set_sparse` (mask update every 100 steps, drop fraction 0.3 cosine-
annealed, last update before 75% of training: the paper's defaults) and
`static_sparse`; the dense model; and a small-dense model, the same
architecture narrowed (MLP hidden widths, CNN channels) to the nonzero
parameter count of the sparse one (biases included: every kernel is
sparsified, every bias kept), the counts in the table. Masks are drawn per
seed (`common.seeded`).

Tuning: each family (dense, small-dense, static, RigL, SET) gets its own
learning rate per model, the best mean final test accuracy over
``--rates`` on tuning seeds 1000.. (disjoint from the reported ones), at
90% ERK for the sparse families (the small-dense at the 90% count), reused
at 80% and with uniform; the tuning accuracies are in the JSON
(``tuning``). A single ``--rates`` value skips tuning.

FLOPs: per example, relative to dense training, with the RigL paper's
accounting (`sparsity.training_flops`, `sparsity.inference_flops`) over the
per-layer FLOPs of `common.layer_flops` and the masks' densities; the
small-dense model's are its own dense FLOPs over the full model's.

Verdicts, on paired differences over the same seeds (same initialization
and data order): "RigL close to dense" is reproduced when the 95% interval
of RigL - dense lies above minus `MARGIN`, not reproduced when it lies
below, inconclusive otherwise; "above" claims (RigL over static, ERK over
uniform, RigL over small-dense) are reproduced when the interval lies above
zero (`_lib.verdict` 'better'), reversed when below, a tie otherwise. The
table goes to ``experiments/sparsity/rigl.md``, the plot (accuracy against
sparsity, one panel per model) to ``rigl.png`` beside this file. The step
times (10 seeds vmapped) are reported beside a dense Adam run's.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from flax import nnx

import optax_zoo
from experiments import _lib
from experiments.sparsity import common
from optax_zoo import sparsity, training

NAME = 'sparsity_rigl'
RATES = (0.01, 0.03, 0.1, 0.3, 1.0)
SPARSITIES = (0.8, 0.9)
DISTRIBUTIONS = ('erk', 'uniform')
METHODS = ('dense', 'small_dense', 'static', 'rigl', 'set')
TUNE_SPARSITY, TUNE_DISTRIBUTION = 0.9, 'erk'
FIRST_TUNE_SEED = 1000
UPDATE_EVERY, DROP_FRACTION, END_FRACTION = 100, 0.3, 0.75
# "Close to dense": RigL at most this far below (one accuracy point).
MARGIN = 0.01
WIDTHS = {'mlp': 100, 'cnn': 25}
ADAM_RATE = 0.01  # the timing reference only
# The reproducibility report's CIFAR-10 WRN-22-2 accuracies at 80% ERK.
CALIBRATION = {'rigl': 93.1, 'set': 92.9, 'static': 91.2}
# What the summary keeps of each run besides its accuracy.
FIELDS = ('lr', 'width', 'parameters', 'nonzero', 'step_ms', 'train_flops')
FIELDS += ('inference_flops',)


def model_fn(model: str, width: int | None = None):
  width = width or WIDTHS[model]
  if model == 'mlp':
    return lambda rngs: training.MLP(40, hidden=(width, width), rngs=rngs)
  return lambda rngs: training.CNN1D(channels=width, rngs=rngs)


def _leaves(model: str, width: int | None = None) -> list:
  shapes = nnx.eval_shape(lambda: model_fn(model, width)(nnx.Rngs(0)))
  return jax.tree.leaves(nnx.state(shapes, nnx.Param))


def small_width(model: str, s: float) -> tuple[int, int]:
  """``(width, parameters)`` of the dense model closest to the nonzero
  count of ``model`` at sparsity ``s`` (kernels sparse, biases dense)."""
  leaves = _leaves(model)
  kernels = sum(x.size for x in leaves if x.ndim >= 2)
  target = sum(x.size for x in leaves) - s * kernels

  def count(w):
    return sum(x.size for x in _leaves(model, w))

  width = min(range(1, WIDTHS[model] + 1), key=lambda w: abs(count(w) - target))
  return width, count(width)


def make_tx(method: str, lr: float, dist: str, s: float, steps: int):
  inner = optax_zoo.sgd(lr, momentum=0.9)
  if method in ('dense', 'small_dense'):
    return inner
  if method == 'adam':
    return optax_zoo.adam(lr)
  if method == 'static':
    return common.seeded(
      sparsity.static_sparse, inner=inner, sparsity=s, distribution=dist
    )
  return common.seeded(
    sparsity.rigl if method == 'rigl' else sparsity.set_sparse,
    inner=inner,
    sparsity=s,
    distribution=dist,
    total_steps=steps,
    update_every=UPDATE_EVERY,
    drop_fraction=DROP_FRACTION,
    drop_fraction_schedule='cosine',
    end_fraction=END_FRACTION,
  )


def _flops(model, method, dist, s, steps, width, masks) -> dict:
  """Training and inference FLOPs relative to the full dense model's."""
  full = common.layer_flops(model_fn(model))
  f_dense = sum(jax.tree.leaves(full))
  if masks is None:
    ratio = sum(jax.tree.leaves(common.layer_flops(model_fn(model, width))))
    return {'train_flops': ratio / f_dense, 'inference_flops': ratio / f_dense}
  f, d = common.flop_counts(full, masks)
  train = sparsity.training_flops(
    f,
    d,
    method=method,
    total_steps=steps,
    update_every=UPDATE_EVERY,
    end_fraction=END_FRACTION,
  )
  return {
    'train_flops': train / (3 * f_dense * steps),
    'inference_flops': sparsity.inference_flops(f, d) / f_dense,
  }


def run_one(model, method, lr, dist, s, seeds, args, data) -> dict:
  width = small_width(model, s)[0] if method == 'small_dense' else None
  start = time.time()
  result = training.train_seeds(
    model_fn(model, width),
    make_tx(method, lr, dist, s, args.steps),
    data,
    seeds=seeds,
    steps=args.steps,
    batch_size=args.batch,
    eval_every=[],
    desc=f'{model} {method} {dist} {s:g} lr={lr:g}',
  )
  acc = [float(a) for a in np.atleast_1d(result.history.final_accuracy)]
  first = jax.tree.map(lambda x: x[0], result.params)
  masks = None
  if hasattr(result.opt_state, 'masks'):
    masks = jax.tree.map(lambda x: x[0], result.opt_state.masks)
  record = {
    'lr': lr,
    'accuracy': acc,
    'width': width or WIDTHS[model],
    'parameters': sum(x.size for x in jax.tree.leaves(first)),
    'nonzero': common.nonzero(masks) if masks is not None else None,
    'nonzero_weights': int(
      sum(np.count_nonzero(x) for x in jax.tree.leaves(first))
    ),
    'step_ms': 1e3 * result.history.median_step_time,
    'compile_s': result.history.compile_time,
    'seconds': time.time() - start,
  }
  if record['nonzero'] is None:
    record['nonzero'] = record['parameters']
  if method != 'adam':
    record.update(_flops(model, method, dist, s, args.steps, width, masks))
  print(
    f'{model} {method} {dist} {s:g} lr {lr:g}: acc {np.mean(acc):.4f} '
    f'nonzero {record["nonzero"]} step {record["step_ms"]:.1f} ms '
    f'({record["seconds"]:.0f} s)',
    flush=True,
  )
  return record


def key(model, method, dist='-', s=0.0) -> str:
  return f'{model} {method} {dist} {s:g}'


def tune(result, model, method, args, data) -> float:
  """The family's best rate (mean final test accuracy, tuning seeds)."""
  if len(args.rates) == 1:
    return args.rates[0]
  s = 0.0 if method == 'dense' else TUNE_SPARSITY
  dist = TUNE_DISTRIBUTION if method not in ('dense', 'small_dense') else '-'
  seeds = list(range(FIRST_TUNE_SEED, FIRST_TUNE_SEED + args.tune_seeds))
  grid = result['tuning'].setdefault(f'{model} {method}', {})
  for lr in args.rates:
    if f'{lr:g}' not in grid:
      run = run_one(model, method, lr, dist, s, seeds, args, data)
      grid[f'{lr:g}'] = {'accuracy': run['accuracy'], 'seconds': run['seconds']}
      _lib.save(NAME, result)
  best = max(grid, key=lambda r: np.mean(grid[r]['accuracy']))
  return float(best)


def configs(method, args):
  if method == 'dense':
    return [('-', 0.0)]
  if method == 'small_dense':
    return [('-', s) for s in args.sparsities]
  return [(d, s) for s in args.sparsities for d in args.distributions]


def comparisons(model, args) -> list[tuple[str, str, str, str]]:
  """``(claim, a, b, kind)``: the paired differences ``a - b`` reported."""
  out = []
  for s in args.sparsities:
    for d in args.distributions:
      rigl, static = key(model, 'rigl', d, s), key(model, 'static', d, s)
      out += [
        (f'RigL-{d} close to dense', rigl, key(model, 'dense'), 'close'),
        (f'RigL-{d} above static-{d}', rigl, static, 'above'),
        (f'SET-{d} above static-{d}', key(model, 'set', d, s), static, 'above'),
        (f'RigL-{d} above SET-{d}', rigl, key(model, 'set', d, s), 'above'),
        (
          f'RigL-{d} above small-dense',
          rigl,
          key(model, 'small_dense', '-', s),
          'above',
        ),
      ]
    for m in ('rigl', 'set', 'static'):
      out.append(
        (
          f'{m} ERK above uniform',
          key(model, m, 'erk', s),
          key(model, m, 'uniform', s),
          'above',
        )
      )
  return out


def word(diff: dict, kind: str) -> str:
  low, high = diff['mean'] - diff['ci95'], diff['mean'] + diff['ci95']
  if kind == 'close':
    if low >= -MARGIN:
      return f'reproduced (within {100 * MARGIN:g} pt)'
    if high < -MARGIN:
      return f'not reproduced (> {100 * MARGIN:g} pt below)'
    return 'inconclusive'
  return 'reproduced' if low > 0 else 'reversed' if high < 0 else 'tie'


def summarize(result, args) -> dict:
  runs = result['runs']
  rows = {
    k: {
      'accuracy': _lib.summary(r['accuracy']),
      **{f: r[f] for f in FIELDS if f in r},
    }
    for k, r in runs.items()
  }
  claims = {}
  for model in args.models:
    for claim, a, b, kind in comparisons(model, args):
      if a in runs and b in runs:
        diff = _lib.paired(runs[a]['accuracy'], runs[b]['accuracy'])
        s = a.split()[-1]
        claims[f'{model} {s} {claim}'] = {
          'a': a,
          'b': b,
          'diff': diff,
          'verdict': word(diff, kind),
        }
  return {'rows': rows, 'claims': claims}


def markdown(result) -> str:
  rows, claims = result['summary']['rows'], result['summary']['claims']
  lines = [
    f'MNIST-1D, {result["steps"]} steps, batch {result["batch"]}, SGD '
    f'momentum 0.9 (constant rate, tuned per family and model), seeds '
    f'{result["seeds"][0]}..{result["seeds"][-1]}; mask updates every '
    f'{UPDATE_EVERY} steps, drop fraction {DROP_FRACTION} cosine, end '
    f'{END_FRACTION}.',
    '',
    '| model | method | distribution | sparsity | lr | nonzero params | '
    'train FLOPs / dense | inference FLOPs / dense | accuracy (%) | '
    f'step (ms, {len(result["seeds"])} seeds) |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ]
  for k, r in rows.items():
    model, method, dist, s = k.split()
    if method == 'adam':
      continue
    name = (
      f'{method} (width {r["width"]})' if method == 'small_dense' else method
    )
    lines.append(
      f'| {model} | {name} | {dist} | {s} | {r["lr"]:g} | '
      f'{r["nonzero"]} / {r["parameters"]} | {r["train_flops"]:.3f} | '
      f'{r["inference_flops"]:.3f} | {_lib.fmt(r["accuracy"])} | '
      f'{r["step_ms"]:.1f} |'
    )
  lines += [
    '',
    '| model | sparsity | claim | difference (points) | verdict |',
    '|---|---|---|---|---|',
  ]
  for k, c in claims.items():
    model, s, claim = k.split(' ', 2)
    lines.append(
      f'| {model} | {s} | {claim} | {_signed(c["diff"])} | {c["verdict"]} |'
    )
  timing = []
  for model in result['models']:
    steps = {
      m: rows[k]['step_ms']
      for m in ('adam', 'dense', 'static', 'rigl', 'set')
      if (k := _first(rows, model, m))
    }
    if 'rigl' in steps and 'adam' in steps:
      timing.append(
        f'{model}: step (ms, {len(result["seeds"])} seeds vmapped, 90% ERK) '
        + ', '.join(f'{m} {t:.1f}' for m, t in steps.items())
        + f'; RigL / Adam {steps["rigl"] / steps["adam"]:.1f}x, RigL / SGD '
        f'{steps["rigl"] / steps["dense"]:.1f}x.'
      )
  tuning = '; '.join(
    f'{k} '
    + ', '.join(
      f'{r}: {100 * np.mean(v["accuracy"]):.1f}' for r, v in g.items()
    )
    for k, g in result['tuning'].items()
  )
  return '\n'.join(
    [
      *lines,
      '',
      *verdict_lines(claims),
      '',
      *calibration(rows, result['models']),
      '',
      *timing,
      '',
      f'Tuning (mean % over tuning seeds): {tuning}.',
      '',
    ]
  )


def _signed(diff: dict) -> str:
  return f'{100 * diff["mean"]:+.1f} ± {100 * diff["ci95"]:.1f}'


def verdict_lines(claims) -> list[str]:
  """One line per model and claim: its verdict in every configuration."""
  grouped = {}
  for k, c in claims.items():
    model, s, claim = k.split(' ', 2)
    dist = claim.partition(' ')[0].partition('-')[2]
    general = claim.replace(f'-{dist}', '') if dist else claim
    tag = f'{float(s):.0%}' + (f' {dist}' if dist else '')
    grouped.setdefault((model, general), []).append(
      f'{tag} {c["verdict"].split(" (")[0]}'
    )
  return [
    f'- {model}, {claim}: ' + '; '.join(v) + '.'
    for (model, claim), v in grouped.items()
  ]


def calibration(rows, models) -> list[str]:
  """The 80% ERK gaps beside the reproducibility report's CIFAR-10 ones."""
  paper = CALIBRATION
  out = [
    'Calibration (CIFAR-10 WRN-22-2, 80% ERK, RigL reproducibility report): '
    f'RigL {paper["rigl"]}, SET {paper["set"]}, static {paper["static"]}: '
    f'RigL - static {paper["rigl"] - paper["static"]:+.1f}, RigL - SET '
    f'{paper["rigl"] - paper["set"]:+.1f} points.'
  ]
  for model in models:
    acc = {
      m: rows.get(key(model, m, 'erk', 0.8), {}).get('accuracy')
      for m in ('rigl', 'set', 'static')
    }
    if all(acc.values()):
      mean = {m: 100 * a['mean'] for m, a in acc.items()}
      out.append(
        f'Here, {model} 80% ERK (means): RigL {mean["rigl"]:.1f}, SET '
        f'{mean["set"]:.1f}, static {mean["static"]:.1f}: RigL - static '
        f'{mean["rigl"] - mean["static"]:+.1f}, RigL - SET '
        f'{mean["rigl"] - mean["set"]:+.1f}.'
      )
  return out


def _first(rows, model, method):
  for k in (key(model, method, 'erk', 0.9), key(model, method)):
    if k in rows:
      return k
  return None


def plot(result) -> None:
  import matplotlib.pyplot as plt

  rows = result['summary']['rows']
  models = result['models']
  fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models) + 1.5, 3.5))
  for ax, model in zip(np.atleast_1d(axes), models, strict=True):
    dense = rows.get(key(model, 'dense'))
    if dense:
      m, h = 100 * dense['accuracy']['mean'], 100 * dense['accuracy']['ci95']
      ax.axhspan(m - h, m + h, color='k', alpha=0.15)
      ax.axhline(m, color='k', lw=1, label='dense')
    series = [('small_dense', '-')] + [
      (m, d) for m in ('rigl', 'set', 'static') for d in DISTRIBUTIONS
    ]
    for i, (method, dist) in enumerate(series):
      pts = sorted(
        (float(k.split()[-1]), r['accuracy'])
        for k, r in rows.items()
        if k.split()[:3] == [model, method, dist]
      )
      if not pts:
        continue
      x = np.array([p[0] for p in pts]) + 0.003 * (i - 3)
      ax.errorbar(
        100 * x,
        [100 * p[1]['mean'] for p in pts],
        [100 * p[1]['ci95'] for p in pts],
        marker='o',
        capsize=3,
        ls='-' if dist != 'uniform' else '--',
        label=method if dist == '-' else f'{method} {dist}',
      )
    ax.set_xlabel('sparsity (%)')
    ax.set_ylabel('test accuracy (%)')
    ax.set_title(f'MNIST-1D {model}', fontsize=9)
  np.atleast_1d(axes)[-1].legend(
    fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0)
  )
  _lib.save_plot(fig, _lib.plot_path(__file__, 'rigl.png'))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=2000)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--seeds', type=int, default=10, help='from 0')
  parser.add_argument(
    '--tune-seeds', type=int, default=3, help=f'from {FIRST_TUNE_SEED}'
  )
  parser.add_argument('--models', nargs='+', default=['mlp', 'cnn'])
  parser.add_argument('--methods', nargs='+', default=list(METHODS))
  parser.add_argument('--rates', type=float, nargs='+', default=list(RATES))
  parser.add_argument(
    '--sparsities', type=float, nargs='+', default=list(SPARSITIES)
  )
  parser.add_argument('--distributions', nargs='+', default=list(DISTRIBUTIONS))
  args = parser.parse_args(argv)
  seeds = list(range(args.seeds))
  data = training.mnist1d()
  result = _lib.resume(
    NAME,
    steps=args.steps,
    batch=args.batch,
    seeds=seeds,
    tune_seeds=args.tune_seeds,
    rates=args.rates,
  )
  result.setdefault('tuning', {})
  result['models'] = args.models
  runs = result['runs']
  for model in args.models:
    for method in args.methods:
      lr = tune(result, model, method, args, data)
      for dist, s in configs(method, args):
        k = key(model, method, dist, s)
        if k not in runs or runs[k]['lr'] != lr:
          runs[k] = run_one(model, method, lr, dist, s, seeds, args, data)
          _lib.save(NAME, result)
    k = key(model, 'adam')
    if k not in runs:
      runs[k] = run_one(model, 'adam', ADAM_RATE, '-', 0.0, seeds, args, data)
      _lib.save(NAME, result)
  result['summary'] = summarize(result, args)
  result['small_dense'] = {
    f'{model} {s:g}': dict(
      zip(('width', 'parameters'), small_width(model, s), strict=True)
    )
    for model in args.models
    for s in args.sparsities
  }
  _lib.save(NAME, result)
  table = markdown(result)
  path = _lib.plot_path(__file__, 'rigl.md')
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(table)
  print(table)
  plot(result)


if __name__ == '__main__':
  main()
