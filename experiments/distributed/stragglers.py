"""Non-blocking SGD against synchronous SGD and D-PSGD under stragglers on
MNIST-1D (He & Dube 2022, claim: up to 2x less time to the same training
loss in a heterogeneous environment).

  python -m experiments.distributed.stragglers

Data-parallel training with ``--workers`` workers simulated by
``jax.vmap(..., axis_name='w')`` on one device. Every step each worker
holds ``--micro`` micro-batches of ``--micro-batch`` examples (its shard of
a shuffled-epoch global batch) and computes their gradients; the training
is real, the time is simulated. A seeded `DelayModel` draws every
micro-batch's compute time: worker ``i`` needs on average ``--mean-time``
x (1 + ``--spread`` i / (n - 1)) seconds (heterogeneous machines), is a
straggler for a whole step with probability ``--straggler-prob`` (every
micro-batch ``--slowdown`` times slower) and each micro-batch carries a
gamma noise of coefficient of variation ``--jitter``. Messages cost the
alpha-beta model (`alpha_beta_time`) of a datacenter network (5 us, 10
GB/s). Computation and communication do not overlap. Methods, all SGD with
momentum 0.9:

- ``nonblocking``: `nonblocking_sgd` with budget tau = ``--budget`` x the
  median worker's mean time for all its micro-batches; it averages the
  micro-batches finished within tau (`finished_microbatches`) with one ring
  all-reduce; step time `simulated_step_time` with the budget:
  min(tau, slowest worker) + T_ring.
- ``sync``: synchronous SGD, every micro-batch of every worker (the same
  transform with everything finished: gradient accumulation and one
  all-reduce); step time max_i sum_j t_ij + T_ring.
- ``dpsgd``: D-PSGD (`gossip` on a ring, the parameters mixed with both
  neighbours), each worker on all its own micro-batches. Its clock has no
  global barrier: worker i finishes step k when it and its ring
  neighbours have computed step k and their messages have arrived,
  F_i(k) = max_{j in {i-1, i, i+1}} (F_j(k-1) + C_j(k)) + T_gossip, with
  C_j(k) its compute time of the step and T_gossip two messages of the
  parameters. Step k is reached at max_i F_i(k), when every worker has it;
  its loss is the average model's (`worker_mean`).

The delays of a step are the same draw for every method (paired), as are
the initializations and batch orders. Measured: the full training set's
loss of the (average) model every ``--eval-every`` steps, and the simulated
time to ``--target`` (linear interpolation between evaluations). Each
method runs at its own rate of ``--rates`` with the shortest time to the
target on tuning seed 0 (all lanes of a method are one vmapped program);
the reported seeds are 1..n. Reported: per-seed time ratios sync /
nonblocking and dpsgd / nonblocking, mean and 95% t-interval.
"""

from __future__ import annotations

import argparse
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import optax_zoo as oz
from experiments import _lib
from experiments.distributed.communication import NETWORKS
from optax_zoo import training

# The training loop's shuffled-epoch batch order, cut here into shards.
from optax_zoo.training.loop import _batch_order

NAME = 'distributed_stragglers'
AXIS = 'w'
MOMENTUM = 0.9
RATES = (0.1, 0.3, 1.0)
METHODS = ('nonblocking', 'sync', 'dpsgd')
NETWORK = NETWORKS['datacenter']


def delay_model(args) -> oz.DelayModel:
  spread = np.linspace(0.0, args.spread, args.workers)
  return oz.DelayModel(
    tuple(args.mean_time * (1.0 + spread)),
    straggler_prob=args.straggler_prob,
    slowdown=args.slowdown,
    jitter=args.jitter,
  )


def budget(args) -> float:
  """tau: ``--budget`` x the median worker's mean time for its batch."""
  means = np.asarray(delay_model(args).mean_times)
  return float(args.budget * args.micro * np.median(means))


def draw_times(seeds, args) -> np.ndarray:
  """(seeds, steps, workers, micro) compute times; seed ``s`` draws its
  steps from the key ``10_000 + s``."""
  model = delay_model(args)

  def one(seed):
    keys = jax.random.split(jax.random.key(10_000 + seed), args.steps)
    return jax.vmap(lambda k: model.sample(k, args.workers, args.micro))(keys)

  return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(seeds)), np.float64)


