"""The audit's logic: canaries, their isolation, the scores, the auditor."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import optax_zoo
from experiments.privacy import audit
from optax_zoo import training


def _data(n=30, d=5, m=8, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = rng.integers(0, 3, n).astype(np.int32)
  return x, y, audit.make_canaries(x, y, m, scale=4.0, num_classes=3, seed=seed)


def test_canaries_are_one_hot_on_their_own_columns():
  x, y, (xt, yt, xc, yc, inc) = _data()
  n, d = x.shape
  m = len(xc)
  assert xt.shape == (n + inc.sum(), d + m)
  np.testing.assert_array_equal(xt[:n, d:], 0.0)
  np.testing.assert_array_equal(xt[:n, :d], x)
  np.testing.assert_array_equal(yt[:n], y)
  np.testing.assert_array_equal(xc[:, :d], 0.0)
  np.testing.assert_array_equal(xc[:, d:], 4.0 * np.eye(m))
  np.testing.assert_array_equal(xt[n:], xc[inc])
  np.testing.assert_array_equal(yt[n:], yc[inc])


def test_inclusion_is_a_fair_coin():
  inc = audit.make_canaries(
    np.zeros((2, 3), np.float32),
    np.zeros(2, np.int32),
    4000,
    scale=1.0,
    num_classes=10,
    seed=3,
  )[4]
  assert abs(inc.mean() - 0.5) < 0.03  # 4 standard deviations


def test_only_a_canary_moves_its_own_row():
  x, y, (xt, _, xc, yc, inc) = _data()
  n, d = x.shape
  model = training.MLP(xt.shape[1], (6,), 3, rngs=nnx.Rngs(0))
  model.eval()
  j = int(np.flatnonzero(inc)[0])
  batch = {
    'x': jnp.concatenate([jnp.asarray(xt[:n]), jnp.asarray(xc[j : j + 1])]),
    'y': jnp.concatenate([jnp.asarray(y), jnp.asarray(yc[j : j + 1])]),
  }

  @jax.jit
  def grad_sum(batch):
    g, _ = optax_zoo.model_clipped_grad_sum(
      model, audit.example_loss, batch, clip_norm=1.0, method='auto'
    )
    return g['hidden'][0]['kernel'][...]

  rows = np.asarray(grad_sum(batch))[d:]
  assert np.abs(rows[j]).sum() > 0
  np.testing.assert_array_equal(np.delete(rows, j, axis=0), 0.0)


def test_scores_point_in_for_a_step_against_the_gradient():
  _, _, (xt, _, xc, yc, _) = _data()
  d = 5
  model = training.MLP(xt.shape[1], (6,), 3, rngs=nnx.Rngs(1))
  kernel0 = np.asarray(model.hidden[0].kernel[...])
  grads = audit.init_row_grads(model, xc, yc, d)
  sign = np.where(np.arange(len(xc)) % 2 == 0, 1.0, -1.0)[:, None]
  moved = kernel0.copy()
  moved[d:] -= 1e-2 * sign * grads  # even rows descend, odd rows ascend
  model.hidden[0].kernel.set_value(jnp.asarray(moved))
  proj = audit.projection_score(moved, kernel0, grads, d)
  reset = audit.canary_scores(model, kernel0, xc, yc, d)['reset_loss']
  np.testing.assert_array_equal(proj > 0, sign[:, 0] > 0)
  np.testing.assert_array_equal(reset > 0, sign[:, 0] > 0)


def test_auditor_bound_follows_separation():
  rng = np.random.default_rng(0)
  inc = rng.random(1000) < 0.5
  separated = np.where(inc, 10.0, 0.0) + rng.normal(size=1000)
  noise = rng.normal(size=1000)
  strong = audit.audit(separated, inc, significance=0.05, delta=1e-5)
  null = audit.audit(noise, inc, significance=0.05, delta=1e-5)
  flipped = audit.audit(-separated, inc, significance=0.05, delta=1e-5)
  assert strong['eps_one_run'] > 4.0 and strong['auroc'] == 1.0
  assert null['eps_one_run'] < 0.5
  assert flipped['eps_one_run'] == 0.0
