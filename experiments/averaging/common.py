"""Shared logic of the averaging experiments (MNIST-1D, CNN1D, vmapped seeds).

Each launcher trains one or more optimizer configurations for all seeds as a
single vmapped program, evaluates the trained weights (final iterate, the
averaged weights `eval_params` finds, or an ensemble), and writes a JSON file
to ``experiments/results`` and a plot next to the launcher.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from optax_zoo import training
from optax_zoo.analysis import (
  expected_calibration_error,
  negative_log_likelihood,
  plotting,
)
from optax_zoo.training.stats import mean_ci

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE.parent / 'results'
BATCH_SIZE = 128
STEPS_PER_EPOCH = 4000 // BATCH_SIZE  # 31


def model_fn(rngs: nnx.Rngs) -> nnx.Module:
  return training.CNN1D(rngs=rngs)


def batch_orders(seeds, steps: int, num_train: int) -> np.ndarray:
  """Per-seed shuffled epochs of batch indices, shape (seeds, steps, B)."""
  per_epoch = num_train // BATCH_SIZE
  epochs = -(-steps // per_epoch)
  out = []
  for s in seeds:
    rng = np.random.default_rng(s)
    idx = [
      rng.permutation(num_train)[: per_epoch * BATCH_SIZE]
      for _ in range(epochs)
    ]
    out.append(np.concatenate(idx).reshape(-1, BATCH_SIZE)[:steps])
  return np.stack(out).astype(np.int32)


class Run:
  """One optimizer configuration trained under all seeds at once."""

  def __init__(self, tx: optax.GradientTransformation, data, seeds, steps):
    models = [model_fn(nnx.Rngs(s)) for s in seeds]
    for m in models:
      m.train()
    self.graphdef = nnx.graphdef(models[0])
    split = [nnx.split(m, nnx.Param, ...) for m in models]
    stack = lambda trees: jax.tree.map(lambda *x: jnp.stack(x), *trees)
    self.train_def = split[0][0]
    self.params = stack([s[1] for s in split])
    self.rest = stack([s[2] for s in split])
    self.opt_state = jax.vmap(tx.init)(self.params)
    train_fn = training.make_train_fn(self.train_def, tx, vmap=True)
    orders = jnp.asarray(batch_orders(seeds, steps, len(data.y_train)))
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    self.params, self.rest, self.opt_state, losses = train_fn(
      self.params, self.rest, self.opt_state, x, y, orders
    )
    self.final_train_loss = np.asarray(losses[:, -STEPS_PER_EPOCH:].mean(1))

    def one(p, rest, x):
      model = nnx.merge(self.train_def, p, rest)
      model.eval()
      return jax.nn.softmax(model(x))

    self._probs = jax.jit(jax.vmap(one, in_axes=(0, 0, None)))

  def probs(self, params: Any, x: jax.Array) -> jax.Array:
    """Softmax outputs of per-seed ``params`` on ``x``: (seeds, N, C)."""
    return self._probs(params, self.rest, jnp.asarray(x))


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


def summary(values) -> dict[str, float]:
  """Mean and the 95% t-interval half-width over seeds."""
  mean, half = mean_ci(values)
  return {'mean': mean, 'ci95': half}


def paired(a, b) -> dict[str, float]:
  """Mean and 95% interval of the per-seed difference ``a - b``."""
  return summary(np.asarray(a) - np.asarray(b))


def fmt(s: dict[str, float], scale: float = 100.0, digits: int = 1) -> str:
  return f'{s["mean"] * scale:.{digits}f} ± {s["ci95"] * scale:.{digits}f}'


def save(name: str, result: dict[str, Any]) -> pathlib.Path:
  RESULTS.mkdir(parents=True, exist_ok=True)
  path = RESULTS / f'{name}.json'
  path.write_text(json.dumps(result, indent=1))
  return path


def add_args(parser, steps: int) -> None:
  parser.add_argument('--seeds', type=int, default=10)
  parser.add_argument('--steps', type=int, default=steps)


def tree_index(tree: Any, i: Any) -> Any:
  return jax.tree.map(lambda x: x[i], tree)


def map_seeds(fn: Callable[..., Any], *trees: Any) -> Any:
  """``fn`` per seed over leading seed axes, as one jitted vmap."""
  return jax.jit(jax.vmap(fn))(*trees)


def accuracy_boxplot(
  runs: dict[str, dict[str, list[float]]],
  path: pathlib.Path,
  *,
  title: str | None = None,
) -> None:
  """Saves a box plot of each run's per-seed test accuracy to ``path``."""
  import matplotlib.pyplot as plt

  _, ax = plt.subplots(figsize=(5, 3.5))
  plotting.seed_boxplot({k: v['accuracy'] for k, v in runs.items()}, ax)
  if title:
    ax.set_title(title)
  plt.tight_layout()
  plt.savefig(path, dpi=120)
  plt.close()
