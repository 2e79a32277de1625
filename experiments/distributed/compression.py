"""Compressed gradient exchange against the uncompressed mean on MNIST-1D:
natural compression and dithering (Horvath et al. 2019, claim: 9 bits per
coordinate at no accuracy cost) and AdaComp (Chen et al. 2018, claim: 40x
for convolutional and 200x for dense layers without accuracy loss).

  python -m experiments.distributed.compression

Data-parallel training with ``--workers`` workers simulated by
``jax.vmap(..., axis_name='w')`` on one device: every step a global batch
of ``--batch`` examples is cut into one shard per worker, each worker
computes its gradient on its shard, the gradients are exchanged (the
method) and every worker takes the same SGD step with momentum 0.9 on the
decoded average. Models: `training.MLP` (two hidden layers of ``--hidden``)
and `training.CNN1D` (three convolutions and a dense head). Methods:

- ``uncompressed``: `compressed_mean` with `identity_compressor` (float32,
  equal to ``lax.pmean``);
- ``natural``: `compressed_mean` with `natural_compressor` (uint8 exponent
  plus a sign bit, 9 bits per coordinate);
- ``dithering``: `compressed_mean` with `natural_dithering_compressor` at
  its defaults (7 levels, 2-norm);
- ``adacomp``: `scale_by_adacomp` per layer type, the paper's bin sizes
  L_T = 50 for convolution kernels and biases and 500 for dense layers,
  with ``max_per_bin = bin_size`` so that every coordinate the paper's rule
  selects is sent (no cap).

Each method runs at its own best constant learning rate of ``--rates``,
picked on tuning seed 0 by final test accuracy; the reported seeds are
1..n, vmapped as one program, with the same initializations and batch
orders for every method (paired differences).

Bits: for the compressors, the payload bits per coordinate the all-gather
really carries (`Compressor.tree_payload_bytes`). For AdaComp the payload
has a fixed layout sized for the worst case, so its compression rate is
measured from what is selected: each step counts the coordinates every
worker sends, and one sent coordinate costs its index in the bin
(ceil(log2 L_T) bits) and its sign (1 bit), plus a float32 scale per layer
tensor; rate = 32 x parameters / those bits, per layer type and overall.
The fixed payload this simulation all-gathers (every slot, used or not) is
reported too, as ``payload_bits_per_coordinate``.
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import optax_zoo as oz
from experiments import _lib
from optax_zoo import training
from optax_zoo.distributed import _compressors as cz

# The training loop's shuffled-epoch batch order, cut here into shards.
from optax_zoo.training.loop import _batch_order

NAME = 'distributed_compression'
AXIS = 'w'
MOMENTUM = 0.9
RATES = (0.03, 0.1, 0.3)
MARGIN = 0.01  # non-inferiority margin of the claims, in accuracy
METHODS = ('uncompressed', 'natural', 'dithering', 'adacomp')
BINS = {'conv': 50, 'dense': 500}  # AdaComp's L_T per layer type
# Payload slots per bin: all 50 for convolutions (the paper's rule exactly);
# 50 of 500 for dense layers, which keeps the simulated decode affordable;
# the runs count how often the rule selects more (see `_sent_counts`).
MAX_PER_BIN = {'conv': 50, 'dense': 50}
COMPRESSORS = {
  'uncompressed': oz.identity_compressor,
  'natural': oz.natural_compressor,
  'dithering': oz.natural_dithering_compressor,
}


def _model(name: str, seed: int, hidden: int) -> nnx.Module:
  rngs = nnx.Rngs(seed)
  if name == 'mlp':
    return training.MLP(40, (hidden, hidden), rngs=rngs)
  return training.CNN1D(rngs=rngs)


def _layer_types(params):
  """'conv' for the convolutions' kernels and biases, 'dense' otherwise."""
  return jax.tree_util.tree_map_with_path(
    lambda path, _: 'conv' if 'conv' in jax.tree_util.keystr(path) else 'dense',
    params,
  )


