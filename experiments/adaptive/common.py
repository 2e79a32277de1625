"""Shared logic of the adaptive-optimizer experiments (MNIST-1D, vmapped seeds).

Learning rates come from the grids of ``python -m experiments.lr_grid.run``
(same budget for every method: 2000 steps, batch 128, 2 seeds, 9 log-spaced
rates); the claims are then measured on 10 fresh seeds (100 to 109), so the
seeds that chose the rate do not also judge it.
"""

from __future__ import annotations

import argparse
import json

from experiments import _lib
from experiments.lr_grid import run as lr_grid
from optax_zoo import training

FIRST_EVAL_SEED, NUM_EVAL_SEEDS = 100, 10


def eval_seeds(num: int = NUM_EVAL_SEEDS) -> list[int]:
  """The first ``num`` evaluation seeds (100, 101, ...)."""
  return list(range(FIRST_EVAL_SEED, FIRST_EVAL_SEED + num))


def add_seeds_arg(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    '--seeds',
    type=int,
    default=NUM_EVAL_SEEDS,
    help='number of evaluation seeds, from 100',
  )


def grid_learning_rate(name: str, model: str) -> float:
  """The best rate of ``name`` on ``model``'s grid.

  The grids are inputs here: one run into the current results directory
  takes precedence, else the committed one is read.
  """
  path = lr_grid.results_path(model)
  if not path.exists():
    path = _lib.COMMITTED_RESULTS / path.name
  accuracy = json.loads(path.read_text())['accuracy'].get(name)
  if not accuracy:
    raise ValueError(
      f'{name!r} has no {model} grid: run python -m experiments.lr_grid.run '
      f'--model {model} --methods {name}'
    )
  return float(max(accuracy, key=accuracy.get))


def train(
  tx,
  model: str,
  *,
  seeds,
  steps: int = 2000,
  batch_size: int = 128,
  desc: str | None = None,
  data: training.Dataset | None = None,
  eval_every: int | None = None,
) -> list[training.History]:
  """Trains ``tx`` on ``model`` for all ``seeds`` as one vmapped program."""
  return training.train_seeds(
    lr_grid.MODELS[model],
    tx,
    data if data is not None else training.mnist1d(),
    seeds=seeds,
    steps=steps,
    batch_size=batch_size,
    eval_every=eval_every or max(1, steps // 20),
    desc=desc,
  ).histories
