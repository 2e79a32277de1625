"""The ``optax-zoo`` command: ``list`` the registry, ``bench`` its methods.

``optax-zoo bench`` trains one model on MNIST-1D (or sklearn digits) with a
set of registered methods at a fixed step budget and prints a leaderboard;
the benchmark itself is `optax_zoo.training.bench.run_bench`, and this module
only parses flags.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import shutil
import sys
from collections.abc import Sequence

import optax_zoo
from optax_zoo import registry
from optax_zoo.training import bench as bench_lib

__all__ = ['main']


def _yes(flag: bool) -> str:
  return 'yes' if flag else '-'


# Columns of `list` in a terminal; `--wide` adds the paper and prints the
# deviations in full.
_MIN_DEVIATIONS_WIDTH = 16


def _truncate(text: str, width: int) -> str:
  return text if len(text) <= width else text[: max(width - 3, 0)] + '...'


def _list(args: argparse.Namespace) -> None:
  infos = optax_zoo.methods(args.category)
  if args.markdown:
    print(registry.markdown_table(infos))
    return
  rows = [
    (
      m.name,
      m.category,
      *((m.paper.authors, m.paper.year) if args.wide else ()),
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
    *(('paper', 'year') if args.wide else ()),
    'arXiv',
    'copies',
    'extra args',
    'eval',
    'axis',
    'deviations',
  )
  if not args.wide and rows:
    fixed = sum(
      max(len(str(c)) for c in col) + 2
      for col in zip(headers[:-1], *(r[:-1] for r in rows), strict=True)
    )
    columns = shutil.get_terminal_size((100, 24)).columns
    width = max(columns - fixed, _MIN_DEVIATIONS_WIDTH)
    rows = [(*r[:-1], _truncate(r[-1], width)) for r in rows]
  print(bench_lib.table(headers, rows))


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
  parser.add_argument(
    '--version',
    action='version',
    version=f'%(prog)s {optax_zoo.__version__}',
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
  lister.add_argument(
    '--wide',
    action='store_true',
    help='add the papers and print the deviations in full',
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
    default=','.join(bench_lib.DEFAULT_METHODS),
    help='comma-separated registry names, or "all" (default: %(default)s)',
  )
  add(
    '--model',
    choices=bench_lib.MODELS,
    default='cnn',
    help='(default: %(default)s)',
  )
  add(
    '--data',
    choices=bench_lib.DATASETS,
    default='mnist1d',
    help='(default: %(default)s)',
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
  try:
    status = _main(argv)
    sys.stdout.flush()  # a short output reaches a closed pipe only here
    return status
  except BrokenPipeError:
    # The reader left (`optax-zoo list | head`): as Python's documentation
    # advises, point stdout at devnull so the interpreter's final flush
    # does not fail again, and exit quietly.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1


def _main(argv: Sequence[str] | None) -> int:
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
  data = bench_lib.load_data(args.data)
  if args.batch_size > len(data.y_train):
    parser.error(
      f'--batch-size: must be at most the {len(data.y_train)} training '
      f'examples of {args.data}, got {args.batch_size}'
    )
  result = bench_lib.run_bench(
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
  print(bench_lib.leaderboard(result))
  out = pathlib.Path(args.out)
  print(f'\nwrote {out / "bench.json"} and {out / "bench.png"}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
