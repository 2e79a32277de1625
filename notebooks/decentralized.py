# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Decentralized and compressed data-parallel training on 8 devices
#
# `optax_zoo.distributed` holds data-parallel averaging methods as optax
# transforms that run per worker inside `jax.shard_map`: the synchronous
# all-reduce baseline, D-PSGD gossip (Lian et al. 2017), where each worker
# averages its *parameters* with a few neighbours instead of the gradient
# with everyone, and compressed averaging, where the workers exchange
# compressed gradients (natural compression, Horvath et al. 2019: 9 bits a
# coordinate instead of 32).
#
# This notebook simulates 8 devices on the CPU, trains the same small MLP
# on sklearn digits with each method (every worker has its own shard of the
# data), plots the loss and how far the gossiping workers drift apart, and
# reads the bytes each step sends from the compiled program. The same code
# runs on 8 GPUs or TPUs, or on several hosts after
# `jax.distributed.initialize`.
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/optax-zoo/optax_zoo/blob/main/notebooks/decentralized.ipynb)

# %%
# In Colab, install optax_zoo from its repository; elsewhere this does
# nothing (install it with the README's command instead).
import sys

if 'google.colab' in sys.modules:
  import subprocess

  repo = 'git+https://github.com/optax-zoo/optax_zoo'
  spec = f'optax-zoo[experiments] @ {repo}'
  pip = [sys.executable, '-m', 'pip', 'install', '-q']
  subprocess.run([*pip, spec], check=True)

# %%
import itertools
import os

# The device count is fixed when JAX starts: ask for 8 CPU devices before
# importing jax.
os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
)

import jax
import jax.flatten_util
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

import optax_zoo
from optax_zoo import training

# The test suite sets OPTAX_ZOO_SMALL=1 to run this notebook at a tiny size.
SMALL = os.environ.get('OPTAX_ZOO_SMALL') == '1'
STEPS = 60 if SMALL else 400
BATCH = 16  # examples per worker per step
LR = 0.3
N = 8
AXIS = 'workers'
print(jax.devices())

# %% [markdown]
# ## The workers and their data
#
# `worker_mesh` is a 1-D mesh with one worker per device. Per-worker values
# are stacked on a leading axis of size 8 and sharded over it
# (`shard_workers`): worker `i`'s row lives on device `i`. Each worker gets
# its own eighth of the training set; the model is an MLP 64-32-10 whose
# parameters are one flat vector per worker, and all workers start from
# the same one.

# %%
data = training.digits()
mesh = optax_zoo.worker_mesh(N, AXIS)
per = len(data.x_train) // N
shards = optax_zoo.shard_workers(
  {
    'x': data.x_train[: N * per].reshape(N, per, -1),
    'y': data.y_train[: N * per].reshape(N, per),
  },
  mesh,
)
rng = np.random.default_rng(0)
sizes = (data.num_features, 32, data.num_classes)
init = {}
for i, (a, b) in enumerate(itertools.pairwise(sizes)):
  init[f'w{i}'] = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
  init[f'b{i}'] = np.zeros(b, np.float32)
flat0, unravel = jax.flatten_util.ravel_pytree(init)
print(f'{N} workers, {per} examples each, {flat0.size} parameters')


def logits_fn(x, xb):
  p = unravel(x)
  return jax.nn.relu(xb @ p['w0'] + p['b0']) @ p['w1'] + p['b1']


def loss_fn(x, xb, yb):
  logits = logits_fn(x, xb)
  return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()