def step_times(method: str, times: np.ndarray, args, num_params: int):
  """Simulated seconds of each step, (seeds, steps), and the finished
  micro-batch counts, (seeds, steps, workers), from ``draw_times``."""
  message = 4.0 * num_params
  w, m = args.workers, args.micro
  if method == 'dpsgd':
    topology = oz.ring(w)
    waits = topology.mixing_matrix() > 0  # self and the neighbours
    comm = oz.alpha_beta_time(
      'gossip',
      num_workers=w,
      message_bytes=message,
      degree=topology.messages_per_step,
      **NETWORK,
    )
    done = np.zeros((len(times), w))
    reached = []
    for c in np.moveaxis(times.sum(-1), 1, 0):
      ready = (done + c)[:, None, :]
      done = np.max(np.where(waits, ready, -np.inf), axis=2) + comm
      reached.append(done.max(1))
    clock = np.stack(reached, axis=1)
    return np.diff(clock, prepend=0.0), np.full(times.shape[:3], m)
  tau = budget(args) if method == 'nonblocking' else None

  @jax.jit
  def simulate(times):
    # The all-reduce carries the gradient and one int32 count.
    step = lambda t: oz.simulated_step_time(
      t, tau, message_bytes=message + 4, **NETWORK
    )
    if tau is None:
      done = jnp.full(times.shape[:3], m, jnp.int32)
    else:
      done = oz.finished_microbatches(times, tau)
    return jax.vmap(jax.vmap(step))(times), done

  seconds, done = simulate(jnp.asarray(times, jnp.float32))
  return np.asarray(seconds, np.float64), np.asarray(done)


@functools.lru_cache
def make_trainer(graphdef, kind: str, workers: int):
  """``run(params, opt_state, batches, finished, lr, x, y)`` over lanes.

  ``kind`` is ``'dpsgd'`` or ``'allreduce'`` (non-blocking and synchronous
  SGD are one program: synchronous SGD finishes every micro-batch), so
  their runs share one compilation. Lanes lead every argument but the
  training set ``x, y``; ``params`` and ``opt_state`` then have a worker
  axis, ``batches`` is (lanes, evals, every, workers, micro, micro-batch)
  and ``finished`` (lanes, evals, every, workers). Returns the training-set
  loss of the average model at the start and after each block of
  ``every`` steps.
  """
  tx = make_tx(kind, workers)

  def loss_fn(params, xb, yb):
    return training.cross_entropy_loss(nnx.merge(graphdef, params)(xb), yb)

  def lane(params, opt_state, batches, finished, lr, x, y):
    def worker_step(params, opt_state, idx, finished):
      grads = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0, 0))(
        params, x[idx], y[idx]
      )
      if kind == 'dpsgd':
        grads = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
        updates, opt_state = tx(lr).update(grads, opt_state, params)
      else:
        updates, opt_state = tx(lr).update(
          grads, opt_state, params, num_finished=finished
        )
      return optax.apply_updates(params, updates), opt_state

    def train_loss(params):
      average = jax.tree.map(lambda p: jnp.mean(p, axis=0), params)
      return loss_fn(average, x, y)

    def block(carry, inputs):
      def step(carry, inputs):
        carry = jax.vmap(worker_step, axis_name=AXIS)(*carry, *inputs)
        return carry, None

      carry, _ = jax.lax.scan(step, carry, inputs)
      return carry, train_loss(carry[0])

    first = train_loss(params)
    _, losses = jax.lax.scan(block, (params, opt_state), (batches, finished))
    return jnp.concatenate([first[None], losses])

  return jax.jit(jax.vmap(lane, in_axes=(0, 0, 0, 0, 0, None, None)))


KIND = {'nonblocking': 'allreduce', 'sync': 'allreduce', 'dpsgd': 'dpsgd'}


