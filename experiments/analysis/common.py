"""Shared helpers of the analysis experiments: training, losses, results."""

import argparse
import pathlib

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from experiments import _lib
from optax_zoo import training


def fit(model, tx, data, *, steps, batch_size=128, seed=0, checkpoints=()):
  """Trains ``model`` in place and leaves it in eval mode.

  Returns the trained parameters at every step of ``checkpoints`` and at
  ``steps`` (step 0 is the initialization), copied out of the loop's
  ``on_eval`` hook.
  """
  saved = {}

  def keep(state):
    saved[state.step] = jax.tree.map(jnp.copy, state.params)

  training.train(
    model,
    tx,
    data,
    steps=steps,
    batch_size=batch_size,
    seed=seed,
    eval_every=sorted(checkpoints),
    progress=False,
    on_eval=keep,
  )
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


def add_plot_arg(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    '--plot',
    default=None,
    help='where to save the plot (default: next to the launcher)',
  )


def plot_path(args: argparse.Namespace, launcher: str, filename: str):
  """``--plot`` if given, else the default place of ``filename``."""
  return pathlib.Path(args.plot or _lib.plot_path(launcher, filename))


def save(name, results):
  print(f'wrote {_lib.save(name, results, indent=2)}')


def adam(lr=1e-3):
  return optax.adam(lr)
