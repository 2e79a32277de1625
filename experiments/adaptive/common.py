"""Shared logic of the adaptive-optimizer experiments (MNIST-1D, vmapped seeds).

Learning rates come from the grids of ``experiments/lr_grid/run.py`` (same
budget for every method: 2000 steps, batch 128, 2 seeds, 9 log-spaced rates);
the claims are then measured on 10 fresh seeds (100 to 109), so the seeds that
chose the rate do not also judge it.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

from optax_zoo import training
from optax_zoo.training.stats import mean_ci, paired_ci

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE.parent / 'results'
sys.path.insert(0, str(HERE.parent / 'lr_grid'))
from run import MODELS, results_path  # noqa: E402

EVAL_SEEDS = tuple(range(100, 110))


def grid_learning_rate(name: str, model: str) -> float:
  """The best rate of ``name`` on ``model``'s grid."""
  path = results_path(model)
  accuracy = json.loads(path.read_text())['accuracy'].get(name)
  if not accuracy:
    raise ValueError(
      f'{name!r} has no {model} grid: run experiments/lr_grid/run.py '
      f'--model {model} --methods {name}'
    )
  return float(max(accuracy, key=accuracy.get))


def train(
  tx,
  model: str,
  *,
  seeds=EVAL_SEEDS,
  steps: int = 2000,
  batch_size: int = 128,
  desc: str | None = None,
  data: training.Dataset | None = None,
  eval_every: int | None = None,
) -> list[training.History]:
  """Trains ``tx`` on ``model`` for all ``seeds`` as one vmapped program."""
  return training.train_seeds(
    MODELS[model],
    tx,
    data if data is not None else training.mnist1d(),
    seeds=seeds,
    steps=steps,
    batch_size=batch_size,
    eval_every=eval_every or max(1, steps // 20),
    desc=desc,
  )


def load(name: str) -> dict[str, Any]:
  path = RESULTS / f'{name}.json'
  return json.loads(path.read_text()) if path.exists() else {}


def resume(name: str, **config: Any) -> dict[str, Any]:
  """The saved result ``name`` if it was run with ``config``, else a new one.

  A new result holds ``config``, the evaluation seeds and empty ``runs``;
  launchers add each finished run and `save` after it, so an interrupted
  experiment continues where it stopped.
  """
  result = load(name)
  if not result or any(result.get(k) != v for k, v in config.items()):
    result = {**config, 'seeds': list(EVAL_SEEDS), 'runs': {}}
  return result


def save(name: str, result: dict[str, Any]) -> pathlib.Path:
  RESULTS.mkdir(parents=True, exist_ok=True)
  path = RESULTS / f'{name}.json'
  tmp = path.with_suffix('.tmp')
  tmp.write_text(json.dumps(result, indent=1))
  tmp.replace(path)
  return path


def pct(values) -> str:
  """'mean ± ci' in percent."""
  mean, half = mean_ci(values)
  return f'{100 * mean:.1f} ± {100 * half:.1f}'


def pct_diff(a, b) -> str:
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


def first_step_reaching(histories, target: float) -> list[float]:
  """Per seed, the first evaluated step at ``target`` accuracy (inf if none)."""
  out = []
  for h in histories:
    s = h.steps_to(target)
    out.append(float('inf') if s is None else float(s))
  return out
