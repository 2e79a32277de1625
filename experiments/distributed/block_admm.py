"""Stochastic Block-ADMM (Khorram et al. 2021) against backpropagation on a
deep sigmoid MLP, and DeepFacto's NMF layer, on MNIST-1D.

  python -m experiments.distributed.block_admm

Claim (METHODS row 41): Block-ADMM "trains without end-to-end backprop";
the paper says it alleviates vanishing gradients, since backpropagation
runs only inside each block. Setting: an MLP of ``--depth`` sigmoid layers
of ``--width`` units and a linear head (Glorot init), where the gradient
reaching the first layers vanishes. Methods:

- ``sgd`` and ``adam``: end-to-end backpropagation;
- ``admm``: `optax_zoo.block_admm`, one block per ``--layers-per-block``
  layers, Adam inside every block, auxiliaries and duals per training
  example (``--rho``, ``--z-rate``, ``--w-steps``, ``--z-steps``).

Every method runs at its own best constant rate of the same grid
``--rates``, picked on tuning seed 0 by final test accuracy (all rates of a
method as one vmapped program); the reported seeds 1..n are vmapped too,
with the same initializations and batch orders for every method. Reported:
test accuracy and the end-to-end training loss of the network's forward
pass (for ADMM, not its auxiliary loss), and for ADMM the constraint
residuals. Steps are equal across methods; an ADMM step costs ``w_steps +
z_steps + 2`` block forward-backward passes, so its wall time is reported.

DeepFacto: an encoder block (two ReLU layers, backpropagation inside it),
an `nmf_block` of rank ``--rank`` (features ~ codes x dictionary, both
non-negative) and a linear classifier on the codes, trained by Block-ADMM;
its baseline is the same encoder and classifier with a ReLU bottleneck of
``--rank`` units trained by Adam. Reported: test accuracy; the codes'
sparsity (Hoyer's measure, 0 dense to 1 one-hot, and the fraction of exact
zeros); and class selectivity, per factor the share of its mean code that
its most active class holds, averaged over factors (0.1 when a factor
ignores the class, 1 when it belongs to one class), with the same numbers
for the baseline's bottleneck.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_zoo as oz
from experiments import _lib
from optax_zoo import training
from optax_zoo.training.loop import _batch_order

NAME = 'distributed_block_admm'
RATES = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)
METHODS = ('sgd', 'adam', 'admm')
CHUNKS = 10  # evaluations per run


def _dense(key, n_in, n_out):
  limit = np.sqrt(6.0 / (n_in + n_out))  # Glorot uniform
  w = jax.random.uniform(key, (n_in, n_out), jnp.float32, -limit, limit)
  return {'w': w, 'b': jnp.zeros(n_out)}


def mlp_params(seed, sizes):
  keys = jax.random.split(jax.random.key(seed), len(sizes) - 1)
  return [
    _dense(k, a, b) for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
  ]


def _layers(params, x, act, head):
  """``params`` applied in turn, ``act`` after all but a ``head``."""
  for i, p in enumerate(params):
    x = x @ p['w'] + p['b']
    if not (head and i == len(params) - 1):
      x = act(x)
  return x


def _ce(logits, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def _hyper(tx_fn):
  return optax.inject_hyperparams(tx_fn)(learning_rate=0.0)


def _injected(s) -> bool:
  return isinstance(getattr(s, 'hyperparams', None), dict)


def _set_rate(states, rates):
  """Each lane's rate into every injected ``learning_rate`` of ``states``."""
  found = []

  def put(s):
    if not _injected(s):
      return s
    found.append(True)
    lr = jnp.broadcast_to(rates, s.hyperparams['learning_rate'].shape)
    return s._replace(hyperparams={**s.hyperparams, 'learning_rate': lr})

  states = jax.tree.map(put, states, is_leaf=_injected)
  if not found:
    raise ValueError('no injected learning rate in the optimizer states')
  return states


def _stack(trees):
  return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def _orders(seeds, n, batch, steps):
  return np.stack([_batch_order(s, n, batch, steps) for s in seeds], axis=1)


