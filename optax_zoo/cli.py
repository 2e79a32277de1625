"""The ``optax-zoo`` command: ``list`` the registry, ``bench`` its methods.

``optax-zoo bench`` trains one model on MNIST-1D (or sklearn digits) with a
set of registered methods at a fixed step budget, the seeds of each method as
one vmapped program, and prints a leaderboard. It writes ``bench.json`` (the
configuration, versions, device and every seed's curves) and ``bench.png``
(test accuracy against step) to ``--out``, rewriting both after each method
so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

import optax_zoo
from optax_zoo import registry, training
from optax_zoo._src import validation as v
from optax_zoo.training.stats import mean_ci

__all__ = ['load_data', 'main', 'run_bench']

DEFAULT_METHODS = ('adam', 'adamw', 'nadam', 'radam', 'lookahead', 'sgd')
MODELS = ('cnn', 'mlp', 'resnet')
DATASETS = ('mnist1d', 'digits')
_VERSIONED = (
  'optax-zoo',
  'jax',
  'jaxlib',
  'optax',
  'flax',
  'numpy',
  'mnist1d',
  'scikit-learn',
)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

  def line(row):
    cols = zip(row, widths, strict=True)
    return '  '.join(c.ljust(w) for c, w in cols).rstrip()

  rule = '  '.join('-' * w for w in widths)
  return '\n'.join([line(cells[0]), rule, *map(line, cells[1:])])


def _yes(flag: bool) -> str:
  return 'yes' if flag else '-'


def _list(args: argparse.Namespace) -> None:
  infos = optax_zoo.methods(args.category)
  if args.markdown:
    print(registry.markdown_table(infos))
    return
  rows = [
    (
      m.name,
      m.category,
      m.paper.authors,
      m.paper.year,
      m.paper.arxiv or '-',
      f'{m.state_copies:g}',
      ','.join(m.extra_args) or '-',
      _yes(m.has_eval_params),
      _yes(m.needs_axis_name),
      m.deviations or '-',
    )
    for m in infos
  ]
  headers = (
    'name',
    'category',
    'paper',
    'year',
    'arXiv',
    'state copies',
    'extra args',
    'eval params',
    'axis_name',
    'deviations',
  )
  print(_table(headers, rows))


def _model_fn(
  model: str, data: training.Dataset
) -> Callable[[nnx.Rngs], nnx.Module]:
  if model == 'cnn':
    return lambda rngs: training.CNN1D(
      data.num_classes, in_length=data.num_features, rngs=rngs
    )
  if model == 'mlp':
    return lambda rngs: training.MLP(
      data.num_features, num_classes=data.num_classes, rngs=rngs
    )
  return lambda rngs: training.ResNet1D(data.num_classes, rngs=rngs)


def _state_bytes_per_param(tx, model_fn) -> tuple[float, int]:
  params = nnx.state(nnx.eval_shape(lambda: model_fn(nnx.Rngs(0))), nnx.Param)
  num_params = sum(x.size for x in jax.tree.leaves(params))
  state = jax.eval_shape(tx.init, params)
  nbytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  return nbytes / num_params, num_params


def _summary(histories: list[training.History], target: float) -> dict:
  final = mean_ci([h.final_accuracy for h in histories])
  best = mean_ci([h.best_accuracy for h in histories])
  reached = [s for h in histories if (s := h.steps_to(target)) is not None]
  return {
    'final_accuracy': final[0],
    'final_accuracy_ci95': final[1],
    'best_accuracy': best[0],
    'best_accuracy_ci95': best[1],
    'steps_to_target': float(np.mean(reached)) if reached else None,
    'seeds_reaching_target': len(reached),
    'ms_per_step': 1e3 * float(np.median(histories[0].step_time)),
    'compile_time': histories[0].compile_time,
  }


def _environment() -> tuple[dict, dict]:
  versions = {'python': platform.python_version()}
  for name in _VERSIONED:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  dev = jax.devices()[0]
  device = {
    'platform': dev.platform,
    'device_kind': dev.device_kind,
    'device_count': jax.device_count(),
    'cpu_count': os.cpu_count(),
    'processor': platform.processor() or platform.machine(),
  }
  return versions, device


def _write_json(path: pathlib.Path, result: dict) -> None:
  def finite(x):
    # JSON has no NaN; a missing interval (one seed) is written as null.
    if isinstance(x, float) and not math.isfinite(x):
      return None
    if isinstance(x, dict):
      return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list):
      return [finite(v) for v in x]
    return x

  fd, tmp = tempfile.mkstemp(dir=path.parent, suffix='.json.tmp')
  with os.fdopen(fd, 'w') as f:
    json.dump(finite(result), f, indent=1)
  os.replace(tmp, path)


def _plot(path: pathlib.Path, result: dict) -> None:
  """Test accuracy against step: the whole run, and its second half zoomed."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  config = result['config']
  fig = Figure(figsize=(12, 5), layout='constrained')
  FigureCanvasAgg(fig)
  full, zoom = fig.subplots(1, 2)
  late_low, late_high = 1.0, 0.0
  for name, entry in result['methods'].items():
    steps = np.asarray(entry['seeds'][0]['steps'])
    acc = np.asarray([s['test_accuracy'] for s in entry['seeds']], float)
    label = f'{name} (lr {entry["learning_rate"]:g})'
    for ax in (full, zoom):
      (line,) = ax.plot(steps, acc.mean(0), label=label)
      ax.fill_between(
        steps, acc.min(0), acc.max(0), color=line.get_color(), alpha=0.2
      )
    late = steps >= steps[-1] / 2
    late_low = min(late_low, acc[:, late].min())
    late_high = max(late_high, acc[:, late].max())
  margin = 0.1 * max(late_high - late_low, 0.01)
  full.set(xlabel='step', ylabel='test accuracy', ylim=(0, 1))
  full.set_title('whole run')
  zoom.set(
    xlabel='step',
    ylabel='test accuracy',
    xlim=(config['steps'] / 2, config['steps']),
    ylim=(late_low - margin, min(1.0, late_high + margin)),
  )
  zoom.set_title('second half, zoomed')
  for ax in (full, zoom):
    ax.axhline(config['target'], color='gray', linestyle='--', linewidth=0.8)
    ax.grid(alpha=0.3)
  full.legend(loc='lower right')
  fig.suptitle(
    f'{config["model"]} on {config["data"]}: test accuracy, mean (line) and '
    f'min to max (band) over {config["seeds"]} seeds'
  )
  fd, tmp = tempfile.mkstemp(dir=path.parent, suffix='.png.tmp')
  with os.fdopen(fd, 'wb') as f:
    fig.savefig(f, format='png', dpi=110)
  os.replace(tmp, path)


