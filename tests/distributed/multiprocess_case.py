"""What `multiprocess_test` runs, shared by its worker processes and the
test (so both compute from the same definitions)."""

import jax.numpy as jnp
import numpy as np
import optax

import optax_zoo

N, LR, STEPS, KEY, AXIS = 4, 0.1, 3, 7, 'workers'
FED_STEPS, LOCAL_STEPS = 5, 2


def gossip_data():
  rng = np.random.default_rng(0)
  x0 = rng.normal(size=(N, 3)).astype(np.float32)
  return x0, rng.normal(size=(N, 3)).astype(np.float32)


def compressed_grads():
  rng = np.random.default_rng(1)
  return [
    {
      'w': rng.normal(size=(N, 6, 9)).astype(np.float32),
      'b': rng.normal(size=(N, 5)).astype(np.float32),
    }
    for _ in range(STEPS)
  ]


def fed_data():
  rng = np.random.default_rng(2)
  x0 = np.broadcast_to(rng.normal(size=5), (N, 5)).astype(np.float32)
  centres = rng.normal(size=(N, 5)).astype(np.float32)
  return x0, centres, np.arange(1.0, N + 1, dtype=np.float32)


def fedavg_tx():
  proxy = jnp.asarray(np.random.default_rng(3).normal(size=(4, 5)), jnp.float32)
  loss = lambda p, b: jnp.mean(jnp.sum((b - p) ** 2, -1))
  return optax_zoo.fedavg(
    optax.sgd(LR, momentum=0.9),
    AXIS,
    local_steps=LOCAL_STEPS,
    client_fraction=0.5,
    continual_weight=0.3,
    key=3,
    importance_fn=lambda p: optax_zoo.fisher_importance(loss, p, proxy),
  )
