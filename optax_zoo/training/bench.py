"""The benchmark behind ``optax-zoo bench``, as a library.

`run_bench` trains one model on MNIST-1D (or sklearn digits) with a set of
registered methods at a fixed step budget, the seeds of each method as one
vmapped program (`optax_zoo.training.train_seeds`, which supplies every
method's extra update arguments), and writes ``bench.json`` (the
configuration, versions, device and every seed's curves) and ``bench.png``
(test accuracy against step) to ``out`` after each method, so an
interrupted run keeps what it measured. `leaderboard` formats the result.
Files are written atomically and with the permissions of the user's umask.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import io
import json
import math
import os
import pathlib
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from optax_zoo import registry
from optax_zoo._src import validation as v
from optax_zoo._src.method_info import MethodInfo
from optax_zoo.training import data as data_lib
from optax_zoo.training import loop, models
from optax_zoo.training.stats import mean_ci

__all__ = [
  'DATASETS',
  'DEFAULT_METHODS',
  'MODELS',
  'leaderboard',
  'load_data',
  'run_bench',
  'table',
]

DEFAULT_METHODS = ('adam', 'adamw', 'nadam', 'radam', 'lookahead', 'sam', 'sgd')
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


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A plain-text table with aligned columns and a rule under the header."""
  cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

  def line(row):
    cols = zip(row, widths, strict=True)
    return '  '.join(c.ljust(w) for c, w in cols).rstrip()

  rule = '  '.join('-' * w for w in widths)
  return '\n'.join([line(cells[0]), rule, *map(line, cells[1:])])


def _model_fn(
  model: str, data: data_lib.Dataset
) -> Callable[[nnx.Rngs], nnx.Module]:
  if model == 'cnn':
    return lambda rngs: models.CNN1D(
      data.num_classes, in_length=data.num_features, rngs=rngs
    )
  if model == 'mlp':
    return lambda rngs: models.MLP(
      data.num_features, num_classes=data.num_classes, rngs=rngs
    )
  return lambda rngs: models.ResNet1D(data.num_classes, rngs=rngs)


def _state_bytes_per_param(tx, model_fn) -> tuple[float, int]:
  params = nnx.state(nnx.eval_shape(lambda: model_fn(nnx.Rngs(0))), nnx.Param)
  num_params = sum(x.size for x in jax.tree.leaves(params))
  state = jax.eval_shape(tx.init, params)
  nbytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  return nbytes / num_params, num_params


def _summary(histories: list[loop.History], target: float) -> dict:
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


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _write_atomic(path: pathlib.Path, content: bytes) -> None:
  """Writes ``content`` to ``path`` by rename, with the umask's permissions.

  `tempfile.mkstemp` creates its file with mode 0600; the rename would keep
  that, so the file gets the mode a plain ``open`` would have given it.
  """
  fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=path.suffix + '.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(content)
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


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

  _write_atomic(path, json.dumps(finite(result), indent=1).encode())


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
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=110)
  _write_atomic(path, buffer.getvalue())


def leaderboard(result: dict) -> str:
  """The result of `run_bench` as a table, best final accuracy first."""
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
  return table(headers, rows)


def _nan_none(x: float | None) -> float | None:
  return None if x is None or math.isnan(x) else x


def load_data(name: str) -> data_lib.Dataset:
  """The bench's data set by name, one of `DATASETS`."""
  if name == 'mnist1d':
    return data_lib.mnist1d()
  if name == 'digits':
    return data_lib.digits()
  raise ValueError(f'`name` must be one of {DATASETS}, got {name!r}.')


def run_bench(
  data: data_lib.Dataset,
  methods: Sequence[str | MethodInfo] = DEFAULT_METHODS,
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

  Every method runs, wrappers and methods with extra update arguments
  included (the training loop supplies them); only a method that must run
  under a named device axis is recorded in ``skipped`` with the reason.
  Writes ``bench.json`` and ``bench.png`` to ``out`` after each method. The
  arguments are those of ``optax-zoo bench`` (``data`` from `load_data`).
  ``log`` receives one line per method.

  Args:
    data: the data set.
    methods: registry names, or `MethodInfo` entries (a method that is not
      registered, such as a test's).
    model: one of `MODELS`.
    steps: training steps per run.
    seeds: seeds per method, trained as one program.
    batch_size: examples per step.
    learning_rates: per-name overrides of the registered rates.
    target: the accuracy of the steps-to-target column.
    eval_every: steps between evaluations (default ``steps // 20``).
    out: the output directory.
    progress: progress bars (default: on a terminal).
    log: receives one line per method.

  Returns:
    The result dict that ``bench.json`` holds.
  """
  v.check_choice('model', model, MODELS)
  learning_rates = dict(learning_rates or {})
  infos = [m if isinstance(m, MethodInfo) else registry.get(m) for m in methods]
  model_fn = _model_fn(model, data)
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  versions, device = _environment()
  result = {
    'config': {
      'methods': [info.name for info in infos],
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
    why = info.single_model_skip_reason()
    if why:
      log(f'skipping {info.name}: it {why}.')
      result['skipped'][info.name] = why
    else:
      entry = _bench_one(
        info,
        learning_rates.get(info.name, info.learning_rate),
        model_fn,
        data,
        steps=steps,
        seeds=seeds,
        batch_size=batch_size,
        eval_every=eval_every,
        target=target,
        progress=progress,
      )
      result['methods'][info.name] = entry
      log(
        f'{info.name}: final accuracy {100 * entry["final_accuracy"]:.1f}% '
        f'(mean of {seeds}), {entry["wall_time"]:.1f} s'
      )
    result['elapsed'] = time.perf_counter() - bench_start
    _write_json(json_path, result)
    if result['methods']:
      _plot(png_path, result)
  return result


def _bench_one(info, lr, model_fn, data, *, seeds, target, **kwargs) -> dict:
  """One method's entry of the bench result."""
  tx = info.build(lr)
  bytes_per_param, num_params = _state_bytes_per_param(tx, model_fn)
  start = time.perf_counter()
  histories = loop.train_seeds(
    model_fn, tx, data, seeds=range(seeds), desc=info.name, **kwargs
  ).histories
  return {
    'learning_rate': lr,
    'category': info.category,
    'num_params': num_params,
    'state_bytes_per_param': bytes_per_param,
    **_summary(histories, target),
    'wall_time': time.perf_counter() - start,
    'seeds': [{'seed': s, **h.to_dict()} for s, h in enumerate(histories)],
  }
