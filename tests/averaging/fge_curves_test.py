"""FGE snapshots, mode-connecting curves and BatchNorm refresh."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optax_zoo
from optax_zoo.training import ResNet1D


def test_fge_snapshots_at_mid_cycle_with_the_schedule_minimum():
  cycle, start = 6, 4
  sched = optax.join_schedules(
    [optax.constant_schedule(0.05), optax_zoo.fge_schedule(0.05, 0.001, cycle)],
    [start],
  )
  tx = optax_zoo.fge(
    optax.sgd(sched), cycle_steps=cycle, num_snapshots=2, start_step=start
  )
  params, state = jnp.ones(3), tx.init(jnp.ones(3))
  seen = []
  for i in range(24):
    updates, state = tx.update(params * (i % 5 - 2.0), state, params)
    params = optax.apply_updates(params, updates)
    seen.append(params)
  # Completed steps 7, 13, 19: the rate of the step just taken is at its
  # lowest at the next count (the cycle's middle).
  snap_steps = [t for t in range(1, 25) if t >= 7 and (t - 7) % cycle == 0]
  assert snap_steps == [7, 13, 19] and int(state.n_snapshots) == 3
  assert float(sched(snap_steps[0])) == pytest.approx(0.001)
  # A ring buffer of two: step 19 overwrote step 7's slot.
  np.testing.assert_array_equal(state.snapshots[0], seen[18])
  np.testing.assert_array_equal(state.snapshots[1], seen[12])
  got = optax_zoo.fge_ensemble_predict(lambda p: 2 * p, state)
  np.testing.assert_allclose(got, seen[12] + seen[18], rtol=1e-6)


def test_fge_snapshots_the_visited_weights_wherever_it_sits():
  # Before a scale in the chain, FGE's own update is not the step taken:
  # the snapshots must still be the weights training reached, and one due
  # at the last step needs the parameters to be counted.
  tx = optax.chain(
    optax_zoo.fge(optax.scale_by_adam(), cycle_steps=2, num_snapshots=8),
    optax.scale(-0.1),
  )
  params = jnp.array([1.0])
  state = tx.init(params)
  seen = []
  for _ in range(5):
    updates, state = tx.update(2 * (params - 3.0), state, params)
    params = optax.apply_updates(params, updates)
    seen.append(params)
  # Snapshots after steps 1, 3 and 5; the last is still pending.
  expected = (seen[0] + seen[2] + seen[4]) / 3
  assert not np.allclose(seen[0], seen[2])
  got = optax_zoo.fge_ensemble_predict(lambda p: p, state, params)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  with pytest.raises(ValueError, match='`params` must be given'):
    optax_zoo.fge_ensemble_predict(lambda p: p, state)


def test_curve_points_hit_the_ends_and_the_bend():
  a, b, theta = jnp.zeros(2), jnp.ones(2), jnp.array([3.0, -1.0])
  for kind in ('bezier', 'polychain'):
    point = lambda t, kind=kind: optax_zoo.curve_point(
      t, a, b, theta, kind=kind
    )
    np.testing.assert_allclose(point(0.0), a)
    np.testing.assert_allclose(point(1.0), b)
  np.testing.assert_allclose(
    optax_zoo.curve_point(0.5, a, b, theta, kind='polychain'), theta
  )
  # Bezier with the bend at the midpoint is the straight line.
  mid = (a + b) / 2
  for t in (0.2, 0.7):
    np.testing.assert_allclose(
      optax_zoo.curve_point(t, a, b, mid), optax_zoo.curve_point(t, a, b)
    )
  with pytest.raises(ValueError, match='kind'):
    optax_zoo.curve_point(0.5, a, b, theta, kind='spline')


def test_training_the_bend_lowers_the_loss_along_the_curve():
  # Two minima of a ring-shaped valley; the straight line crosses the hump.
  loss = lambda p: (jnp.sum(p**2) - 1.0) ** 2
  a, b = jnp.array([1.0, 0.0]), jnp.array([-1.0, 0.0])
  fn = jax.jit(jax.value_and_grad(optax_zoo.curve_loss_fn(loss, a, b)))
  bend, tx = (a + b) / 2 + jnp.array([0.0, 0.1]), optax.adam(0.05)
  state = tx.init(bend)
  for i in range(300):
    _, g = fn(bend, jax.random.key(i))
    updates, state = tx.update(g, state)
    bend = optax.apply_updates(bend, updates)
  on_curve = optax_zoo.evaluate_curve(loss, a, b, bend)
  on_line = optax_zoo.evaluate_curve(loss, a, b)
  assert on_line.shape == (21,)
  assert float(on_curve.max()) < 0.2 < 0.9 < float(on_line.max())


def test_update_batch_stats_is_the_mean_of_batch_statistics():
  model = ResNet1D(channels=4, num_blocks=1, rngs=nnx.Rngs(0))
  params = jax.tree.map(lambda p: 1.1 * p, nnx.state(model, nnx.Param))
  batches = [
    jax.random.normal(jax.random.key(i), (16, 40)) + i for i in range(3)
  ]
  fresh = optax_zoo.update_batch_stats(model, params, batches)
  # The stem's BatchNorm sees the stem convolution's output directly.
  feats = [fresh.stem(x[..., None]) for x in batches]
  want_mean = np.mean([f.mean((0, 1)) for f in feats], axis=0)
  want_var = np.mean([f.var((0, 1)) for f in feats], axis=0)
  np.testing.assert_allclose(fresh.stem_bn.mean[...], want_mean, rtol=1e-4)
  np.testing.assert_allclose(fresh.stem_bn.var[...], want_var, rtol=1e-4)
  assert fresh.stem_bn.momentum == model.stem_bn.momentum
  # The input model keeps its parameters and statistics.
  assert not np.allclose(model.stem_bn.mean[...], want_mean)
  with pytest.raises(ValueError, match='batches'):
    optax_zoo.update_batch_stats(model, params, [])
