"""FedAvg with local continual training against plain FedAvg on non-iid
MNIST-1D clients (Yao & Sun 2020, claim: the importance-weighted penalty
towards the global model gives a better global model, from the first
rounds on).

  python -m experiments.distributed.federated

``--clients`` clients, simulated by ``jax.vmap(..., axis_name='c')`` on one
device, hold non-iid shards of the MNIST-1D training set: `dirichlet_split`
with concentration ``--alpha`` (per seed). Before the split the server
keeps ``--proxy`` examples per class as its proxy set, which no client
sees. Each round `fedavg` draws ``--fraction`` of the clients; each drawn
client takes ``--local-steps`` SGD steps on batches of ``--batch``
examples drawn uniformly with replacement from its shard, and the global
model becomes the average of theirs, weighted by shard size. Model:
`training.MLP` (40-``--hidden``-``--hidden``-10). Methods:

- ``fedavg``: plain FedAvg (``continual_weight=0``);
- ``continual``: FedAvg with local continual training, the penalty
  lambda/2 sum_j F_j (theta_j - global_j)^2 with F the diagonal empirical
  Fisher of the global model on the server's proxy set
  (`fisher_importance`), recomputed every round;
- ``fedprox``: the same penalty with F = 1 (the proximal term of FedProx,
  Li et al. 2020), which separates the Fisher weighting from the pull
  itself; its weights ``--prox-weights`` are on their own scale (no
  Fisher factor of ~1e-3).

Every method runs at its own rate of ``--rates``, the penalized ones at
their own (rate, lambda) of ``--rates`` x ``--weights`` (``--prox-weights``
for fedprox), picked on tuning
seed 0 by the mean global test accuracy over all rounds (the area under
the accuracy curve: early and late rounds count alike). The reported seeds
1..n share splits, proxy sets, initializations, client draws and batches
across methods (paired). Measured: the global model's test accuracy after
every round. Reported: the paired gap continual - fedavg over the first
``--early`` rounds and over the last ``--early`` rounds (means over those
rounds, then 95% t-intervals over seeds).

The round's average is a ``lax.cond`` on the step count. The clients'
states are vmapped, which would batch the count and turn the cond into a
select that runs the average and the Fisher every step; the count is the
same on every client and lane, so it is kept unbatched (``in_axes=None``).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import optax_zoo as oz
from experiments import _lib
from optax_zoo import training

NAME = 'distributed_federated'
AXIS = 'c'
RATES = (0.1, 0.3, 1.0)
WEIGHTS = (1.0, 3.0, 10.0, 20.0)
# FedProx's pull is not scaled by a Fisher (median ~3e-3 here): its own grid.
PROX_WEIGHTS = (0.01, 0.03, 0.1, 0.3)
METHODS = ('fedavg', 'continual', 'fedprox')
PENALIZED = ('continual', 'fedprox')


def split(data, seed: int, args):
  """The server's proxy indices and the clients' shards of seed ``seed``."""
  rng = np.random.default_rng(seed)
  y = data.y_train
  proxy = np.concatenate(
    [
      rng.choice(np.flatnonzero(y == c), args.proxy, replace=False)
      for c in range(data.num_classes)
    ]
  )
  rest = np.setdiff1d(np.arange(len(y)), proxy)
  shards = oz.dirichlet_split(y[rest], args.clients, args.alpha, seed)
  return np.sort(proxy), [rest[s] for s in shards]


def client_batches(shards, seed: int, args) -> np.ndarray:
  """(rounds, local_steps, clients, batch) example indices."""
  rng = np.random.default_rng(10_000 + seed)
  shape = (args.rounds, args.local_steps, args.batch)
  return np.stack([rng.choice(s, size=shape) for s in shards], axis=2)


def make_trainer(graphdef, method, args, x, y, x_test, y_test):
  """``run(params, key, lr, weight, batches, sizes, proxy)`` over lanes.

  Lanes lead every argument: ``params`` is one model per lane (every
  client starts from it), ``batches`` (lanes, rounds, local steps, clients,
  batch), ``sizes`` (lanes, clients) the shard sizes, ``proxy`` (lanes,
  examples) the server's proxy indices. Returns the global model's test
  accuracy after every round, (lanes, rounds).
  """
  k = args.clients

  def loss_fn(params, xb, yb):
    return training.cross_entropy_loss(nnx.merge(graphdef, params)(xb), yb)

  def accuracy(params):
    logits = nnx.merge(graphdef, params)(x_test)
    return jnp.mean(jnp.argmax(logits, -1) == y_test)

  def lane(params, key, lr, weight, batches, sizes, proxy):
    importance = None
    if method == 'continual':
      proxy_x, proxy_y = x[proxy], y[proxy]
      importance = lambda p: oz.fisher_importance(
        lambda q, b: loss_fn(q, *b), p, (proxy_x, proxy_y)
      )
    tx = oz.fedavg(
      optax.sgd(lr),
      AXIS,
      local_steps=args.local_steps,
      client_fraction=args.fraction,
      continual_weight=weight if method in PENALIZED else 0.0,
      importance_fn=importance,
      key=key,
    )
    params = jax.tree.map(lambda p: jnp.broadcast_to(p, (k, *p.shape)), params)
    state = jax.vmap(tx.init)(params)
    axes = jax.tree.map(lambda _: 0, state)._replace(count=None)

    def client_step(params, state, idx, size):
      grads = jax.grad(loss_fn)(params, x[idx], y[idx])
      updates, state = tx.update(grads, state, params, client_weight=size)
      return optax.apply_updates(params, updates), state

    step = jax.vmap(
      client_step,
      in_axes=(0, axes, 0, 0),
      out_axes=(0, axes),
      axis_name=AXIS,
    )

    def one_round(carry, idx):
      def local(carry, idx):
        params, state = carry
        return step(params, state, idx, sizes), None

      (params, state), _ = jax.lax.scan(local, carry, idx)
      # After the round's last step every client holds the global model.
      return (params, state), accuracy(jax.tree.map(lambda p: p[0], params))

    state = state._replace(count=jnp.zeros([], jnp.int32))
    _, acc = jax.lax.scan(one_round, (params, state), batches)
    return acc

  return jax.jit(jax.vmap(lane))


def train_lanes(data, method, seeds, rates, weights, args) -> list[dict]:
  """One lane per (seed, rate, weight) of ``method``, in one program."""
  start = time.time()
  models = [
    training.MLP(40, (args.hidden, args.hidden), rngs=nnx.Rngs(s))
    for s in seeds
  ]
  graphdef = nnx.graphdef(models[0])
  params = jax.tree.map(
    lambda *a: jnp.stack(a), *[nnx.state(m, nnx.Param) for m in models]
  )
  proxies, batches, sizes = [], [], []
  for s in seeds:
    proxy, shards = split(data, s, args)
    proxies.append(proxy)
    batches.append(client_batches(shards, s, args))
    sizes.append([len(sh) for sh in shards])
  run = make_trainer(
    graphdef,
    method,
    args,
    *map(jnp.asarray, (data.x_train, data.y_train, data.x_test, data.y_test)),
  )
  acc = np.asarray(
    run(
      params,
      jax.vmap(jax.random.key)(jnp.asarray(seeds)),
      jnp.asarray(rates, jnp.float32),
      jnp.asarray(weights, jnp.float32),
      jnp.asarray(np.stack(batches), jnp.int32),
      jnp.asarray(sizes, jnp.float32),
      jnp.asarray(np.stack(proxies), jnp.int32),
    ),
    np.float64,
  )
  rows = [
    {
      'seed': int(s),
      'lr': float(lr),
      'weight': float(w) if method in PENALIZED else 0.0,
      'auc': float(np.mean(a)),
      'accuracy': [float(v) for v in a],
    }
    for s, lr, w, a in zip(seeds, rates, weights, acc, strict=True)
  ]
  print(
    f'{method} seeds {sorted(set(seeds))} {len(rows)} lanes: final acc '
    f'{[round(r["accuracy"][-1], 3) for r in rows]} '
    f'({time.time() - start:.0f} s)',
    flush=True,
  )
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rounds', type=int, default=100)
  parser.add_argument('--local-steps', type=int, default=10)
  parser.add_argument('--clients', type=int, default=20)
  parser.add_argument('--fraction', type=float, default=0.5)
  parser.add_argument('--alpha', type=float, default=0.3)
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--proxy', type=int, default=10, help='per class')
  parser.add_argument('--hidden', type=int, default=100, help='MLP width')
  parser.add_argument('--seeds', type=int, default=5)
  parser.add_argument('--early', type=int, default=5, help='rounds')
  parser.add_argument('--rates', type=float, nargs='+', default=RATES)
  parser.add_argument('--weights', type=float, nargs='+', default=WEIGHTS)
  parser.add_argument(
    '--prox-weights', type=float, nargs='+', default=PROX_WEIGHTS
  )
  parser.add_argument('--methods', nargs='+', default=list(METHODS))
  args = parser.parse_args(argv)
  if args.methods[0] != 'fedavg':
    parser.error('--methods must start with the fedavg baseline')
  if args.early > args.rounds:
    parser.error('--early must be at most --rounds')
  data = training.mnist1d()
  seeds = list(range(1, args.seeds + 1))
  config = {
    k: (list(v) if isinstance(v, (list, tuple)) else v)
    for k, v in vars(args).items()
    if k not in ('methods', 'early')
  }
  result = _lib.resume(NAME, **config)
  runs = result['runs']

  def run(key, fn):
    if key not in runs:
      runs[key] = fn()
      _lib.save(NAME, result)
    return runs[key]

  weights = {'continual': args.weights, 'fedprox': args.prox_weights}
  for method in args.methods:
    grid = [(lr, w) for lr in args.rates for w in weights.get(method, [0.0])]
    tune = run(
      f'{method} tune',
      lambda me=method, g=grid: train_lanes(
        data, me, [0] * len(g), *map(list, zip(*g, strict=True)), args
      ),
    )
    best = max(tune, key=lambda r: r['auc'])
    run(
      method,
      lambda me=method, b=best: train_lanes(
        data,
        me,
        seeds,
        [b['lr']] * len(seeds),
        [b['weight']] * len(seeds),
        args,
      ),
    )
  result['summary'] = summarize(result, args)
  result['setting'] = (
    f'MNIST-1D, {args.clients} clients simulated with jax.vmap, Dirichlet '
    f'label split alpha={args.alpha} per seed, {args.proxy} proxy examples '
    f'per class at the server, {round(args.fraction * args.clients)} '
    f'clients per round, {args.local_steps} local SGD steps of batch '
    f'{args.batch}, {args.rounds} rounds; MLP 40-{args.hidden}-'
    f'{args.hidden}-10; rates {list(args.rates)}, penalty weights '
    f'{list(args.weights)} (fedprox {list(args.prox_weights)}), tuned per '
    'method on seed 0 by mean accuracy '
    f'over rounds; seeds {seeds}'
  )
  result['claims'] = verdicts(result['summary'], args)
  _lib.save(NAME, result)
  for method, s in result['summary']['methods'].items():
    print(
      f'{method:10s} lr {s["lr"]:g} weight {s["weight"]:g}: first '
      f'{args.early} rounds {_lib.fmt(s["early"])}, last {args.early} '
      f'{_lib.fmt(s["final"])}'
    )
  for claim in result['claims'].values():
    print(claim)
  plot(result, args)


def summarize(result, args) -> dict:
  e = args.early
  curves = {
    m: np.array([r['accuracy'] for r in result['runs'][m]])
    for m in args.methods
  }
  base = curves['fedavg']
  methods, gaps = {}, {}
  for m, c in curves.items():
    rows = result['runs'][m]
    methods[m] = {
      'lr': rows[0]['lr'],
      'weight': rows[0]['weight'],
      'early': _lib.summary(c[:, :e].mean(1)),
      'final': _lib.summary(c[:, -e:].mean(1)),
      'auc': _lib.summary(c.mean(1)),
      'per_round': [_lib.summary(c[:, r]) for r in range(c.shape[1])],
    }
    if m != 'fedavg':
      gaps[m] = {
        'early': _lib.paired(c[:, :e].mean(1), base[:, :e].mean(1)),
        'final': _lib.paired(c[:, -e:].mean(1), base[:, -e:].mean(1)),
        'auc': _lib.paired(c.mean(1), base.mean(1)),
        'round_1': _lib.paired(c[:, 0], base[:, 0]),
        'per_round': [
          _lib.paired(c[:, r], base[:, r]) for r in range(c.shape[1])
        ],
        'verdict_early': _lib.verdict(c[:, :e].mean(1), base[:, :e].mean(1)),
        'verdict_final': _lib.verdict(c[:, -e:].mean(1), base[:, -e:].mean(1)),
      }
  return {'methods': methods, 'minus_fedavg': gaps}


def verdicts(summary, args) -> dict[str, str]:
  """'better' needs the 95% interval of the paired gap above 0."""
  out = {}
  for m, g in summary['minus_fedavg'].items():
    out[m] = (
      f'{m} - fedavg, global test accuracy: first {args.early} rounds '
      f'{_lib.fmt(g["early"])} pts ({g["verdict_early"]}), last '
      f'{args.early} rounds {_lib.fmt(g["final"])} pts '
      f'({g["verdict_final"]})'
    )
  return out


def plot(result, args) -> None:
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
  rounds = np.arange(1, args.rounds + 1)
  for m, s in result['summary']['methods'].items():
    mean = np.array([r['mean'] for r in s['per_round']])
    ax[0].plot(
      rounds, 100 * mean, label=f'{m} (lr {s["lr"]:g}, λ {s["weight"]:g})'
    )
  for m, g in result['summary']['minus_fedavg'].items():
    mean = 100 * np.array([r['mean'] for r in g['per_round']])
    half = 100 * np.array([r['ci95'] for r in g['per_round']])
    ax[1].plot(rounds, mean, label=m)
    ax[1].fill_between(rounds, mean - half, mean + half, alpha=0.2)
  ax[0].set(
    xlabel='round',
    ylabel='global test accuracy (%)',
    title=f'MNIST-1D, {args.clients} non-iid clients (α={args.alpha})',
  )
  ax[1].axhline(0, color='k', lw=0.8)
  ax[1].set(xlabel='round', ylabel='gap to FedAvg (pts, 95% CI)')
  ax[0].legend(fontsize=8)
  ax[1].legend(fontsize=8)
  _lib.save_plot(fig, _lib.plot_path(__file__, 'federated.png'))


if __name__ == '__main__':
  main()