def _backprop_lanes(data, method, seeds, rates, args, sizes, act, head=True):
  """End-to-end training of one lane per (seed, rate); curves per chunk."""
  tx = _hyper(optax.sgd if method == 'sgd' else optax.adam)
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  xt, yt = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
  params = _stack([mlp_params(s, sizes) for s in seeds])
  states = _set_rate(jax.vmap(tx.init)(params), jnp.asarray(rates))
  loss_fn = lambda p, xb, yb: jnp.mean(_ce(_layers(p, xb, act, head), yb))

  def one(p, s, ids):
    g = jax.grad(loss_fn)(p, x[ids], y[ids])
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  @jax.jit
  def run(carry, order):
    def body(carry, ids):
      return jax.vmap(one)(*carry, ids), None

    return jax.lax.scan(body, carry, order)[0]

  predict = lambda p, xb: _layers(p, xb, act, head)
  return _curves(
    run, (params, states), predict, lambda c: c[0], seeds, args, x, y, xt, yt
  )


def _curves(run, carry, predict, params_of, seeds, args, x, y, xt, yt):
  orders = _orders(seeds, len(y), args.batch, args.steps)
  evaluate = jax.jit(
    jax.vmap(
      lambda p: (
        jnp.mean(jnp.argmax(predict(p, xt), -1) == yt),
        jnp.mean(_ce(predict(p, x), y)),
      )
    )
  )
  curve, start = [], time.time()
  for chunk in np.array_split(np.arange(args.steps), min(CHUNKS, args.steps)):
    carry = run(carry, jnp.asarray(orders[chunk]))
    acc, loss = evaluate(params_of(carry))
    curve.append((int(chunk[-1]) + 1, np.asarray(acc), np.asarray(loss)))
  seconds = time.time() - start
  return carry, curve, seconds


def _rows(seeds, rates, curve, seconds, extra=None):
  rows = []
  for i, (s, lr) in enumerate(zip(seeds, rates, strict=True)):
    loss = [float(c[2][i]) for c in curve]
    row = {
      'seed': int(s),
      'lr': float(lr),
      'accuracy': float(curve[-1][1][i]),
      'train_loss': loss[-1] if np.isfinite(loss[-1]) else None,
      'curve_steps': [c[0] for c in curve],
      'curve_accuracy': [float(c[1][i]) for c in curve],
      'curve_train_loss': [x if np.isfinite(x) else None for x in loss],
      'seconds_all_lanes': seconds,
    }
    row.update({k: val[i] for k, val in (extra or {}).items()})
    rows.append(row)
  return rows


