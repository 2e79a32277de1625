"""D-KFAC and DP-KFAC on a real 8-device CPU mesh with `jax.shard_map`.

One subprocess checks that both equal single-device K-FAC on the
concatenated batch (DP-KFAC: with the same data on every worker; with
different data its step differs but keeps a cosine above 0.5) and reads
their bytes on the wire from the lowered program: D-KFAC all-reduces the
gradient and the factors, DP-KFAC the gradient and the preconditioned
gradient and no factor.
"""

from __future__ import annotations

import textwrap

from optax_zoo._src import test_utils as tu

_SCRIPT = textwrap.dedent(
  """
  import jax, jax.numpy as jnp, numpy as np, optax
  from flax import nnx
  from jax.sharding import AxisType, PartitionSpec as P
  import optax_zoo

  N, AX = 8, 'workers'
  assert jax.device_count() == N
  mesh = jax.make_mesh((N,), (AX,), axis_types=(AxisType.Auto,))
  model = nnx.Sequential(nnx.Linear(6, 16, rngs=nnx.Rngs(0)), nnx.tanh,
                         nnx.Linear(16, 8, rngs=nnx.Rngs(1)), nnx.tanh,
                         nnx.Linear(8, 3, rngs=nnx.Rngs(2)))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = jax.random.normal(jax.random.key(0), (N * 4, 6))
  y = jnp.arange(N * 4) % 3

  def ce(m, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

  def grads_stats(p, x, y):
    _, g, _, s = optax_zoo.kfac_layer_stats(graphdef, p, rest, ce, x, y)
    return g, s

  kw = dict(damping=1e-2, inverse_every=1)
  single = optax_zoo.scale_by_kfac(**kw)

  @jax.jit  # one program, not op-by-op dispatch of every K-FAC op
  def single_update(x, y):
    g, s = grads_stats(params, x, y)
    return single.update(g, single.init(params), params, kfac_stats=s)[0]

  want = single_update(x, y)
  x_same = jnp.tile(x[:4], (N, 1))
  y_same = jnp.tile(y[:4], N)
  want_same = single_update(x[:4], y[:4])

  def program(tx):
    def local(x, y):
      # The gradient at replicated params would be summed over the axis.
      p = jax.lax.pcast(params, AX, to='varying')
      g, s = grads_stats(p, x, y)
      return tx.update(g, tx.init(p), p, kfac_stats=s)[0]
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(AX), P(AX)),
                                 out_specs=P()))

  def close(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
      np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)

  dk = program(optax_zoo.scale_by_dkfac(AX, **kw))
  dp = program(optax_zoo.scale_by_dp_kfac(AX, **kw))
  close(jax.block_until_ready(dk(x, y)), want)
  close(jax.block_until_ready(dp(x_same, y_same)), want_same)
  # Different data on the workers: each layer's factors come from its
  # owner's 4 examples, not the 32, so DP-KFAC is not D-KFAC, but its
  # step must point the same way (the paper's approximation).
  flat = lambda t: np.concatenate([np.ravel(a) for a in jax.tree.leaves(t)])
  u, v = flat(dk(x, y)), flat(jax.block_until_ready(dp(x, y)))
  cos = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
  print('cosine D-KFAC/DP-KFAC, different data', cos)
  assert np.linalg.norm(u - v) > 1e-3 * np.linalg.norm(u) and cos > 0.5

  size = sum(a.size for a in jax.tree.leaves(params))
  floats = lambda f: f.per_worker / 4 / (2 * (N - 1) / N)  # ring all-reduce
  wd = optax_zoo.wire_bytes(dk, x, y)
  wp = optax_zoo.wire_bytes(dp, x, y)
  print('floats', floats(wd), floats(wp),
        optax_zoo.kfac_wire_floats(params, 'dkfac'),
        optax_zoo.kfac_wire_floats(params, 'dp_kfac'))
  np.testing.assert_allclose(floats(wd),
                             optax_zoo.kfac_wire_floats(params, 'dkfac'),
                             rtol=1e-6)
  np.testing.assert_allclose(floats(wp),
                             optax_zoo.kfac_wire_floats(params, 'dp_kfac'),
                             rtol=1e-6)
  print('OK')
  """
)


def test_dkfac_and_dp_kfac_on_8_device_mesh():
  out = tu.run_on_cpu_devices(_SCRIPT)
  assert out.strip().endswith('OK')