def _exchange(method: str, params, seed: int):
  """The gradient exchange of ``method``, seeded by ``seed``."""
  if method in COMPRESSORS:
    return oz.compressed_mean(COMPRESSORS[method](), AXIS, key=seed)
  labels = _layer_types(params)
  present = set(jax.tree.leaves(labels))
  return optax.multi_transform(
    {
      t: oz.scale_by_adacomp(AXIS, bin_size=b, max_per_bin=MAX_PER_BIN[t])
      for t, b in BINS.items()
      if t in present
    },
    labels,
  )


def _rule_selects(g: jax.Array, grad: jax.Array, bin_size: int) -> jax.Array:
  """How many coordinates the paper's rule selects in ``g = R + grad``."""
  g, grad = jnp.ravel(g), jnp.ravel(grad)
  pad = -g.size % bin_size
  gb = jnp.pad(g, (0, pad)).reshape(-1, bin_size)
  hb = gb + jnp.pad(grad, (0, pad)).reshape(-1, bin_size)
  g_max = jnp.max(jnp.abs(gb), axis=1, keepdims=True)
  return jnp.count_nonzero((jnp.abs(hb) >= g_max) & (gb != 0))


def _sent_counts(method, labels, grads, old, new) -> dict[str, jax.Array]:
  """Coordinates this worker sent this step, per layer type (AdaComp).

  A coordinate is sent exactly where the residue changed from ``R + g``:
  ``scale_by_adacomp`` keeps ``R + g`` bit for bit where it sends nothing.
  ``'<type> rule'`` counts what the paper's rule selects, so that a
  ``max_per_bin`` cap that binds shows as sent < rule.
  """
  if method != 'adacomp':
    return {}
  flat_labels = jax.tree.leaves(labels)
  flat_grads = jax.tree.leaves(grads)
  counts = {}
  for t, inner in old[0].inner_states.items():
    r_old = jax.tree.leaves(inner.inner_state.residue)
    r_new = jax.tree.leaves(new[0].inner_states[t].inner_state.residue)
    g = [x for x, lab in zip(flat_grads, flat_labels, strict=True) if lab == t]
    leaves = list(zip(r_old, g, r_new, strict=True))
    counts[t] = sum(jnp.count_nonzero(a + b - c) for a, b, c in leaves)
    counts[f'{t} rule'] = sum(
      _rule_selects(a + b, b, BINS[t]) for a, b, _ in leaves
    )
  return counts


def make_trainer(graphdef, method, labels, tx):
  """``run(params, opt_state, x, y, batches, lr)`` over lanes, jitted.

  Lanes (seeds or learning rates) lead every argument but ``x`` and ``y``;
  ``params`` and ``opt_state`` then have a worker axis, ``batches`` is
  (lanes, steps, workers, per-worker batch).
  """

  def loss_fn(params, xb, yb):
    return training.cross_entropy_loss(nnx.merge(graphdef, params)(xb), yb)

  def worker_step(params, opt_state, xb, yb, lr):
    loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
    updates, new_state = tx.update(grads, opt_state, params)
    counts = _sent_counts(method, labels, grads, opt_state, new_state)
    params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
    return params, new_state, loss, counts

  def lane(params, opt_state, x, y, batches, lr):
    def step(carry, batch):
      params, opt_state = carry
      params, opt_state, loss, counts = jax.vmap(
        worker_step, in_axes=(0, 0, 0, 0, None), axis_name=AXIS
      )(params, opt_state, x[batch], y[batch], lr)
      counts = {t: jnp.sum(c) for t, c in counts.items()}
      return (params, opt_state), (jnp.mean(loss), counts)

    (params, opt_state), (losses, counts) = jax.lax.scan(
      step, (params, opt_state), batches
    )
    return params, opt_state, losses, jax.tree.map(jnp.sum, counts)

  return jax.jit(
    jax.vmap(lane, in_axes=(0, 0, None, None, 0, 0)), donate_argnums=(0, 1)
  )