# %% [markdown]
# ## One training step, four averaging methods
#
# The step is written for *one* worker; `optax_zoo.worker_map` wraps it in
# `jax.shard_map` and drops the worker axis inside. Each worker computes the
# gradient of its own batch; the transform does the communication:
#
# - `all_reduce_mean(AXIS, inner=sgd)`: the mean gradient (`lax.pmean`),
#   then SGD; every worker keeps the same model.
# - `gossip(ring(8), AXIS, inner=sgd)`: SGD on the worker's own gradient,
#   then its parameters are mixed with its two ring neighbours' (one
#   `lax.ppermute` per neighbour).
# - `gossip(one_peer_exponential(8), ...)`: one neighbour per step, at
#   distance 1, 2, 4, 1, ... (a replicated step counter switches the shift);
#   three steps average exactly on 8 workers.
# - `compressed_mean(natural_compressor(), AXIS)` then SGD: each worker
#   rounds its gradient to powers of two at random (unbiased), sends 8-bit
#   exponents and sign bits with a uint8 all-gather, and decodes the others'.
#
# Gossip workers hold different models: `consensus_distance` is
# `1/n sum_i ||x_i - mean x||^2`, and `eval_params` (the average model) is
# what we score.

# %%
sgd = optax.sgd(LR)
methods = {
  'all-reduce': optax_zoo.all_reduce_mean(AXIS, inner=sgd),
  'gossip ring': optax_zoo.gossip(optax_zoo.ring(N), AXIS, inner=sgd),
  'gossip one-peer exp': optax_zoo.gossip(
    optax_zoo.one_peer_exponential(N), AXIS, inner=sgd
  ),
  'natural compression': optax.chain(
    optax_zoo.compressed_mean(optax_zoo.natural_compressor(), AXIS, key=0),
    sgd,
  ),
}


def make_step(tx):
  def step(x, state, shard, idx):
    xb, yb = shard['x'][idx], shard['y'][idx]
    loss, g = jax.value_and_grad(loss_fn)(x, xb, yb)
    updates, state = tx.update(g, state, x)
    x = optax.apply_updates(x, updates)
    mean_loss = jax.lax.pmean(loss, AXIS)
    return x, state, mean_loss, optax_zoo.consensus_distance(x, AXIS)

  # SGD keeps no per-worker state: the states' leaves (gossip's step count,
  # the compressor's step key) are replicated.
  state_specs = jax.tree.map(lambda _: P(), tx.init(flat0))
  train = jax.jit(
    optax_zoo.worker_map(
      step,
      mesh,
      in_specs=(P(AXIS), state_specs, P(AXIS), P(AXIS)),
      out_specs=(P(AXIS), state_specs, P(), P()),
    )
  )
  # The update alone, for its bytes: the step's loss and consensus
  # distance are all-reduces of their own.
  update = optax_zoo.worker_map(
    lambda g, s, x: tx.update(g, s, x),
    mesh,
    in_specs=(P(AXIS), state_specs, P(AXIS)),
    out_specs=(P(AXIS), state_specs),
  )
  return train, update


batches = rng.integers(0, per, size=(STEPS, N, BATCH)).astype(np.int32)
x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
history, wire, final = {}, {}, {}
for name, tx in methods.items():
  step, update = make_step(tx)
  x = optax_zoo.shard_workers(np.broadcast_to(flat0, (N, flat0.size)), mesh)
  state = optax_zoo.replicate_on_mesh(tx.init(flat0), mesh)
  wire[name] = optax_zoo.wire_bytes(update, x, state, x)
  losses, distances = [], []
  for t in range(STEPS):
    idx = optax_zoo.shard_workers(batches[t], mesh)
    x, state, loss, distance = step(x, state, shards, idx)
    losses.append(float(loss))
    distances.append(float(distance))
  history[name] = (losses, distances)
  # The average model (every worker holds the same one after all-reduce).
  average = optax_zoo.to_host(optax_zoo.worker_mean(x))[0]
  accuracy = float(
    jnp.mean(jnp.argmax(logits_fn(average, x_test), 1) == y_test)
  )
  final[name] = accuracy
  print(
    f'{name:20s} final loss {np.mean(losses[-10:]):.3f}, test accuracy '
    f'{accuracy:.3f}, consensus distance {distances[-1]:.2e}'
  )