def _leaderboard(result: dict) -> str:
  target = result['config']['target']

  def pct(mean, ci):
    return f'{100 * mean:.1f}' + ('' if ci is None else f' ± {100 * ci:.1f}')

  entries = sorted(
    result['methods'].items(), key=lambda kv: -kv[1]['final_accuracy']
  )
  rows = []
  for name, e in entries:
    reached = e['seeds_reaching_target']
    to_target = e['steps_to_target']
    rows.append(
      (
        name,
        f'{e["learning_rate"]:g}',
        pct(e['final_accuracy'], _nan_none(e['final_accuracy_ci95'])),
        pct(e['best_accuracy'], _nan_none(e['best_accuracy_ci95'])),
        f'{to_target:.0f}' if to_target is not None else '-',
        f'{reached}/{len(e["seeds"])}',
        f'{e["ms_per_step"]:.2f}',
        f'{e["state_bytes_per_param"]:.2f}',
      )
    )
  headers = (
    'method',
    'lr',
    'final acc % (95% CI)',
    'best acc % (95% CI)',
    f'steps to {100 * target:g}%',
    'reached',
    f'ms/step (x{result["config"]["seeds"]} seeds)',
    'state B/param',
  )
  return _table(headers, rows)


def _nan_none(x: float | None) -> float | None:
  return None if x is None or math.isnan(x) else x