def make_tx(kind: str, workers: int):
  """``lr -> transform``: the rate is a per-lane traced value."""
  if kind == 'dpsgd':
    return lambda lr: oz.gossip(
      oz.ring(workers), AXIS, inner=optax.sgd(lr, momentum=MOMENTUM)
    )
  return lambda lr: oz.nonblocking_sgd(
    AXIS, inner=optax.sgd(lr, momentum=MOMENTUM)
  )


def time_to(losses, clock, target: float) -> float | None:
  """Simulated time at which ``losses`` first reach ``target``, linearly
  interpolated between evaluations; None if they never do."""
  if losses[0] <= target:
    return 0.0
  for k in range(1, len(losses)):
    if losses[k] <= target:
      lo, hi = losses[k - 1], losses[k]
      frac = (lo - target) / (lo - hi)
      return float(clock[k - 1] + frac * (clock[k] - clock[k - 1]))
  return None


def train_method(data, method, inits, times, seeds, rates, args):
  """Trains one lane per (seed, rate) pair of ``method`` in one program.

  ``inits``: (graphdef, {seed: parameters}); ``times``: {seed: its
  `draw_times`}, shared by every method.
  """
  start = time.time()
  w, m, b, every = args.workers, args.micro, args.micro_batch, args.eval_every
  evals = args.steps // every
  graphdef, params = inits
  first = params[seeds[0]]
  num_params = sum(p.size for p in jax.tree.leaves(first))
  params = jax.tree.map(
    lambda *a: jnp.broadcast_to(
      jnp.stack(a)[:, None], (len(a), w, *a[0].shape)
    ),
    *[params[s] for s in seeds],
  )
  states = jax.vmap(jax.vmap(make_tx(KIND[method], w)(0.0).init))(params)
  seconds, finished = step_times(
    method, np.stack([times[s] for s in seeds]), args, num_params
  )
  finished = finished[:, : evals * every].reshape(-1, evals, every, w)
  reached = np.cumsum(seconds, axis=1)[:, every - 1 :: every][:, :evals]
  clocks = np.concatenate([np.zeros((len(seeds), 1)), reached], axis=1)
  orders = np.stack(
    [
      _batch_order(s, len(data.y_train), w * m * b, evals * every).reshape(
        evals, every, w, m, b
      )
      for s in seeds
    ]
  )
  run = make_trainer(graphdef, KIND[method], w)
  losses = np.asarray(
    run(
      params,
      states,
      jnp.asarray(orders),
      jnp.asarray(finished, jnp.int32),
      jnp.asarray(rates, jnp.float32),
      jnp.asarray(data.x_train),
      jnp.asarray(data.y_train),
    ),
    np.float64,
  )
  rows = []
  for i, (s, lr) in enumerate(zip(seeds, rates, strict=True)):
    clock, curve = clocks[i], losses[i]
    rows.append(
      {
        'seed': int(s),
        'lr': float(lr),
        'time_to_target': time_to(curve, clock, args.target),
        'steps_to_target': time_to(
          curve, np.arange(evals + 1) * every, args.target
        ),
        'finite': bool(np.all(np.isfinite(curve))),
        'final_train_loss': (
          float(curve[-1]) if np.isfinite(curve[-1]) else None
        ),
        'mean_step_time': float(clock[-1] / (evals * every)),
        'finished_fraction': float(np.mean(finished[i]) / m),
        'clock': [float(c) for c in clock],
        'train_loss': [float(v) if np.isfinite(v) else None for v in curve],
      }
    )
  print(
    f'{method} {len(seeds)} lanes: time to {args.target} '
    f'{[r["time_to_target"] and round(r["time_to_target"], 2) for r in rows]}'
    f' ({time.time() - start:.0f} s)',
    flush=True,
  )
  return rows


