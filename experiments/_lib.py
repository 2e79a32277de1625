"""What every launcher ends with: where results go, saving, resuming, summaries.

Results are JSON files named after the experiment in `results_dir()`; plots
go next to the launcher. Setting ``$OPTAX_ZOO_RESULTS`` to a directory sends
both there instead, so a trial or smoke run leaves the committed results
alone.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np

from optax_zoo.training.stats import mean_ci, paired_ci

__all__ = [
  'COMMITTED_RESULTS',
  'RESULTS_ENV',
  'fmt',
  'load',
  'mean_ci',
  'paired',
  'paired_ci',
  'pct',
  'pct_diff',
  'plot_path',
  'result_path',
  'results_dir',
  'resume',
  'save',
  'save_plot',
  'summary',
  'verdict',
  'write_json',
]

RESULTS_ENV = 'OPTAX_ZOO_RESULTS'
COMMITTED_RESULTS = pathlib.Path(__file__).resolve().parent / 'results'


def results_dir() -> pathlib.Path:
  """``$OPTAX_ZOO_RESULTS`` if set, else ``experiments/results``."""
  override = os.environ.get(RESULTS_ENV)
  return pathlib.Path(override) if override else COMMITTED_RESULTS


def result_path(name: str) -> pathlib.Path:
  return results_dir() / f'{name}.json'


def plot_path(launcher: str, filename: str) -> pathlib.Path:
  """Where the launcher at path ``launcher`` saves the plot ``filename``."""
  override = os.environ.get(RESULTS_ENV)
  folder = pathlib.Path(override) if override else pathlib.Path(launcher).parent
  return folder / filename


def load(name: str) -> dict[str, Any]:
  """The saved result ``name``, or an empty dict if there is none."""
  path = result_path(name)
  return json.loads(path.read_text()) if path.exists() else {}


def write_json(path: pathlib.Path, result: Any, *, indent: int = 1) -> None:
  """Writes ``result`` to ``path`` atomically: a kill keeps the last file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(json.dumps(result, indent=indent))
  os.replace(tmp, path)


def save(name: str, result: dict[str, Any], *, indent: int = 1) -> pathlib.Path:
  """Writes ``result`` as the JSON of experiment ``name``."""
  path = result_path(name)
  write_json(path, result, indent=indent)
  return path


def resume(name: str, **config: Any) -> dict[str, Any]:
  """The saved result ``name`` if it was run with ``config``, else a new one.

  A new result holds ``config`` and empty ``runs``; launchers add each
  finished run and `save` after it, so an interrupted experiment continues
  where it stopped.
  """
  result = load(name)
  if not result or any(result.get(k) != v for k, v in config.items()):
    result = {**config, 'runs': {}}
  return result


def save_plot(fig, path: pathlib.Path, *, dpi: int = 120) -> pathlib.Path:
  """Saves and closes the matplotlib figure ``fig``."""
  import matplotlib.pyplot as plt

  path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path


def summary(values) -> dict[str, float]:
  """Mean and the 95% t-interval half-width over seeds."""
  mean, half = mean_ci(values)
  return {'mean': mean, 'ci95': half}


def paired(a, b) -> dict[str, float]:
  """Mean and 95% interval of the per-seed difference ``a - b``."""
  return summary(np.asarray(a) - np.asarray(b))


def fmt(s: dict[str, float], scale: float = 100.0, digits: int = 1) -> str:
  """A `summary` as 'mean ± ci', scaled (to percent by default)."""
  return f'{s["mean"] * scale:.{digits}f} ± {s["ci95"] * scale:.{digits}f}'


def pct(values) -> str:
  """'mean ± ci' of per-seed fractions, in percent."""
  return fmt(summary(values))


def pct_diff(a, b) -> str:
  """The paired difference ``a - b`` as signed 'mean ± ci' in percent."""
  mean, half = paired_ci(a, b)
  return f'{100 * mean:+.1f} ± {100 * half:.1f}'


def verdict(a, b, *, margin: float = 0.0) -> str:
  """Whether ``a`` beats ``b`` per seed: 'better', 'worse' or 'tie'.

  'better' needs the 95% interval of the paired difference above
  ``margin``; 'worse' needs it below ``-margin``.
  """
  mean, half = paired_ci(a, b)
  if mean - half > margin:
    return 'better'
  if mean + half < -margin:
    return 'worse'
  return 'tie'