# %% [markdown]
# ## Loss and consensus distance
#
# Left: the workers' mean training loss on their own batches. Right: the
# consensus distance of the gossip runs (all-reduce and compressed
# averaging keep it at zero: every worker applies the same update). The
# workers start together; their different gradients push them apart and
# the mixing pulls them back, so the distance stays small and bounded,
# smaller for the graph that mixes faster (the one-peer exponential graph
# averages exactly every three steps, the ring needs many).

# %%
fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
for name, (losses, distances) in history.items():
  ax[0].plot(losses, label=name, alpha=0.8)
  if name.startswith('gossip'):
    ax[1].plot(distances, label=name)
ax[0].set(xlabel='step', ylabel='training loss', yscale='log')
ax[1].set(xlabel='step', ylabel='consensus distance', yscale='log')
ax[0].legend()
ax[1].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What crosses the wire
#
# `optax_zoo.wire_bytes` lowers the update and reads its collectives: their
# kind, dtype and replica groups, priced as a ring would carry them. Per
# step and per worker, with `M = 4 d` bytes of float32 parameters:
#
# - all-reduce: `2 (n - 1) / n * M` sent and as many received, through every
#   worker alike (a ring all-reduce is a reduce-scatter and an all-gather);
# - gossip: `M` to each neighbour and `M` from each, `degree * M` each way,
#   whatever `n` is: 2 on the ring, 1 on the one-peer exponential graph;
# - natural compression: an all-gather of the uint8 payloads,
#   `d + ceil(d / 8)` bytes each (8-bit exponents and packed sign bits),
#   `n - 1` of them received and sent.
#
# The bars are the busiest worker's traffic (sent plus received) per step,
# read from the program; the black ticks the documented formula.

# %%
d, message = flat0.size, 4 * flat0.size
formula = {
  'all-reduce': optax_zoo.busiest_node_bytes('ring_allreduce', N, message),
  'gossip ring': optax_zoo.busiest_node_bytes('gossip', N, message, degree=2),
  'gossip one-peer exp': optax_zoo.busiest_node_bytes(
    'gossip', N, message, degree=1
  ),
  'natural compression': 2
  * optax_zoo.natural_compressor().wire_bytes(jnp.zeros(d), N),
}
for name, w in wire.items():
  kinds = sorted({(c.kind, c.dtypes) for c in w.collectives})
  print(f'{name:20s} {w.busiest:>9,.0f} B busiest, collectives {kinds}')
fig, ax = plt.subplots(figsize=(6, 3.5))
names = list(wire)
ax.bar(names, [wire[k].busiest / 1e3 for k in names])
ax.scatter(
  names,
  [formula[k] / 1e3 for k in names],
  color='k',
  marker='_',
  s=600,
  label='formula',
)
ax.set(ylabel='kB per step, busiest worker')
ax.legend()
plt.setp(ax.get_xticklabels(), rotation=15)
fig.tight_layout()
plt.show()

# %% [markdown]
# On this 8-device CPU the bytes are memory copies. On a network, the
# busiest node's traffic is what limits a step: it grows with `n` for a
# parameter server and stays at `degree` messages for gossip (see
# `python -m experiments.distributed.communication` for 4 to 64 workers
# under an alpha-beta model). Bytes are not the whole story: gossip workers
# disagree a little, so D-PSGD may need more steps to the same loss.

# %% [markdown]
# ## Stragglers: non-blocking SGD
#
# Synchronous SGD waits for the slowest worker at every step, so one slow
# machine (a straggler) stalls all of them. Non-blocking SGD (He & Dube
# 2022) splits each worker's batch into micro-batches, gives the step a
# time budget, and averages the gradients of the micro-batches that
# finished within it: a straggler contributes less, and delays nobody.
#
# This machine has no stragglers, so a `DelayModel` draws each micro-batch's
# compute time: here the workers' mean times spread from 10 to 20 ms (old
# and new machines), each worker is 4x slower for a whole step with
# probability 0.1, and every micro-batch has a 20% jitter.
# `finished_microbatches` counts, per worker, the micro-batches done within
# the budget (the median worker's mean time for its whole batch), and
# `simulated_step_time` prices a step: the budget (or the slowest worker,
# for synchronous SGD) plus a ring all-reduce under the alpha-beta model of
# a datacenter network.