def best_rate(rows) -> float:
  """The rate of the tuning seed's lane with the shortest time to target
  (ties and misses broken by the lowest final loss)."""
  key = lambda r: (
    r['time_to_target'] is None,
    r['time_to_target'] or 0.0,
    r['final_train_loss'] if r['final_train_loss'] is not None else math.inf,
  )
  return min((r for r in rows if r['seed'] == 0), key=key)['lr']


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=600)
  parser.add_argument('--seeds', type=int, default=5)
  parser.add_argument('--workers', type=int, default=8)
  parser.add_argument('--micro', type=int, default=4, help='per worker')
  parser.add_argument('--micro-batch', type=int, default=8, help='examples')
  parser.add_argument('--hidden', type=int, default=100, help='MLP width')
  parser.add_argument('--rates', type=float, nargs='+', default=RATES)
  parser.add_argument('--target', type=float, default=0.5)
  parser.add_argument('--eval-every', type=int, default=20)
  parser.add_argument('--mean-time', type=float, default=0.005)
  parser.add_argument('--spread', type=float, default=1.0)
  parser.add_argument('--straggler-prob', type=float, default=0.1)
  parser.add_argument('--slowdown', type=float, default=4.0)
  parser.add_argument('--jitter', type=float, default=0.2)
  parser.add_argument('--budget', type=float, default=1.0)
  parser.add_argument('--methods', nargs='+', default=list(METHODS))
  args = parser.parse_args(argv)
  if 'nonblocking' not in args.methods:
    parser.error('--methods must include nonblocking')
  if args.steps < args.eval_every:
    parser.error('--steps must be at least --eval-every')
  data = training.mnist1d()
  seeds = list(range(1, args.seeds + 1))
  config = {
    k: (list(v) if isinstance(v, (list, tuple)) else v)
    for k, v in vars(args).items()
    if k != 'methods'
  }
  result = _lib.resume(NAME, **config, momentum=MOMENTUM)
  runs = result['runs']
  lanes = [(s, lr) for s in [0, *seeds] for lr in args.rates]
  if any(method not in runs for method in args.methods):
    models = {
      s: training.MLP(40, (args.hidden, args.hidden), rngs=nnx.Rngs(s))
      for s in [0, *seeds]
    }
    inits = (
      nnx.graphdef(models[0]),
      {s: nnx.state(mdl, nnx.Param) for s, mdl in models.items()},
    )
    times = dict(zip(models, draw_times(list(models), args), strict=True))
  for method in args.methods:
    if method not in runs:
      runs[method] = train_method(
        data,
        method,
        inits,
        times,
        *map(list, zip(*lanes, strict=True)),
        args,
      )
      _lib.save(NAME, result)
  result['budget_seconds'] = budget(args)
  result['mean_times'] = list(delay_model(args).mean_times)
  result['summary'] = summarize(result, args)
  result['setting'] = (
    f'MNIST-1D, {args.workers} workers simulated with jax.vmap, '
    f'{args.micro} micro-batches of {args.micro_batch} per worker (global '
    f'batch {args.workers * args.micro * args.micro_batch}), MLP 40-'
    f'{args.hidden}-{args.hidden}-10, SGD momentum {MOMENTUM} at each '
    f"method's rate from {list(args.rates)} (tuned on seed 0 by time to "
    f'the target), {args.steps} steps; delays: mean '
    f'{1e3 * args.mean_time:g}-{1e3 * args.mean_time * (1 + args.spread):g} '
    f'ms per micro-batch, straggler p={args.straggler_prob} x'
    f'{args.slowdown:g}, jitter {args.jitter}; budget '
    f'{1e3 * budget(args):.1f} ms; datacenter network (5 us, 10 GB/s); '
    f'target train loss {args.target}; seeds {seeds}'
  )
  result['claims'] = verdicts(result['summary'], args)
  _lib.save(NAME, result)
  for method, s in result['summary']['methods'].items():
    t, n = s['time_to_target'], s['steps_to_target']
    shown = (
      f'{_lib.fmt(t, 1.0, 2)} s, steps {_lib.fmt(n, 1.0, 0)}'
      if t
      else 'not reached by every seed'
    )
    print(
      f'{method:12s} lr {s["lr"]:g}: time to target {shown}, step '
      f'{1e3 * s["mean_step_time"]:.1f} ms, micro-batches used '
      f'{100 * s["finished_fraction"]:.0f}%'
    )
  for claim in result['claims'].values():
    print(claim)
  plot(result, args)


def chosen(result, method, args):
  rows = result['runs'][method]
  lr = best_rate(rows)
  return [r for r in rows if r['seed'] != 0 and r['lr'] == lr], lr