def _admm_blocks(depth, per_block, act):
  """Blocks of ``per_block`` layers; the last one also holds the head."""
  n_hidden_blocks = max(1, depth // per_block)
  cuts = np.array_split(np.arange(depth + 1), n_hidden_blocks)
  blocks = []
  for b in range(len(cuts)):
    head = b == len(cuts) - 1
    blocks.append(lambda p, a, head=head: _layers(p, a, act, head))
  return blocks, [list(c) for c in cuts]


def _split(params, cuts):
  return [[params[i] for i in c] for c in cuts]


def _admm_lanes(data, seeds, rates, args, blocks, cuts, sizes, init_fn=None):
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  xt, yt = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
  admm = oz.block_admm(
    blocks,
    loss_fn=_ce,
    rho=args.rho,
    inner=_hyper(optax.adam),
    z_learning_rate=args.z_rate,
    w_steps=args.w_steps,
    z_steps=args.z_steps,
  )
  init_fn = init_fn or (lambda s: _split(mlp_params(s, sizes), cuts))
  states = _stack([admm.init(init_fn(s), x) for s in seeds])
  states = states._replace(
    inner_states=_set_rate(states.inner_states, jnp.asarray(rates))
  )

  @jax.jit
  def run(state, order):
    def body(state, ids):
      step = lambda s, i: admm.step(s, x[i], y[i], i)
      state, metrics = jax.vmap(step)(state, ids)
      return state, metrics['residual']

    state, res = jax.lax.scan(body, state, order)
    return state, res[-1]

  residuals = []

  def tracked(state, order):
    state, res = run(state, order)
    residuals.append(np.asarray(res))
    return state

  state, curve, seconds = _curves(
    tracked,
    states,
    admm.predict,
    lambda s: s.params,
    seeds,
    args,
    x,
    y,
    xt,
    yt,
  )
  res = residuals[-1]
  extra = {'residual_rms': [r.tolist() for r in res]}
  return state, _rows(seeds, rates, curve, seconds, extra)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=2000)
  parser.add_argument('--seeds', type=int, default=5)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--depth', type=int, default=16)
  parser.add_argument('--width', type=int, default=64)
  parser.add_argument('--layers-per-block', type=int, default=1)
  parser.add_argument('--rates', type=float, nargs='+', default=RATES)
  parser.add_argument('--methods', nargs='+', default=list(METHODS))
  parser.add_argument('--rho', type=float, default=1.0)
  parser.add_argument('--z-rate', type=float, default=0.1)
  parser.add_argument('--w-steps', type=int, default=5)
  parser.add_argument('--z-steps', type=int, default=10)
  parser.add_argument('--rank', type=int, default=16, help='DeepFacto rank')
  parser.add_argument('--no-deepfacto', action='store_true')
  args = parser.parse_args(argv)
  data = training.mnist1d()
  seeds = list(range(1, args.seeds + 1))
  result = _lib.resume(
    NAME,
    steps=args.steps,
    seeds=seeds,
    batch=args.batch,
    depth=args.depth,
    width=args.width,
    layers_per_block=args.layers_per_block,
    rates=list(args.rates),
    rho=args.rho,
    z_rate=args.z_rate,
    w_steps=args.w_steps,
    z_steps=args.z_steps,
    rank=args.rank,
  )
  runs = result['runs']

  def run(k, fn):
    if k not in runs:
      start = time.time()
      runs[k] = fn()
      accs = [round(r['accuracy'], 3) for r in runs[k]]
      print(f'{k}: acc {accs} ({time.time() - start:.0f} s)', flush=True)
      _lib.save(NAME, result)
    return runs[k]

  sizes = [data.num_features, *[args.width] * args.depth, data.num_classes]
  blocks, cuts = _admm_blocks(args.depth, args.layers_per_block, jax.nn.sigmoid)

  def lanes(method, seeds, rates):
    if method == 'admm':
      return _admm_lanes(data, seeds, rates, args, blocks, cuts, sizes)[1]
    _, curve, seconds = _backprop_lanes(
      data, method, seeds, rates, args, sizes, jax.nn.sigmoid
    )
    return _rows(seeds, rates, curve, seconds)

  for method in args.methods:
    tune = run(
      f'{method} tune',
      lambda m=method: lanes(m, [0] * len(args.rates), args.rates),
    )
    best = max(tune, key=lambda r: r['accuracy'])['lr']
    run(method, lambda m=method, b=best: lanes(m, seeds, [b] * len(seeds)))
  if not args.no_deepfacto:
    deepfacto(data, args, seeds, result, run)
  result['summary'] = summarize(result, args)
  result['setting'] = (
    f'MNIST-1D, MLP 40-{args.width}x{args.depth} sigmoid-10 (Glorot), batch '
    f'{args.batch}, {args.steps} steps, constant rates from '
    f'{list(args.rates)} tuned per method on seed 0; Block-ADMM with '
    f'{len(blocks)} blocks of {args.layers_per_block} layer(s), Adam inside '
    f'blocks, rho {args.rho}, z-rate {args.z_rate}, {args.w_steps} W- and '
    f'{args.z_steps} z-steps per step; seeds {seeds}'
  )
  result['claims'] = verdicts(result['summary'])
  _lib.save(NAME, result)
  for claim in result['claims'].values():
    print(claim)
  plot(result)


def hoyer(codes):
  """Hoyer's sparsity per row, 0 (dense) to 1 (one-hot), averaged."""
  k = codes.shape[-1]
  l1 = np.sum(np.abs(codes), -1)
  l2 = np.sqrt(np.sum(codes**2, -1))
  ok = l2 > 0
  s = (np.sqrt(k) - l1[ok] / l2[ok]) / (np.sqrt(k) - 1)
  return float(np.mean(s)) if s.size else 0.0


def selectivity(codes, labels, num_classes=10):
  """Mean over factors of the share of the factor's mean code held by its
  most active class (1/num_classes: class-blind; 1: one class)."""
  means = np.stack([codes[labels == c].mean(0) for c in range(num_classes)])
  total = means.sum(0)
  used = total > 0
  return float(np.mean(means.max(0)[used] / total[used])) if used.any() else 0