# %%
M, MB = 4, 8  # micro-batches per worker, examples per micro-batch
delays = optax_zoo.DelayModel(
  tuple(0.01 * np.linspace(1.0, 2.0, N)),
  straggler_prob=0.1,
  slowdown=4.0,
  jitter=0.2,
)
budget = M * float(np.median(delays.mean_times))
network = {'message_bytes': 4 * flat0.size + 4, 'latency': 5e-6}
network['bandwidth'] = 10e9


@jax.jit
def simulate(key):
  keys = jax.random.split(key, STEPS)
  times = jax.vmap(lambda k: delays.sample(k, N, M))(keys)  # (steps, N, M)
  seconds = {
    name: jax.vmap(
      lambda t, tau=tau: optax_zoo.simulated_step_time(t, tau, **network)
    )(times)
    for name, tau in [('non-blocking', budget), ('synchronous', None)]
  }
  return optax_zoo.finished_microbatches(times, budget), seconds


finished, seconds = simulate(jax.random.key(0))
clock = {name: np.cumsum(s) for name, s in seconds.items()}
print('mean micro-batches finished per worker:', np.mean(finished, 0))

# %% [markdown]
# The training is real. Both runs use `nonblocking_sgd` over the workers of
# a `jax.vmap` axis (the same transform runs under `jax.shard_map` on a
# mesh): each worker hands over its stacked micro-batch gradients and how
# many finished; synchronous SGD is the same transform with every
# micro-batch finished (gradient accumulation). The two runs are two lanes
# of one vmapped program.

# %%
x_all, y_all = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
xw = x_all[: N * per].reshape(N, per, -1)
yw = y_all[: N * per].reshape(N, per)
micro = rng.integers(0, per, size=(STEPS, N, M, MB))
nb = optax_zoo.nonblocking_sgd(AXIS, inner=optax.sgd(LR))


def worker_step(x, state, xs, ys, idx, num_finished):
  grads = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0, 0))(x, xs[idx], ys[idx])
  updates, state = nb.update(grads, state, x, num_finished=num_finished)
  return optax.apply_updates(x, updates), state


def train_nonblocking(num_finished):
  def step(carry, inputs):
    x, state = jax.vmap(worker_step, axis_name=AXIS)(*carry, xw, yw, *inputs)
    return (x, state), loss_fn(x[0], x_all, y_all)

  x0 = jnp.broadcast_to(flat0, (N, flat0.size))
  _, losses = jax.lax.scan(
    step, (x0, jax.vmap(nb.init)(x0)), (micro, num_finished)
  )
  return losses


everything = jnp.full_like(finished, M)
losses = jax.jit(jax.vmap(train_nonblocking))(jnp.stack([finished, everything]))
fig, ax = plt.subplots(figsize=(6, 3.5))
for (name, seconds), curve in zip(clock.items(), losses, strict=True):
  ax.plot(seconds, curve, label=name)
  print(
    f'{name:13s} {1e3 * seconds[-1] / STEPS:.1f} ms per step, final '
    f'training loss {curve[-1]:.3f}'
  )
