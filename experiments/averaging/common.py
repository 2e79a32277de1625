"""Shared logic of the averaging experiments (MNIST-1D, CNN1D, vmapped seeds).

Each launcher trains one or more optimizer configurations for all seeds as a
single vmapped program (`optax_zoo.training.train_seeds`), evaluates the
trained weights (final iterate, the averaged weights `eval_params` finds, or
an ensemble), and writes a JSON result and a plot (see `experiments._lib`).
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments import _lib
from optax_zoo import training
from optax_zoo.analysis import (
  expected_calibration_error,
  negative_log_likelihood,
  plotting,
)

BATCH_SIZE = 128
STEPS_PER_EPOCH = 4000 // BATCH_SIZE  # 31


def model_fn(rngs: nnx.Rngs) -> nnx.Module:
  return training.CNN1D(rngs=rngs)


def train(
  tx: optax.GradientTransformation, data, seeds, steps: int
) -> training.TrainResult:
  """``tx`` trained under all ``seeds`` at once, evaluated only at the end."""
  return training.train_seeds(
    model_fn,
    tx,
    data,
    seeds=seeds,
    steps=steps,
    batch_size=BATCH_SIZE,
    eval_every=[],
  )


def probs(
  result: training.TrainResult, x: Any, params: Any = None
) -> jax.Array:
  """Softmax outputs on ``x`` per seed, shape (seeds, N, C), in eval mode.

  ``params`` defaults to the evaluated weights (`eval_params`, with the
  model state they were evaluated with); other per-seed weights (snapshots,
  samples, the trained iterate) use the trained model state, which is the
  same for CNN1D (it has no BatchNorm).
  """
  if params is None:
    return _probs(
      result.graphdef, result.eval_params, result.eval_model_state, x
    )
  return _probs(result.graphdef, params, result.model_state, x)


@functools.partial(jax.jit, static_argnums=0)
def _probs(graphdef, params, rest, x):
  def one(p, r):
    return jax.nn.softmax(nnx.merge(graphdef, p, r)(jnp.asarray(x)))

  return jax.vmap(one)(params, rest)


def metrics(probs: jax.Array, labels: np.ndarray) -> dict[str, list[float]]:
  """Per-seed accuracy, NLL and ECE of probabilities (seeds, N, C)."""
  labels = jnp.asarray(labels)
  acc = jnp.mean(jnp.argmax(probs, -1) == labels, axis=-1)
  nll = jax.vmap(negative_log_likelihood, (0, None))(probs, labels)
  ece = jax.vmap(lambda p: expected_calibration_error(p, labels)[0])(probs)
  return {
    'accuracy': np.asarray(acc).tolist(),
    'nll': np.asarray(nll).tolist(),
    'ece': np.asarray(ece).tolist(),
  }


def parser(doc: str, steps: int) -> argparse.ArgumentParser:
  """The launchers' parser: ``--seeds`` (how many, from 0) and ``--steps``."""
  p = argparse.ArgumentParser(description=doc.split('\n')[0])
  p.add_argument('--seeds', type=int, default=10)
  p.add_argument('--steps', type=int, default=steps)
  return p


def tree_index(tree: Any, i: Any) -> Any:
  return jax.tree.map(lambda x: x[i], tree)


def accuracy_boxplot(
  runs: dict[str, dict[str, list[float]]],
  path,
  *,
  title: str | None = None,
) -> None:
  """Saves a box plot of each run's per-seed test accuracy to ``path``."""
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 3.5))
  plotting.seed_boxplot({k: v['accuracy'] for k, v in runs.items()}, ax)
  if title:
    ax.set_title(title)
  _lib.save_plot(fig, path)
