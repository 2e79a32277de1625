"""Natural-compressed averaging across two real processes on loopback.

Two processes, each with 2 CPU devices, join one `jax.distributed` job
(gloo CPU collectives) and run `compressed_mean(natural_compressor())` in
`jax.shard_map` over the 4 global devices for a few steps. Every process must
hold the result this test computes in one process with 4 workers simulated
under `jax.vmap`: the same code path, proven across processes.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np

import optax_zoo

WORKERS, STEPS, KEY, AX = 4, 3, 7, 'workers'

_WORKER = textwrap.dedent(
  """
  import sys
  import numpy as np
  import jax
  pid, port, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
  jax.distributed.initialize(
    coordinator_address=f'127.0.0.1:{port}', num_processes=2,
    process_id=pid, initialization_timeout=60)
  from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
  import optax_zoo

  AX = 'workers'
  n = jax.device_count()
  assert n == 4 and jax.local_device_count() == 2, jax.devices()
  mesh = jax.make_mesh((n,), (AX,), axis_types=(AxisType.Auto,))
  data = np.load(f'{folder}/grads.npz')
  steps = sorted({k.split('/')[0] for k in data})

  def place(x, spec):
    x = np.asarray(x)
    return jax.make_array_from_callback(
      x.shape, NamedSharding(mesh, spec), lambda index: x[index])

  tx = optax_zoo.compressed_mean(
    optax_zoo.natural_compressor(), AX, key=int(sys.argv[4]))
  like = {'w': data[f'{steps[0]}/w'][0], 'b': data[f'{steps[0]}/b'][0]}
  state = jax.tree.map(lambda a: place(a, P()), tx.init(like))
  f = jax.jit(jax.shard_map(
    lambda g, s: tx.update(jax.tree.map(lambda a: a[0], g), s),
    mesh=mesh, in_specs=(P(AX), P()), out_specs=(P(), P())))
  out = {}
  for step in steps:
    g = {k: place(data[f'{step}/{k}'], P(AX)) for k in ('w', 'b')}
    u, state = f(g, state)
    for k, a in u.items():
      out[f'{step}/{k}'] = np.asarray(a.addressable_shards[0].data)
  out['rng_key'] = np.asarray(state.rng_key.addressable_shards[0].data)
  np.savez(f'{folder}/out{pid}.npz', **out)
  jax.distributed.shutdown()
  print('OK')
  """
)


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _single_process_reference(grads):
  tx = optax_zoo.compressed_mean(optax_zoo.natural_compressor(), AX, key=KEY)
  state = jax.vmap(tx.init)(grads[0])
  step = jax.jit(jax.vmap(tx.update, axis_name=AX))
  outs = []
  for g in grads:
    u, state = step(g, state)
    outs.append(jax.tree.map(lambda a: np.asarray(a[0]), u))
  return outs, np.asarray(state.rng_key[0])


def test_two_processes_agree_with_the_single_process_result(tmp_path):
  rng = np.random.default_rng(0)
  grads = [
    {
      'w': rng.normal(size=(WORKERS, 6, 9)).astype(np.float32),
      'b': rng.normal(size=(WORKERS, 5)).astype(np.float32),
    }
    for _ in range(STEPS)
  ]
  np.savez(
    tmp_path / 'grads.npz',
    **{f'{t}/{k}': g[k] for t, g in enumerate(grads) for k in g},
  )
  env = dict(os.environ)
  env['XLA_FLAGS'] = (
    env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2'
  )
  env['JAX_PLATFORMS'] = 'cpu'
  # Correctness, not speed: compile as the rest of the suite does.
  env['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'
  port = str(_free_port())
  procs = [
    subprocess.Popen(
      [sys.executable, '-c', _WORKER, str(i), port, str(tmp_path), str(KEY)],
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
      results.append(p.communicate(timeout=120))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()
  for p, (out, err) in zip(procs, results, strict=True):
    assert p.returncode == 0, err[-4000:]
    assert out.strip().endswith('OK'), out

  want, want_key = _single_process_reference(grads)
  for pid in range(2):
    got = np.load(pathlib.Path(tmp_path) / f'out{pid}.npz')
    for t, w in enumerate(want):
      for k in ('w', 'b'):
        np.testing.assert_array_equal(got[f'{t}/{k}'], w[k])
    np.testing.assert_array_equal(got['rng_key'], want_key)