ax.set(xlabel='simulated time (s)', ylabel='training loss', yscale='log')
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# A non-blocking step uses fewer micro-batches (a little more gradient
# noise) but costs the budget instead of the slowest worker's time, so the
# same loss comes sooner in simulated time. How much sooner depends on the
# delay model: `python -m experiments.distributed.stragglers` measures it on
# MNIST-1D against synchronous SGD and D-PSGD, over seeds and at each
# method's tuned rate.
#
# ## Federated averaging on non-iid clients
#
# In federated learning the data stays on the clients. `fedavg` runs
# `local_steps` steps of a local optimizer on each client, then replaces
# the clients' models by their average (weighted by the clients' example
# counts), a round; each round only a `client_fraction` of the clients
# takes part. With non-iid clients (each holds a few classes) the local
# models drift apart and the average suffers. Local continual training (Yao
# & Sun 2020) pulls each client towards the global model with the penalty
# `continual_weight / 2 * sum F (x - global)^2`, weighted by `F`, the
# Fisher information of the global model on a small proxy set at the
# server (`fisher_importance`).
#
# `dirichlet_split` gives each of 10 clients a label-skewed shard of the
# training set (concentration 0.3); the server keeps 50 examples as its
# proxy set. The two runs, with and without the penalty, are two lanes of
# one vmapped program (a zero weight is plain FedAvg).

# %%
K, H, ROUNDS = 10, 5, 10 if SMALL else 40
proxy = rng.choice(len(data.y_train), 50, replace=False)
rest = np.setdiff1d(np.arange(len(data.y_train)), proxy)
shards = [
  rest[s] for s in optax_zoo.dirichlet_split(data.y_train[rest], K, 0.3, seed=0)
]
counts = np.stack([np.bincount(data.y_train[s], minlength=10) for s in shards])
print('examples per class (rows: clients 0-2):')
print(counts[:3])
client_batches = np.stack(
  [rng.choice(s, size=(ROUNDS, H, BATCH)) for s in shards], axis=2
)
sizes = jnp.asarray([len(s) for s in shards], jnp.float32)


def importance(x):
  batch = (x_all[proxy], y_all[proxy])
  return optax_zoo.fisher_importance(lambda p, b: loss_fn(p, *b), x, batch)


def federated(weight):
  tx = optax_zoo.fedavg(
    optax.sgd(LR),
    'clients',
    local_steps=H,
    client_fraction=0.5,
    continual_weight=weight,
    importance_fn=importance,
    key=0,
  )

  def client_step(x, state, idx, size):
    grads = jax.grad(loss_fn)(x, x_all[idx], y_all[idx])
    updates, state = tx.update(grads, state, x, client_weight=size)
    return optax.apply_updates(x, updates), state

  # The step count is the same on every client: kept out of the vmap
  # (`in_axes=None`), it keeps the round's `lax.cond` a branch, so the
  # average and the Fisher run once a round instead of at every step.
  state = jax.vmap(tx.init)(jnp.broadcast_to(flat0, (K, flat0.size)))
  axes = jax.tree.map(lambda _: 0, state)._replace(count=None)
  step = jax.vmap(
    client_step,
    in_axes=(0, axes, 0, 0),
    out_axes=(0, axes),
    axis_name='clients',
  )

  def one_round(carry, idx):
    carry, _ = jax.lax.scan(lambda c, i: (step(*c, i, sizes), None), carry, idx)
    # After a round every client holds the global model.
    logits = logits_fn(carry[0][0], x_test)
    return carry, jnp.mean(jnp.argmax(logits, 1) == y_test)

  x0 = jnp.broadcast_to(flat0, (K, flat0.size))
  state = state._replace(count=jnp.zeros([], jnp.int32))
  _, accuracy = jax.lax.scan(one_round, (x0, state), client_batches)
  return accuracy


weights = {'FedAvg': 0.0, 'FedAvg + continual': 10.0}
accuracy = jax.jit(jax.vmap(federated))(jnp.asarray(list(weights.values())))
fig, ax = plt.subplots(figsize=(6, 3.5))
for name, acc in zip(weights, accuracy, strict=True):
  ax.plot(np.arange(1, ROUNDS + 1), acc, marker='.', label=name)
  print(f'{name:20s} global test accuracy per round {np.round(acc, 2)}')
ax.set(xlabel='round', ylabel='global test accuracy')
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Whether the penalty helps, and from which round, depends on its weight,
# the skew and the local work per round: `python -m
# experiments.distributed.federated` tunes both methods and measures the gap
# over seeds on MNIST-1D.