def load_data(name: str) -> training.Dataset:
  """The bench's data set by name, one of `DATASETS`."""
  if name == 'mnist1d':
    return training.mnist1d()
  if name == 'digits':
    return training.digits()
  raise ValueError(f'`name` must be one of {DATASETS}, got {name!r}.')


def run_bench(
  data: training.Dataset,
  methods: Sequence[str] = DEFAULT_METHODS,
  *,
  model: str = 'cnn',
  steps: int = 2500,
  seeds: int = 5,
  batch_size: int = 128,
  learning_rates: dict[str, float] | None = None,
  target: float = 0.85,
  eval_every: int | None = None,
  out: str | os.PathLike = 'optax_zoo_bench',
  progress: bool | None = None,
  log: Callable[[str], None] = print,
) -> dict:
  """Trains ``model`` with each method under ``seeds`` seeds; returns results.

  Writes ``bench.json`` and ``bench.png`` to ``out`` after each method. The
  arguments are those of ``optax-zoo bench`` (``data`` from `load_data`);
  methods that need an ``axis_name`` or extra update arguments are skipped
  with a note. ``log`` receives one line per method.

  Returns:
    The result dict that ``bench.json`` holds.
  """
  v.check_choice('model', model, MODELS)
  learning_rates = dict(learning_rates or {})
  infos = [optax_zoo.get(name) for name in methods]
  model_fn = _model_fn(model, data)
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  versions, device = _environment()
  result = {
    'config': {
      'methods': list(methods),
      'model': model,
      'data': data.name,
      'num_train': len(data.y_train),
      'num_test': len(data.y_test),
      'steps': steps,
      'seeds': seeds,
      'batch_size': batch_size,
      'eval_every': eval_every,
      'target': target,
      'learning_rates': learning_rates,
    },
    'versions': versions,
    'device': device,
    'started': datetime.datetime.now(datetime.timezone.utc).isoformat(),
    'elapsed': 0.0,
    'methods': {},
    'skipped': {},
  }
  json_path, png_path = out / 'bench.json', out / 'bench.png'
  bench_start = time.perf_counter()
  for info in infos:
    if info.needs_axis_name or info.extra_args:
      why = (
        'needs an axis_name'
        if info.needs_axis_name
        else f'needs extra update args {", ".join(info.extra_args)}'
      )
      log(f'skipping {info.name}: it {why}, which this loop does not pass.')
      result['skipped'][info.name] = why
      continue
    lr = learning_rates.get(info.name, info.learning_rate)
    tx = info.build(lr)
    bytes_per_param, num_params = _state_bytes_per_param(tx, model_fn)
    start = time.perf_counter()
    histories = training.train_seeds(
      model_fn,
      tx,
      data,
      seeds=range(seeds),
      steps=steps,
      batch_size=batch_size,
      eval_every=eval_every,
      progress=progress,
      desc=info.name,
    )
    entry = {
      'learning_rate': lr,
      'category': info.category,
      'num_params': num_params,
      'state_bytes_per_param': bytes_per_param,
      **_summary(histories, target),
      'wall_time': time.perf_counter() - start,
      'seeds': [{'seed': s, **h.to_dict()} for s, h in enumerate(histories)],
    }
    result['methods'][info.name] = entry
    result['elapsed'] = time.perf_counter() - bench_start
    _write_json(json_path, result)
    _plot(png_path, result)
    log(
      f'{info.name}: final accuracy {100 * entry["final_accuracy"]:.1f}% '
      f'(mean of {seeds}), {entry["wall_time"]:.1f} s'
    )
  return result


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(
      f'expected an integer, got {text!r}'
    ) from None
  if value < 1:
    raise argparse.ArgumentTypeError(f'must be an integer >= 1, got {value}')
  return value


