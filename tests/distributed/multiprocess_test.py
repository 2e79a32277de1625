"""Gossip and all-reduce across two real processes on 127.0.0.1.

Two processes start with `jax.distributed.initialize` (gloo CPU
collectives), two CPU devices each, and run the same mesh-helper code as
one process would on a 4-device mesh; each writes what it gathered, which
must equal the single-process NumPy result.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

N, LR, STEPS = 4, 0.1, 3
_WORKER = textwrap.dedent(
  """
  import sys
  import jax
  process_id, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
  jax.distributed.initialize(
    coordinator_address=f'127.0.0.1:{port}', num_processes=2,
    process_id=process_id, initialization_timeout=60)
  import numpy as np, optax
  from jax.sharding import PartitionSpec as P
  import optax_zoo

  N, LR, STEPS = int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
  AXIS = 'workers'
  assert jax.device_count() == N and jax.local_device_count() == N // 2
  rng = np.random.default_rng(0)
  x0 = rng.normal(size=(N, 3)).astype(np.float32)
  centres = rng.normal(size=(N, 3)).astype(np.float32)
  mesh = optax_zoo.worker_mesh(N, AXIS)
  stacked = P(AXIS)
  c = optax_zoo.shard_workers(centres, mesh)

  tx = optax_zoo.gossip(optax_zoo.ring(N), AXIS, inner=optax.sgd(LR))
  x = optax_zoo.shard_workers(x0, mesh)
  state = optax_zoo.init_on_workers(tx, x, mesh)
  specs = optax_zoo.worker_specs(state, AXIS)

  def step(x, s, c):
    u, s = tx.update(x - c, s, x)
    return optax.apply_updates(x, u), s

  run = jax.jit(optax_zoo.worker_map(
    step, mesh, in_specs=(stacked, specs, stacked),
    out_specs=(stacked, specs)))
  for _ in range(STEPS):
    x, state = jax.block_until_ready(run(x, state, c))
  gossip = optax_zoo.to_host(x)

  mean = optax_zoo.all_reduce_mean(AXIS, inner=optax.sgd(LR))

  def sync(x, c):
    u, _ = mean.update(x - c, mean.init(x), x)
    return optax.apply_updates(x, u)

  y = optax_zoo.replicate_on_mesh(x0[0], mesh)
  run = jax.jit(optax_zoo.worker_map(
    sync, mesh, in_specs=(P(), stacked), out_specs=P()))
  for _ in range(STEPS):
    y = jax.block_until_ready(run(y, c))
  np.savez(out, gossip=gossip, all_reduce=optax_zoo.to_host(y),
           count=optax_zoo.to_host(state.count))
  jax.distributed.shutdown()
  """
)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _reference():
  rng = np.random.default_rng(0)
  x0 = rng.normal(size=(N, 3)).astype(np.float32).astype(np.float64)
  centres = rng.normal(size=(N, 3)).astype(np.float32).astype(np.float64)
  w = (np.eye(N) + np.roll(np.eye(N), 1, 1) + np.roll(np.eye(N), -1, 1)) / 3
  x, y = x0, x0[0]
  for _ in range(STEPS):
    x = w @ x - LR * (x - centres)
    y = y - LR * (y - centres).mean(axis=0)
  return x, y


def test_two_processes_agree_with_one(tmp_path):
  env = dict(os.environ)
  env['XLA_FLAGS'] = (
    env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2'
  )
  env['JAX_PLATFORMS'] = 'cpu'
  port = str(_free_port())
  outs = [tmp_path / f'process{i}.npz' for i in range(2)]
  args = [str(N), str(LR), str(STEPS)]
  procs = [
    subprocess.Popen(
      [sys.executable, '-c', _WORKER, str(i), port, str(outs[i]), *args],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  errors = []
  try:
    for p in procs:
      _, err = p.communicate(timeout=120)
      if p.returncode:
        errors.append(err[-3000:])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()
  assert not errors, '\n---\n'.join(errors)
  gossip, all_reduce = _reference()
  for out in outs:
    got = np.load(out)
    np.testing.assert_allclose(got['gossip'], gossip, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
      got['all_reduce'], all_reduce, rtol=1e-5, atol=1e-6
    )
    assert int(got['count']) == STEPS
