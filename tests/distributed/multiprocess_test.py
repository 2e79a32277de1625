"""The distributed methods across two real processes on 127.0.0.1.

Two processes start with `jax.distributed.initialize` (gloo CPU
collectives), two CPU devices each, and run on the 4 global devices the
same mesh-helper code one process would run on a 4-device mesh: D-PSGD
gossip on a ring, all-reduce SGD, natural-compressed averaging and federated
averaging with sampled clients and the continual-training penalty. Each
process writes what it gathered, which must equal what this process
computes alone (NumPy for gossip and all-reduce, the methods under
`jax.vmap` for the other two). One launch runs every check: starting the
processes and JAX's distributed runtime is most of the cost.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from optax_zoo._src import test_utils as tu
from tests.distributed import multiprocess_case as c
from tests.distributed.multiprocess_case import (
  AXIS,
  FED_STEPS,
  KEY,
  LOCAL_STEPS,
  LR,
  STEPS,
  N,
)

_ROOT = str(pathlib.Path(__file__).resolve().parents[2])

_WORKER = textwrap.dedent(
  """
  import sys
  import jax
  pid, port, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
  jax.distributed.initialize(
    coordinator_address=f'127.0.0.1:{port}', num_processes=2,
    process_id=pid, initialization_timeout=60)
  import jax.numpy as jnp, numpy as np, optax
  from jax.sharding import PartitionSpec as P
  sys.path.insert(0, sys.argv[4])
  import optax_zoo
  from tests.distributed.multiprocess_case import (
    AXIS, FED_STEPS, KEY, LR, N, STEPS, compressed_grads, fed_data,
    fedavg_tx, gossip_data)

  assert jax.device_count() == N and jax.local_device_count() == N // 2
  mesh = optax_zoo.worker_mesh(N, AXIS)
  W = P(AXIS)
  out = {}

  # D-PSGD gossip on a ring, then all-reduce SGD, on 0.5 ||x - c_i||^2.
  x0, centres = gossip_data()
  c = optax_zoo.shard_workers(centres, mesh)
  tx = optax_zoo.gossip(optax_zoo.ring(N), AXIS, inner=optax.sgd(LR))
  x = optax_zoo.shard_workers(x0, mesh)
  state = optax_zoo.init_on_workers(tx, x, mesh)
  specs = optax_zoo.worker_specs(state, AXIS)

  def step(x, s, c):
    u, s = tx.update(x - c, s, x)
    return optax.apply_updates(x, u), s

  run = jax.jit(optax_zoo.worker_map(
    step, mesh, in_specs=(W, specs, W), out_specs=(W, specs)))
  for _ in range(STEPS):
    x, state = jax.block_until_ready(run(x, state, c))
  out['gossip'] = optax_zoo.to_host(x)
  out['gossip_count'] = optax_zoo.to_host(state.count)

  mean = optax_zoo.all_reduce_mean(AXIS, inner=optax.sgd(LR))

  def sync(x, c):
    u, _ = mean.update(x - c, mean.init(x), x)
    return optax.apply_updates(x, u)

  y = optax_zoo.replicate_on_mesh(x0[0], mesh)
  run = jax.jit(optax_zoo.worker_map(
    sync, mesh, in_specs=(P(), W), out_specs=P()))
  for _ in range(STEPS):
    y = jax.block_until_ready(run(y, c))
  out['all_reduce'] = optax_zoo.to_host(y)

  # Natural-compressed averaging of given per-worker gradients.
  tx = optax_zoo.compressed_mean(
    optax_zoo.natural_compressor(), AXIS, key=KEY)
  grads = compressed_grads()
  state = optax_zoo.replicate_on_mesh(
    tx.init(jax.tree.map(lambda a: a[0], grads[0])), mesh)
  run = jax.jit(optax_zoo.worker_map(
    lambda g, s: tx.update(g, s), mesh, in_specs=(W, P()),
    out_specs=(P(), P())))
  for t, g in enumerate(grads):
    u, state = jax.block_until_ready(
      run(optax_zoo.shard_workers(g, mesh), state))
    for k, a in optax_zoo.to_host(u).items():
      out[f'compressed/{t}/{k}'] = a
  out['compressed_key'] = optax_zoo.to_host(state.rng_key)

  # FedAvg: half the clients per round, H local steps, the penalty.
  tx = fedavg_tx()
  x0, centres, weights = fed_data()
  x = optax_zoo.shard_workers(x0, mesh)
  state = optax_zoo.init_on_workers(tx, x, mesh)
  specs = optax_zoo.worker_specs(state, AXIS)

  def fed_step(x, s, c, w):
    u, s = tx.update(x - c, s, x, client_weight=w)
    return optax.apply_updates(x, u), s

  run = jax.jit(optax_zoo.worker_map(
    fed_step, mesh, in_specs=(W, specs, W, W), out_specs=(W, specs)))
  data = optax_zoo.shard_workers((centres, weights), mesh)
  for t in range(FED_STEPS):
    x, state = jax.block_until_ready(run(x, state, *data))
    out[f'fedavg/{t}'] = optax_zoo.to_host(x)
  out['fedavg_global'] = optax_zoo.to_host(state.global_params)

  np.savez(f'{folder}/out{pid}.npz', **out)
  jax.distributed.shutdown()
  print('OK')
  """
)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def outputs(tmp_path_factory):
  """Launches the two processes once; returns what each gathered."""
  folder = tmp_path_factory.mktemp('multiprocess')
  env = dict(os.environ)
  env['XLA_FLAGS'] = (
    env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2'
  )
  env['JAX_PLATFORMS'] = 'cpu'
  # Correctness, not speed: compile as the rest of the suite does.
  env = tu.fast_compile_env(env)
  port = str(_free_port())
  procs = [
    subprocess.Popen(
      [sys.executable, '-c', _WORKER, str(i), port, str(folder), _ROOT],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  results = []
  try:
    for p in procs:
      results.append(p.communicate(timeout=180))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()
  for p, (out, err) in zip(procs, results, strict=True):
    assert p.returncode == 0, err[-4000:]
    assert out.strip().endswith('OK'), out
  return [dict(np.load(folder / f'out{i}.npz')) for i in range(2)]


def test_gossip_and_all_reduce_equal_the_numpy_result(outputs):
  x0, centres = (a.astype(np.float64) for a in c.gossip_data())
  w = (np.eye(N) + np.roll(np.eye(N), 1, 1) + np.roll(np.eye(N), -1, 1)) / 3
  x, y = x0, x0[0]
  for _ in range(STEPS):
    x = w @ x - LR * (x - centres)
    y = y - LR * (y - centres).mean(axis=0)
  for got in outputs:
    np.testing.assert_allclose(got['gossip'], x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got['all_reduce'], y, rtol=1e-5, atol=1e-6)
    assert int(got['gossip_count']) == STEPS


def test_compressed_mean_equals_the_vmapped_workers(outputs):
  grads = c.compressed_grads()
  tx = optax_zoo.compressed_mean(optax_zoo.natural_compressor(), AXIS, key=KEY)
  state = jax.vmap(tx.init)(grads[0])
  step = jax.jit(jax.vmap(tx.update, axis_name=AXIS))
  for got in outputs:
    assert not np.array_equal(got['compressed/0/w'], got['compressed/1/w'])
  for t, g in enumerate(grads):
    u, state = step(g, state)
    for got in outputs:
      for k in ('w', 'b'):
        np.testing.assert_array_equal(got[f'compressed/{t}/{k}'], u[k][0])
  for got in outputs:
    np.testing.assert_array_equal(got['compressed_key'], state.rng_key[0])


def test_fedavg_equals_the_vmapped_clients(outputs):
  tx = c.fedavg_tx()
  x0, centres, weights = c.fed_data()

  def step(x, s, c, w):
    u, s = tx.update(x - c, s, x, client_weight=w)
    return optax.apply_updates(x, u), s

  step = jax.jit(jax.vmap(step, axis_name=AXIS))
  x = jnp.asarray(x0)
  state = jax.vmap(tx.init)(x)
  for t in range(FED_STEPS):
    x, state = step(x, state, centres, weights)
    averaged = (t + 1) % LOCAL_STEPS == 0
    for got in outputs:
      np.testing.assert_allclose(got[f'fedavg/{t}'], x, rtol=1e-5, atol=1e-6)
      # Every client holds the new global model right after a round only.
      assert np.allclose(got[f'fedavg/{t}'], got[f'fedavg/{t}'][:1]) == (
        averaged
      ), t
  for got in outputs:
    np.testing.assert_allclose(
      got['fedavg_global'], state.global_params, rtol=1e-5, atol=1e-6
    )
