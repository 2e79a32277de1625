"""8-bit Adam on a model with an embedding layer, with and without the
stable embedding (Dettmers et al. 2022: the stable embedding layer is what
keeps 8-bit training of embeddings as good as 32-bit).

  python -m experiments.quantization.embedding

MNIST-1D as tokens: each of the 40 values of a signal falls in one of
``--vocab`` equal-width bins over the training range (the bins in the
tails are rare tokens, as rare words are). The model embeds the 40 tokens
(``--dim`` wide), flattens them and classifies with a 100-unit ReLU layer.
Embeddings: ``plain`` (`nnx.Embed`, its default init) and ``stable``
(`quantization.StableEmbedding`, with its table's Adam state kept in 32
bits by `stable_embedding_mask`). Each is trained with 32-bit Adam and with
`adam8bit` (every tensor quantized, ``min_size=0``) at the same rate, the
32-bit Adam optimum of ``--rates`` on tuning seed 0 for each embedding, so
the 8-bit runs are not retuned. Seeds 100.. (paired, vmapped).
"""

from __future__ import annotations

import argparse
import time

import jax.numpy as jnp
import numpy as np
from flax import nnx

import optax_zoo
from experiments import _lib
from experiments.adaptive import common
from experiments.quantization import common as common8
from optax_zoo import quantization, training

NAME = 'quantization_embedding'
RATES = (3e-3, 1e-2, 3e-2)
EMBEDDINGS = ('plain', 'stable')


class TokenModel(nnx.Module):
  """Embedding of the tokens, flattened, one hidden layer, a head."""

  def __init__(self, kind, vocab, dim, length, *, rngs):
    if kind == 'stable':
      self.embed = quantization.StableEmbedding(vocab, dim, rngs=rngs)
    else:
      self.embed = nnx.Embed(vocab, dim, rngs=rngs)
    self.hidden = nnx.Linear(length * dim, 100, rngs=rngs)
    self.head = nnx.Linear(100, 10, rngs=rngs)

  def __call__(self, tokens):
    x = self.embed(tokens.astype(jnp.int32))
    return self.head(nnx.relu(self.hidden(x.reshape(x.shape[0], -1))))


def tokenize(data: training.Dataset, vocab: int) -> training.Dataset:
  """MNIST-1D with each value replaced by its bin among ``vocab``."""
  lo, hi = data.x_train.min(), data.x_train.max()
  edges = np.linspace(lo, hi, vocab + 1)[1:-1]
  tokens = lambda x: np.digitize(x, edges).astype(np.float32)
  return training.Dataset(
    x_train=tokens(data.x_train),
    y_train=data.y_train,
    x_test=tokens(data.x_test),
    y_test=data.y_test,
    num_classes=data.num_classes,
    name=f'{data.name}-tokens{vocab}',
  )


def make_tx(kind: str, bits: int, lr: float):
  if bits == 32:
    return optax_zoo.adam(lr)
  mask = quantization.stable_embedding_mask if kind == 'stable' else None
  return quantization.adam8bit(lr, min_size=0, mask=mask)


def train(kind, bits, lr, seeds, data, args) -> dict:
  start = time.time()
  histories = training.train_seeds(
    lambda rngs: TokenModel(
      kind, args.vocab, args.dim, data.num_features, rngs=rngs
    ),
    make_tx(kind, bits, lr),
    data,
    seeds=seeds,
    steps=args.steps,
    batch_size=args.batch,
    eval_every=max(1, args.steps // 10),
    desc=f'{kind} {bits}-bit lr {lr:g}',
  ).histories
  acc = [float(h.test_accuracy[-1]) for h in histories]
  print(
    f'{kind} {bits}-bit lr {lr:g}: acc {np.mean(acc):.4f} '
    f'({time.time() - start:.0f} s)',
    flush=True,
  )
  return {
    'lr': lr,
    'accuracy': acc,
    'finite': common8.finite(histories),
  }


def plot(result) -> None:
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 3.5))
  shown = [k for k in EMBEDDINGS if k in result['summary']]
  common8.paired_errorbars(ax, [result['summary'][k] for k in shown])
  ax.set_xticks(range(len(shown)), shown)
  ax.set_ylabel('test accuracy (%)')
  ax.set_title('MNIST-1D tokens: 8-bit Adam and the stable embedding')
  ax.legend(fontsize=8)
  _lib.save_plot(fig, _lib.plot_path(__file__, 'embedding.png'))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=2000)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--vocab', type=int, default=256)
  parser.add_argument('--dim', type=int, default=32)
  parser.add_argument('--rates', type=float, nargs='+', default=RATES)
  parser.add_argument('--embeddings', nargs='+', default=list(EMBEDDINGS))
  common.add_seeds_arg(parser)
  args = parser.parse_args(argv)
  seeds = common.eval_seeds(args.seeds)
  data = tokenize(training.mnist1d(), args.vocab)
  result = _lib.resume(
    NAME,
    steps=args.steps,
    batch=args.batch,
    vocab=args.vocab,
    dim=args.dim,
    rates=list(args.rates),
    seeds=seeds,
  )
  runs = result['runs']

  def run(key, fn):
    if key not in runs:
      runs[key] = fn()
      _lib.save(NAME, result)
    return runs[key]

  summary = {}
  for kind in args.embeddings:
    tune = {
      lr: run(
        f'{kind} tune {lr:g}',
        lambda lr=lr, kind=kind: train(kind, 32, lr, [0], data, args),
      )['accuracy'][0]
      for lr in args.rates
    }
    best = max(tune, key=tune.get)
    full, low = (
      run(
        f'{kind} {bits}',
        lambda b=bits, k=kind, lr=best: train(k, b, lr, seeds, data, args),
      )
      for bits in (32, 8)
    )
    diff = _lib.paired(low['accuracy'], full['accuracy'])
    summary[kind] = {
      'lr': best,
      '32bit': _lib.summary(full['accuracy']),
      '8bit': _lib.summary(low['accuracy']),
      '8bit_minus_32bit': diff,
      'verdict': common8.word(diff),
      'all_finite': full['finite'] and low['finite'],
    }
  result['summary'] = summary
  if set(EMBEDDINGS) <= set(summary):
    result['stable_minus_plain_8bit'] = _lib.paired(
      runs['stable 8']['accuracy'], runs['plain 8']['accuracy']
    )
  result['setting'] = (
    f'MNIST-1D as {args.vocab} equal-width value tokens, embedding '
    f'{args.dim} wide, flatten, 100 ReLU, head; Adam vs adam8bit '
    f'(min_size 0, block 256) at the 32-bit optimum of {list(args.rates)} '
    f'(tuning seed 0); {args.steps} steps, batch {args.batch}, seeds {seeds}'
  )
  _lib.save(NAME, result)
  for kind, s in summary.items():
    print(
      f'{kind:6s} lr {s["lr"]:g}: 32-bit {_lib.fmt(s["32bit"])} 8-bit '
      f'{_lib.fmt(s["8bit"])} diff {_lib.fmt(s["8bit_minus_32bit"])}: '
      f'{s["verdict"]}'
    )
  plot(result)


if __name__ == '__main__':
  main()