def train_lanes(data, model, method, seeds, rates, args) -> list[dict]:
  """Trains one lane per (seed, rate) pair in one program."""
  start = time.time()
  w, steps = args.workers, args.steps
  models = [_model(model, s, args.hidden) for s in seeds]
  graphdef = nnx.graphdef(models[0])
  params = [nnx.state(m, nnx.Param) for m in models]
  labels = _layer_types(params[0])
  txs = [
    optax.chain(_exchange(method, p, s), optax.trace(MOMENTUM))
    for p, s in zip(params, seeds, strict=True)
  ]
  # The key lives in the state: one update function serves every seed.
  states = [tx.init(p) for tx, p in zip(txs, params, strict=True)]
  stack = lambda trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)
  per_worker = lambda t: jax.tree.map(
    lambda a: jnp.broadcast_to(a, (w, *a.shape)), t
  )
  params = stack([per_worker(p) for p in params])
  states = stack([per_worker(s) for s in states])
  batch = args.batch // w
  orders = np.stack(
    [
      _batch_order(s, len(data.y_train), batch * w, steps).reshape(
        steps, w, batch
      )
      for s in seeds
    ]
  )
  run = make_trainer(graphdef, method, labels, txs[0])
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  params, states, losses, counts = run(
    params, states, x, y, jnp.asarray(orders), jnp.asarray(rates, jnp.float32)
  )
  spread = max(
    float(jnp.max(jnp.abs(a - a[:, :1]))) for a in jax.tree.leaves(params)
  )
  first = jax.tree.map(lambda a: a[:, 0], params)
  acc = jax.jit(
    jax.vmap(
      lambda p: jnp.mean(
        jnp.argmax(nnx.merge(graphdef, p)(jnp.asarray(data.x_test)), -1)
        == jnp.asarray(data.y_test)
      )
    )
  )(first)
  sizes = {}
  for p, t in zip(
    jax.tree.leaves(nnx.state(models[0], nnx.Param)),
    jax.tree.leaves(labels),
    strict=True,
  ):
    sizes.setdefault(t, [0, 0])
    sizes[t][0] += p.size
    sizes[t][1] += 1
  losses = np.asarray(losses)
  rows = []
  for i, (s, lr) in enumerate(zip(seeds, rates, strict=True)):
    row = {
      'seed': int(s),
      'lr': float(lr),
      'accuracy': float(acc[i]),
      'final_train_loss': float(np.mean(losses[i, -max(1, steps // 10) :])),
      'finite': bool(np.all(np.isfinite(losses[i]))),
      'worker_spread': spread,
    }
    if counts:
      row['sent_per_worker_step'] = {
        t: float(c[i]) / (steps * w) for t, c in counts.items()
      }
      row['rates'] = adacomp_rates(row['sent_per_worker_step'], sizes)
    rows.append(row)
  print(
    f'{model} {method} seeds {list(seeds)} lr {list(rates)}: acc '
    f'{[round(r["accuracy"], 3) for r in rows]} ({time.time() - start:.0f} s)',
    flush=True,
  )
  return rows


def adacomp_rates(sent: dict, sizes: dict) -> dict[str, float]:
  """Compression rates against float32 from the coordinates sent.

  ``sent[t]``: coordinates one worker sends per step in layers of type t
  (``sent[t + ' rule']``: those the paper's rule selects); ``sizes[t]``:
  (parameters, tensors) of that type. Keys of the result: each type, and
  ``'overall'``, each also with the ``' rule'`` suffix.
  """
  rates = {}
  for suffix in ('', ' rule'):
    total_bits, total_params = 0.0, 0
    for t, (params, tensors) in sizes.items():
      cost = sent[t + suffix] * (math.ceil(math.log2(BINS[t])) + 1)
      cost += 32 * tensors
      rates[t + suffix] = 32 * params / cost
      total_bits += cost
      total_params += params
    rates['overall' + suffix] = 32 * total_params / total_bits
  return rates


def payload_bits(model: str, method: str, hidden: int) -> float:
  """Bits per coordinate one worker's payload carries (compressors)."""
  params = nnx.state(_model(model, 0, hidden), nnx.Param)
  size = sum(p.size for p in jax.tree.leaves(params))
  return 8 * COMPRESSORS[method]().tree_payload_bytes(params) / size


def adacomp_payload_bits(model: str, hidden: int) -> float:
  """Bits per coordinate of this run's fixed AdaComp payload (all slots)."""
  params = nnx.state(_model(model, 0, hidden), nnx.Param)
  labels = jax.tree.leaves(_layer_types(params))
  leaves = jax.tree.leaves(params)
  total = sum(
    cz.adacomp_payload_bytes(p.size, BINS[t], MAX_PER_BIN[t])
    for p, t in zip(leaves, labels, strict=True)
  )
  return 8 * total / sum(p.size for p in leaves)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=3000)
  parser.add_argument('--seeds', type=int, default=5)
  parser.add_argument('--workers', type=int, default=8)
  parser.add_argument('--batch', type=int, default=256, help='global batch')
  parser.add_argument('--hidden', type=int, default=100, help='MLP width')
  parser.add_argument('--rates', type=float, nargs='+', default=RATES)
  parser.add_argument('--models', nargs='+', default=['mlp', 'cnn'])
  parser.add_argument('--methods', nargs='+', default=list(METHODS))
  args = parser.parse_args(argv)
  if args.batch % args.workers:
    parser.error('--batch must be a multiple of --workers')
  if 'uncompressed' not in args.methods:
    parser.error('--methods must include the uncompressed baseline')
  data = training.mnist1d()
  seeds = list(range(1, args.seeds + 1))
  result = _lib.resume(
    NAME,
    steps=args.steps,
    seeds=seeds,
    workers=args.workers,
    batch=args.batch,
    hidden=args.hidden,
    rates=list(args.rates),
    momentum=MOMENTUM,
  )
  runs = result['runs']

  def run(k, fn):
    if k not in runs:
      runs[k] = fn()
      _lib.save(NAME, result)
    return runs[k]

  for model in args.models:
    for method in args.methods:
      tune = run(
        f'{model} {method} tune',
        lambda m=model, me=method: train_lanes(
          data, m, me, [0] * len(args.rates), args.rates, args
        ),
      )
      best = max(tune, key=lambda r: r['accuracy'])['lr']
      run(
        f'{model} {method}',
        lambda m=model, me=method, best=best: train_lanes(
          data, m, me, seeds, [best] * len(seeds), args
        ),
      )
  result['summary'] = summarize(result, args)
  result['setting'] = (
    f'MNIST-1D, {args.workers} workers simulated with jax.vmap, global batch '
    f'{args.batch} ({args.batch // args.workers} per worker), SGD momentum '
    f'{MOMENTUM} with a constant rate from {list(args.rates)} tuned per '
    f'method on seed 0, {args.steps} steps; MLP (40-{args.hidden}-'
    f'{args.hidden}-10) and CNN1D; AdaComp L_T = {BINS["conv"]} (conv) / '
    f'{BINS["dense"]} (dense), at most {MAX_PER_BIN["conv"]} / '
    f'{MAX_PER_BIN["dense"]} sent per bin; seeds {seeds}'
  )
  result['claims'] = verdicts(result['summary'])
  _lib.save(NAME, result)
  for model, rows in result['summary'].items():
    for method, s in rows.items():
      print(
        f'{model} {method:13s} acc {_lib.fmt(s["accuracy"])} diff '
        f'{_lib.fmt(s["minus_uncompressed"])} bits/coord '
        f'{s["bits_per_coordinate"]:.2f} (lr {s["lr"]:g})'
      )
  for claim in result['claims'].values():
    print(claim)
  plot(result)


def summarize(result, args) -> dict:
  runs = result['runs']
  summary = {}
  for model in args.models:
    base = [r['accuracy'] for r in runs[f'{model} uncompressed']]
    rows = {}
    for method in args.methods:
      seeds = runs[f'{model} {method}']
      acc = [r['accuracy'] for r in seeds]
      row = {
        'accuracy': _lib.summary(acc),
        'lr': seeds[0]['lr'],
        'minus_uncompressed': _lib.paired(acc, base),
        'verdict_vs_uncompressed': _lib.verdict(acc, base),
        'all_finite': all(r['finite'] for r in seeds),
        'max_worker_spread': max(r['worker_spread'] for r in seeds),
      }
      if method == 'adacomp':
        kinds = seeds[0]['rates']
        row['compression_rate'] = {
          k: _lib.summary([r['rates'][k] for r in seeds]) for k in kinds
        }
        row['bits_per_coordinate'] = (
          32 / row['compression_rate']['overall']['mean']
        )
        row['payload_bits_per_coordinate'] = adacomp_payload_bits(
          model, args.hidden
        )
        row['sent_per_worker_step'] = {
          k: float(np.mean([r['sent_per_worker_step'][k] for r in seeds]))
          for k in seeds[0]['sent_per_worker_step']
        }
      else:
        row['bits_per_coordinate'] = payload_bits(model, method, args.hidden)
        row['compression_rate'] = {
          'overall': {'mean': 32 / row['bits_per_coordinate'], 'ci95': 0.0}
        }
      rows[method] = row
    summary[model] = rows
  return summary


def verdicts(summary) -> dict[str, str]:
  """One line per claim, from the paired differences against uncompressed.

  "No accuracy cost" is read with a non-inferiority margin of
  `MARGIN`: reproduced when the 95% interval of the paired difference lies
  above minus the margin and does not lie below zero; not reproduced when
  the interval lies below zero; a tie (inconclusive) otherwise.
  """

  def word(s):
    mean, half = s['mean'], s['ci95']
    if mean + half < 0:
      return 'not reproduced (significantly worse)'
    if mean - half >= -MARGIN:
      return f'reproduced (within {100 * MARGIN:g} pt)'
    return 'tie (inconclusive: interval reaches below the margin)'

  out = {}
  for method in ('natural', 'dithering'):
    parts = [
      f'{m}: {_lib.fmt(r[method]["minus_uncompressed"])} pts at '
      f'{r[method]["bits_per_coordinate"]:.2f} bits, '
      f'{word(r[method]["minus_uncompressed"])}'
      for m, r in summary.items()
      if method in r
    ]
    if parts:
      out[method] = f'{method}: ' + '; '.join(parts)
  parts = []
  for m, r in summary.items():
    if 'adacomp' not in r:
      continue
    a = r['adacomp']
    rates = ', '.join(
      f'{k} {v["mean"]:.0f}x' for k, v in a['compression_rate'].items()
    )
    parts.append(
      f'{m}: {_lib.fmt(a["minus_uncompressed"])} pts at {rates}, '
      f'{word(a["minus_uncompressed"])}'
    )
  if parts:
    out['adacomp'] = 'adacomp: ' + '; '.join(parts)
  return out


def plot(result) -> None:
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(result['summary']), figsize=(9, 3.5))
  axes = np.atleast_1d(axes)
  for ax, (model, rows) in zip(axes, result['summary'].items(), strict=True):
    for method, s in rows.items():
      ax.errorbar(
        [s['bits_per_coordinate']],
        [100 * s['accuracy']['mean']],
        [100 * s['accuracy']['ci95']],
        marker='o',
        capsize=3,
        label=method,
      )
    ax.set_xscale('log')
    ax.set_xlabel('bits per coordinate (log)')
    ax.set_ylabel('test accuracy (%)')
    ax.set_title(f'MNIST-1D {model}, {result["workers"]} workers')
    ax.legend(fontsize=8)
  _lib.save_plot(fig, _lib.plot_path(__file__, 'compression.png'))


if __name__ == '__main__':
  main()
