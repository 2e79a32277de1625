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
# In Colab, install first: `pip install "optax-zoo[experiments]"`.

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