def _code_stats(codes, labels):
  codes = np.asarray(codes)
  return {
    'hoyer_sparsity': hoyer(codes),
    'zero_fraction': float(np.mean(codes <= 0)),
    'class_selectivity': selectivity(codes, labels),
  }


def deepfacto(data, args, seeds, result, run):
  """The NMF layer inside a network, trained by Block-ADMM; its baseline a
  ReLU bottleneck of the same width trained by Adam."""
  hidden = args.width
  sizes = [data.num_features, hidden, hidden]
  encoder = lambda p, a: _layers(p, a, jax.nn.relu, head=False)
  classifier = lambda p, a: a @ p['w'] + p['b']
  blocks = [encoder, oz.nmf_block(code_steps=50), classifier]

  def init(s):
    enc = mlp_params(s, sizes)
    key = jax.random.fold_in(jax.random.key(s), 1)
    d = jax.random.uniform(key, (args.rank, hidden)) / np.sqrt(args.rank)
    return [enc, d, _dense(jax.random.fold_in(key, 2), args.rank, 10)]

  yt = np.asarray(data.y_test)
  holder = {}

  def admm_lanes(seeds, rates):
    state, rows = _admm_lanes(
      data, seeds, rates, args, blocks, None, None, init_fn=init
    )
    codes = jax.vmap(
      lambda p: blocks[1].forward(p[1], encoder(p[0], data.x_test))
    )(state.params)
    for i, row in enumerate(rows):
      row.update(_code_stats(codes[i], yt))
      row['min_factor'] = float(jnp.min(state.params[1][i]))
      rec = state.z[0][i] - state.z[1][i] @ state.params[1][i]
      row['train_reconstruction_rel'] = float(
        jnp.linalg.norm(rec) / jnp.linalg.norm(state.z[0][i])
      )
    holder['admm'] = (state, codes)
    return rows

  bottleneck = [data.num_features, hidden, hidden, args.rank, 10]

  def backprop_lanes(seeds, rates):
    carry, curve, seconds = _backprop_lanes(
      data, 'adam', seeds, rates, args, bottleneck, jax.nn.relu
    )
    rows = _rows(seeds, rates, curve, seconds)
    codes = jax.vmap(
      lambda p: _layers(p[:3], jnp.asarray(data.x_test), jax.nn.relu, False)
    )(carry[0])
    for i, row in enumerate(rows):
      row.update(_code_stats(codes[i], yt))
    return rows

  for name, fn in (('deepfacto', admm_lanes), ('bottleneck', backprop_lanes)):
    tune = run(
      f'{name} tune', lambda fn=fn: fn([0] * len(args.rates), args.rates)
    )
    best = max(tune, key=lambda r: r['accuracy'])['lr']
    run(name, lambda fn=fn, b=best: fn(seeds, [b] * len(seeds)))
  if 'admm' not in holder:  # resumed: refit seed 1 for the plot
    best = result['runs']['deepfacto'][0]['lr']
    admm_lanes(seeds[:1], [best])
  state, codes = holder['admm']
  d = np.asarray(state.params[1][0])
  class_means = np.stack(
    [np.asarray(codes[0])[yt == c].mean(0) for c in range(10)]
  )
  result['deepfacto_factors'] = {
    'dictionary': d.round(4).tolist(),
    'class_mean_codes': class_means.round(4).tolist(),
  }


def summarize(result, args) -> dict:
  runs = result['runs']
  out = {}
  for name in (*args.methods, 'deepfacto', 'bottleneck'):
    if name not in runs:
      continue
    rows = runs[name]
    s = {
      'lr': rows[0]['lr'],
      'accuracy': _lib.summary([r['accuracy'] for r in rows]),
      'train_loss': _lib.summary(
        [
          r['train_loss'] if r['train_loss'] is not None else np.inf
          for r in rows
        ]
      ),
      'seconds_per_step': rows[0]['seconds_all_lanes'] / args.steps,
    }
    for k in (
      'hoyer_sparsity',
      'zero_fraction',
      'class_selectivity',
      'train_reconstruction_rel',
      'min_factor',
    ):
      if k in rows[0]:
        s[k] = _lib.summary([r[k] for r in rows])
    if 'residual_rms' in rows[0]:
      s['max_residual_rms'] = float(max(max(r['residual_rms']) for r in rows))
    out[name] = s
  if 'admm' in runs:
    acc = [r['accuracy'] for r in runs['admm']]
    for base in ('sgd', 'adam'):
      if base in runs:
        b = [r['accuracy'] for r in runs[base]]
        out['admm'][f'minus_{base}'] = _lib.paired(acc, b)
        out['admm'][f'verdict_vs_{base}'] = _lib.verdict(acc, b)
  if 'deepfacto' in runs and 'bottleneck' in runs:
    acc = [r['accuracy'] for r in runs['deepfacto']]
    b = [r['accuracy'] for r in runs['bottleneck']]
    out['deepfacto']['minus_bottleneck'] = _lib.paired(acc, b)
  return out


