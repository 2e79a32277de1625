"""SAM's m-sharpness on a real 8-device CPU mesh with `jax.shard_map`.

Runs in a subprocess: the device count is fixed when JAX starts, and the
rest of the suite runs on one device.
"""

from __future__ import annotations

import textwrap

from optax_zoo._src import test_utils as tu

_SCRIPT = textwrap.dedent(
  """
  import jax, jax.numpy as jnp, numpy as np, optax
  from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
  import optax_zoo
  from optax_zoo._src import extra_args

  DEVICES, PER_DEVICE, RHO, LR, STEPS = 8, 4, 0.5, 0.1, 3
  assert jax.device_count() == DEVICES, jax.devices()
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(DEVICES * PER_DEVICE, 3)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(DEVICES * PER_DEVICE,)), jnp.float32)
  params = {'w': jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}

  def losses(p, batch):
    bx, by = batch
    return (jnp.sum(jnp.tanh(bx @ p['w']), axis=1) - by) ** 2

  def grad(p, batch):
    return jax.grad(lambda q: jnp.mean(losses(q, batch)))(p)

  def by_hand(synced):
    p = params
    parts = [
      (x[i * PER_DEVICE:(i + 1) * PER_DEVICE],
       y[i * PER_DEVICE:(i + 1) * PER_DEVICE]) for i in range(DEVICES)
    ]
    for _ in range(STEPS):
      gs = [grad(p, part) for part in parts]
      if synced:
        gs = [jax.tree.map(lambda *g: sum(g) / DEVICES, *gs)] * DEVICES
      sams = []
      for g, part in zip(gs, parts):
        n = jnp.sqrt(sum(jnp.sum(z ** 2) for z in jax.tree.leaves(g)))
        sams.append(grad(jax.tree.map(lambda a, b: a + RHO * b / n, p, g),
                         part))
      mean = jax.tree.map(lambda *g: sum(g) / DEVICES, *sams)
      p = jax.tree.map(lambda a, b: a - LR * b, p, mean)
    return p

  mesh = jax.make_mesh((DEVICES,), ('d',), axis_types=(AxisType.Explicit,))
  data = jax.device_put((x, y), NamedSharding(mesh, P('d')))

  def on_mesh(synced):
    tx = optax_zoo.sam(optax.sgd(LR), rho=RHO, axis_name='d',
                       sync_perturbation=synced)

    def local(p, shard):
      # Replicated params would get gradients already summed over 'd'.
      p = jax.lax.pcast(p, 'd', to='varying')
      grad_fn = extra_args.make_grad_fn(losses, shard)
      s = tx.init(p)
      for _ in range(STEPS):
        u, s = tx.update(grad_fn(p), s, p, grad_fn=grad_fn)
        p = optax.apply_updates(p, u)
      return jax.tree.map(lambda a: a[None], p)

    f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P('d')),
                              out_specs=P('d')))
    out = f(params, data)
    return jax.tree.map(np.asarray, out)

  for synced in (False, True):
    got, want = on_mesh(synced), by_hand(synced)
    other = by_hand(not synced)
    for g, w, o in zip(jax.tree.leaves(got), jax.tree.leaves(want),
                       jax.tree.leaves(other)):
      for d in range(DEVICES):
        np.testing.assert_allclose(g[d], w, rtol=1e-5, atol=1e-6)
      assert not np.allclose(g[0], o, rtol=1e-4)
  print('OK')
  """
)


def test_m_sharpness_on_8_device_mesh_matches_per_device_computation():
  tu.run_on_cpu_devices(_SCRIPT)