def _fraction(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(
      f'expected a number, got {text!r}'
    ) from None
  if not 0 < value <= 1:
    raise argparse.ArgumentTypeError(f'must be in (0, 1], got {value}')
  return value


def _learning_rates(text: str) -> dict[str, float]:
  rates = {}
  for item in filter(None, text.split(',')):
    name, sep, value = item.partition('=')
    try:
      rate = float(value)
    except ValueError:
      rate = math.nan
    if not sep or not name or not (0 < rate < math.inf):
      raise argparse.ArgumentTypeError(
        f'expected name=value with a positive value, got {item!r}'
      )
    rates[name.strip()] = rate
  return rates


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog='optax-zoo',
    description='The optax_zoo method registry and benchmark.',
  )
  commands = parser.add_subparsers(dest='command', required=True)
  lister = commands.add_parser('list', help='print the method registry')
  lister.add_argument(
    '--category', choices=registry.CATEGORIES, help='only this category'
  )
  lister.add_argument(
    '--markdown',
    action='store_true',
    help="print the README's Markdown method table instead",
  )
  bench = commands.add_parser(
    'bench',
    help='train a model with several methods and print a leaderboard',
    description=(
      'Trains a model with each method under several seeds (one vmapped '
      'program per method) and prints a leaderboard; writes bench.json and '
      'bench.png to --out.'
    ),
  )
  add = bench.add_argument
  add(
    '--methods',
    default=','.join(DEFAULT_METHODS),
    help='comma-separated registry names, or "all" (default: %(default)s)',
  )
  add('--model', choices=MODELS, default='cnn', help='(default: %(default)s)')
  add(
    '--data', choices=DATASETS, default='mnist1d', help='(default: %(default)s)'
  )
  add(
    '--steps',
    type=_positive_int,
    default=2500,
    help='training steps per run (default: %(default)s)',
  )
  add(
    '--seeds',
    type=_positive_int,
    default=5,
    help='seeds per method, trained as one program (default: %(default)s)',
  )
  add(
    '--batch-size',
    type=_positive_int,
    default=128,
    help='(default: %(default)s)',
  )
  add(
    '--lr',
    type=_learning_rates,
    default={},
    help='learning-rate overrides, name=value,... (default: the registry)',
  )
  add(
    '--target',
    type=_fraction,
    default=0.85,
    help='test accuracy for the steps-to-target column (default: %(default)s)',
  )
  add(
    '--eval-every',
    type=_positive_int,
    help='steps between test evaluations (default: steps // 20)',
  )
  add(
    '--out',
    default='optax_zoo_bench',
    help='output directory (default: %(default)s)',
  )
  add(
    '--progress',
    action=argparse.BooleanOptionalAction,
    default=None,
    help='progress bars (default: when stderr is a terminal)',
  )
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the ``optax-zoo`` command line; returns the exit status."""
  parser = _parser()
  args = parser.parse_args(argv)
  if args.command == 'list':
    _list(args)
    return 0
  registered = [m.name for m in optax_zoo.methods()]
  if args.methods == 'all':
    methods = registered
  else:
    methods = list(dict.fromkeys(filter(None, args.methods.split(','))))
  if not methods:
    parser.error('--methods: give at least one method name, or "all"')
  for name in [*methods, *args.lr]:
    try:
      optax_zoo.get(name)
    except ValueError as e:
      parser.error(f'--methods/--lr: {e}')
  data = load_data(args.data)
  if args.batch_size > len(data.y_train):
    parser.error(
      f'--batch-size: must be at most the {len(data.y_train)} training '
      f'examples of {args.data}, got {args.batch_size}'
    )
  result = run_bench(
    data,
    methods,
    model=args.model,
    steps=args.steps,
    seeds=args.seeds,
    batch_size=args.batch_size,
    learning_rates=args.lr,
    target=args.target,
    eval_every=args.eval_every,
    out=args.out,
    progress=args.progress,
  )
  print()
  print(_leaderboard(result))
  out = pathlib.Path(args.out)
  print(f'\nwrote {out / "bench.json"} and {out / "bench.png"}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