def verdicts(summary) -> dict[str, str]:
  out = {}
  if 'admm' in summary:
    a = summary['admm']
    parts = [f'admm {_lib.fmt(a["accuracy"])}%']
    stalled = []
    for base in ('sgd', 'adam'):
      if base in summary:
        parts.append(
          f'{base} {_lib.fmt(summary[base]["accuracy"])}% (admm - {base} '
          f'{_lib.fmt(a[f"minus_{base}"])} pt, {a[f"verdict_vs_{base}"]})'
        )
        stalled.append(summary[base]['accuracy']['mean'] < 0.2)
    trains = a['accuracy']['mean'] - a['accuracy']['ci95'] > 0.2
    word = (
      'reproduced: admm trains where backprop stalls'
      if trains and all(stalled)
      else 'admm trains, backprop does not stall'
      if trains
      else 'not reproduced: admm does not train'
    )
    out['vanishing'] = f'{word}; ' + '; '.join(parts)
  if 'deepfacto' in summary:
    d, b = summary['deepfacto'], summary.get('bottleneck')
    line = (
      f'deepfacto acc {_lib.fmt(d["accuracy"])}%, hoyer '
      f'{_lib.fmt(d["hoyer_sparsity"], 1, 2)}, selectivity '
      f'{_lib.fmt(d["class_selectivity"], 1, 2)}'
    )
    if b:
      line += (
        f'; relu bottleneck (adam) acc {_lib.fmt(b["accuracy"])}%, hoyer '
        f'{_lib.fmt(b["hoyer_sparsity"], 1, 2)}, selectivity '
        f'{_lib.fmt(b["class_selectivity"], 1, 2)}; deepfacto - bottleneck '
        f'{_lib.fmt(d["minus_bottleneck"])} pt'
      )
    out['deepfacto'] = line
  return out


def plot(result) -> None:
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 4, figsize=(15, 3.5))
  runs = result['runs']
  for name in ('sgd', 'adam', 'admm', 'deepfacto', 'bottleneck'):
    if name not in runs:
      continue
    rows = runs[name]
    steps = rows[0]['curve_steps']
    acc = np.array([r['curve_accuracy'] for r in rows]) * 100
    loss = np.array(
      [
        [np.nan if v is None else v for v in r['curve_train_loss']]
        for r in rows
      ]
    )
    style = '--' if name in ('deepfacto', 'bottleneck') else '-'
    axes[0].plot(steps, acc.mean(0), style, label=f'{name} ({rows[0]["lr"]:g})')
    axes[1].plot(steps, loss.mean(0), style, label=name)
  axes[0].set(
    xlabel='step',
    ylabel='test accuracy (%)',
    title=f'MNIST-1D, {result["depth"]}-layer sigmoid MLP',
  )
  axes[1].set(xlabel='step', ylabel='train loss (forward pass)', yscale='log')
  axes[0].legend(fontsize=7)
  factors = result.get('deepfacto_factors')
  if factors:
    axes[2].imshow(
      np.array(factors['dictionary']), aspect='auto', cmap='viridis'
    )
    axes[2].set(
      title='DeepFacto dictionary D >= 0', xlabel='feature', ylabel='factor'
    )
    axes[3].imshow(
      np.array(factors['class_mean_codes']), aspect='auto', cmap='viridis'
    )
    axes[3].set(
      title='mean code per class (test)', xlabel='factor', ylabel='class'
    )
  _lib.save_plot(fig, _lib.plot_path(__file__, 'block_admm.png'))


if __name__ == '__main__':
  main()
