"""Shared helpers of the analysis experiments: training, losses, results."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from optax_zoo import training

ROOT = pathlib.Path(__file__).resolve().parents[1]


def fit(model, tx, data, *, steps, batch_size=128, seed=0, checkpoints=()):
  """Trains in place with one compiled step; returns the parameter pytrees
  at each step in ``checkpoints`` (step 0 is the initialization)."""
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  train_fn = training.make_train_fn(graphdef, tx)
  opt_state = tx.init(params)
  rng = np.random.default_rng(seed)
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  saved, done = {}, 0
  for stop in sorted({*checkpoints, steps}):
    if stop == 0:
      saved[0] = jax.tree.map(jnp.copy, params)
      continue
    batches = rng.integers(0, len(y), (stop - done, batch_size))
    params, rest, opt_state, _ = train_fn(
      params, rest, opt_state, x, y, jnp.asarray(batches, jnp.int32)
    )
    done = stop
    saved[stop] = jax.tree.map(jnp.copy, params)
  nnx.update(model, params, rest)
  model.eval()
  return saved


def loss_fns(model, x, y):
  """``loss(params)`` and ``batch_loss(params, (x, y))`` in eval mode."""
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)

  def batch_loss(params, batch):
    logits = nnx.merge(graphdef, params, rest)(batch[0])
    return training.cross_entropy_loss(logits, batch[1])

  def metrics(params):
    logits = nnx.merge(graphdef, params, rest)(x)
    return {
      'loss': training.cross_entropy_loss(logits, y),
      'accuracy': jnp.mean(jnp.argmax(logits, -1) == y),
    }

  return (lambda p: batch_loss(p, (x, y))), batch_loss, metrics


def save(name, results):
  path = ROOT / 'results' / f'{name}.json'
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(results, indent=2))
  print(f'wrote {path}')


def adam(lr=1e-3):
  return optax.adam(lr)
