"""Shared logic of the training-procedure experiments (MNIST-1D, vmapped).

The tuning protocol, one for every configuration of a comparison, baselines
included: each configuration trains on the same learning-rate grid with
the same budget on ``SELECTION_SEEDS`` (0, 1, 2), the rate with the best
mean selection metric is kept, and the claim is then measured on 10 fresh
seeds (100 to 109), so the seeds that chose a rate do not also judge it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import optax

from experiments import _lib
from optax_zoo import training

SELECTION_SEEDS = (0, 1, 2)
FIRST_EVAL_SEED, NUM_EVAL_SEEDS = 100, 10
RATES = (3e-3, 1e-2, 3e-2)


def eval_seeds(num: int = NUM_EVAL_SEEDS) -> list[int]:
  return list(range(FIRST_EVAL_SEED, FIRST_EVAL_SEED + num))


def add_common_args(parser: argparse.ArgumentParser, *, steps: int) -> None:
  parser.add_argument('--steps', type=int, default=steps)
  parser.add_argument(
    '--seeds', type=int, default=NUM_EVAL_SEEDS, help='evaluation seeds'
  )
  parser.add_argument(
    '--selection-seeds',
    type=int,
    default=len(SELECTION_SEEDS),
    help="seeds that choose each configuration's rate",
  )
  parser.add_argument('--rates', type=float, nargs='+', default=RATES)
  parser.add_argument('--channels', type=int, default=25)


def model_fn(channels: int) -> Callable:
  return lambda rngs: training.CNN1D(channels=channels, rngs=rngs)


def tune(
  result: dict,
  name: str,
  rates,
  run: Callable[[float, list[int]], float],
  *,
  selection_seeds: int,
  save: Callable[[], None],
) -> float:
  """The rate of ``rates`` maximizing ``run(lr, seeds)`` (a mean metric).

  Each grid point's score is kept in ``result['selection'][name]`` and
  saved as soon as it is measured, so an interrupted run resumes.
  """
  scores = result.setdefault('selection', {}).setdefault(name, {})
  seeds = list(SELECTION_SEEDS[:selection_seeds])
  if len(rates) == 1:
    return float(rates[0])
  for lr in rates:
    if f'{lr:g}' not in scores:
      scores[f'{lr:g}'] = float(run(lr, seeds))
      save()
  return float(max(rates, key=lambda lr: scores[f'{lr:g}']))


def adam(lr: float) -> optax.GradientTransformation:
  return optax.adam(lr)


def steps_to(histories, target: float) -> list[int | None]:
  """Per seed, the first evaluated step at ``target`` accuracy (None: never)."""
  return [h.steps_to(target) for h in histories]


def reached_summary(values) -> dict:
  """Mean and interval of the steps of the seeds that got there, and count."""
  got = np.asarray([x for x in values if x is not None], np.float64)
  s = _lib.summary(got) if got.size >= 2 else {'mean': None, 'ci95': None}
  return {**s, 'reached': int(got.size), 'of': len(values)}