def summarize(result, args) -> dict:
  methods, reached = {}, {}
  for method in args.methods:
    rows, lr = chosen(result, method, args)
    times = [r['time_to_target'] for r in rows]
    reached[method] = times
    methods[method] = {
      'lr': lr,
      'time_to_target': (
        _lib.summary(times) if all(t is not None for t in times) else None
      ),
      'seeds_reaching_target': sum(t is not None for t in times),
      'steps_to_target': (
        _lib.summary([r['steps_to_target'] for r in rows])
        if all(t is not None for t in times)
        else None
      ),
      'final_train_loss': _lib.summary([r['final_train_loss'] for r in rows])
      if all(r['final_train_loss'] is not None for r in rows)
      else None,
      'mean_step_time': float(np.mean([r['mean_step_time'] for r in rows])),
      'finished_fraction': float(
        np.mean([r['finished_fraction'] for r in rows])
      ),
      'all_finite': all(r['finite'] for r in rows),
    }
  ratios = {}
  base = reached['nonblocking']
  for method in args.methods:
    if method == 'nonblocking':
      continue
    # A seed starting below the target (time 0) has no ratio either.
    pairs = [
      (t, b)
      for t, b in zip(reached[method], base, strict=True)
      if t is not None and b
    ]
    ratios[f'{method}_over_nonblocking'] = (
      _lib.summary([t / b for t, b in pairs])
      if len(pairs) == len(base)
      else None
    )
  return {'methods': methods, 'time_ratio': ratios}


def verdicts(summary, args) -> dict[str, str]:
  """Non-blocking is faster when the 95% interval of the per-seed time
  ratio lies above 1, slower when it lies below 1; the claimed "up to 2x"
  counts as reproduced when the interval also reaches 2."""
  out = {}
  for key, r in summary['time_ratio'].items():
    other = key.removesuffix('_over_nonblocking')
    if r is None:
      out[other] = (
        f'{other}: not every method reached train loss {args.target} '
        'after step 0 on every seed: no ratio'
      )
      continue
    lo, hi = r['mean'] - r['ci95'], r['mean'] + r['ci95']
    if lo >= 2:
      word = 'reproduced: non-blocking faster, at least the claimed 2x'
    elif lo > 1 and hi >= 2:
      word = 'reproduced: non-blocking faster, 2x within the interval'
    elif lo > 1:
      word = 'non-blocking faster, but by less than the claimed 2x'
    elif hi < 1:
      word = 'non-blocking slower: not reproduced'
    else:
      word = 'tie'
    out[other] = (
      f'{other} / nonblocking time to train loss {args.target}: '
      f'{_lib.fmt(r, 1.0, 2)}x, {word}'
    )
  return out


def plot(result, args) -> None:
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
  for method in args.methods:
    rows, lr = chosen(result, method, args)
    clock = np.mean([r['clock'] for r in rows], axis=0)
    loss = np.array(
      [[np.nan if v is None else v for v in r['train_loss']] for r in rows]
    )
    line = ax[0].plot(clock, np.mean(loss, 0), label=f'{method} (lr {lr:g})')
    for r in rows:
      ax[0].plot(
        r['clock'], r['train_loss'], color=line[0].get_color(), alpha=0.15
      )
    s = result['summary']['methods'][method]
    if s['time_to_target']:
      ax[1].errorbar(
        [method],
        [s['time_to_target']['mean']],
        [s['time_to_target']['ci95']],
        marker='o',
        capsize=4,
        color=line[0].get_color(),
      )
  ax[0].axhline(args.target, color='k', lw=0.8, ls=':', label='target')
  ax[0].set(
    xlabel='simulated time (s)',
    ylabel='training loss (average model)',
    yscale='log',
    title=f'MNIST-1D MLP, {args.workers} workers with stragglers',
  )
  ax[0].legend(fontsize=8)
  ax[1].set(ylabel=f'simulated time to loss {args.target} (s)', ylim=(0, None))
  _lib.save_plot(fig, _lib.plot_path(__file__, 'stragglers.png'))


if __name__ == '__main__':
  main()
