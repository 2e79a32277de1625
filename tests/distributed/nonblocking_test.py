"""Non-blocking SGD, its delay model and its simulated time, on workers
simulated with ``jax.vmap(..., axis_name=...)`` on one device, and on a
real 8-device CPU mesh in one subprocess."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from optax_zoo._src import test_utils as tu

AXIS = 'workers'
N, M, LR, MOMENTUM, STEPS = 4, 3, 0.1, 0.9, 5
_RNG = np.random.default_rng(0)
# Micro-batch j of worker i has the loss 0.5 * s_ij * ||x - c_ij||^2.
SCALES = _RNG.uniform(0.5, 2.0, size=(N, M))
CENTRES = {
  'w': _RNG.normal(size=(N, M, 2, 3)),
  'b': _RNG.normal(size=(N, M, 3)),
}
X0 = {'w': _RNG.normal(size=(2, 3)), 'b': _RNG.normal(size=(3,))}


def _micro_grads(x):
  """Every worker's stacked micro-batch gradients at its parameters ``x``
  (stacked per worker), float32."""
  out = {}
  for k, v in x.items():
    s = SCALES.reshape(N, M, *[1] * (np.ndim(v) - 1))
    out[k] = jnp.asarray(s * (np.asarray(v)[:, None] - CENTRES[k]), jnp.float32)
  return out


def _on_workers(x):
  return jax.tree.map(
    lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (N, *v.shape)), x
  )


def _vstep(tx):
  def step(x, s, g, f):
    u, s = tx.update(g, s, x, num_finished=f)
    return optax.apply_updates(x, u), s, u

  return jax.jit(jax.vmap(step, axis_name=AXIS))


def test_no_stragglers_equals_ssgd_with_gradient_accumulation():
  inner = lambda: optax.sgd(LR, momentum=MOMENTUM)
  tx = optax_zoo.nonblocking_sgd(AXIS, inner=inner())
  times = optax_zoo.DelayModel((1.0, 1.5, 2.0, 1.2)).sample(0, N, M)
  finished = optax_zoo.finished_microbatches(times, budget=100.0)
  np.testing.assert_array_equal(finished, M)
  ref = inner()
  x = _on_workers(X0)
  s = jax.vmap(tx.init)(x)
  x_ref = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), X0)
  s_ref = ref.init(x_ref)
  step = _vstep(tx)
  for _ in range(STEPS):
    x, s, _ = step(x, s, _micro_grads(x), finished)
    # Synchronous SGD, gradient accumulated over all N * M micro-batches.
    g = jax.tree.map(
      lambda v: jnp.mean(v, axis=(0, 1)), _micro_grads(_on_workers(x_ref))
    )
    u, s_ref = ref.update(g, s_ref, x_ref)
    x_ref = optax.apply_updates(x_ref, u)
    for k in x:
      for i in range(N):
        np.testing.assert_allclose(x[k][i], x_ref[k], rtol=1e-5, atol=1e-6)
  assert int(s.count[0]) == STEPS and int(s.skipped[0]) == 0


def _weighted_mean(grads, finished):
  """NumPy: the mean over exactly the finished micro-batches."""
  out = {}
  for k, g in grads.items():
    g = np.asarray(g, np.float64)
    total = sum(g[i, : finished[i]].sum(0) for i in range(N))
    out[k] = total / np.sum(finished)
  return out


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_stragglers_average_exactly_the_finished_microbatches(seed):
  model = optax_zoo.DelayModel(
    (1.0, 1.0, 2.0, 0.5), straggler_prob=0.5, slowdown=4.0, jitter=0.3
  )
  times = model.sample(jax.random.key(seed), N, M)
  finished = optax_zoo.finished_microbatches(times, budget=2.5)
  np.testing.assert_array_equal(
    finished, (np.cumsum(np.asarray(times), -1) <= 2.5).sum(-1)
  )
  tx = optax_zoo.nonblocking_sgd(AXIS)
  x = _on_workers(X0)
  grads = _micro_grads(x)
  _, _, u = _vstep(tx)(x, jax.vmap(tx.init)(x), grads, finished)
  want = _weighted_mean(grads, np.asarray(finished))
  for k in u:
    for i in range(N):
      np.testing.assert_allclose(u[k][i], want[k], rtol=1e-5, atol=1e-6)


def test_fixed_draws_with_an_idle_worker_weigh_it_zero():
  # Worker 2 is a straggler that finished nothing; worker 0 finished all.
  times = jnp.array(
    [[0.5, 0.5, 0.5], [1.0, 1.0, 1.0], [9.0, 9.0, 9.0], [0.8, 2.0, 0.1]]
  )
  finished = optax_zoo.finished_microbatches(times, budget=2.0)
  np.testing.assert_array_equal(finished, [3, 2, 0, 1])
  tx = optax_zoo.nonblocking_sgd(AXIS)
  x = _on_workers(X0)
  grads = _micro_grads(x)
  # An unfinished micro-batch's non-finite gradient never counts.
  grads['b'] = grads['b'].at[2, 0, 0].set(jnp.nan).at[3, 2, 1].set(jnp.inf)
  _, _, u = _vstep(tx)(x, jax.vmap(tx.init)(x), grads, finished)
  want = _weighted_mean(grads, [3, 2, 0, 1])
  for k in u:
    np.testing.assert_allclose(u[k][1], want[k], rtol=1e-5, atol=1e-6)
  # A finished one's does.
  grads['b'] = grads['b'].at[1, 1, 0].set(jnp.nan)
  _, _, u = _vstep(tx)(x, jax.vmap(tx.init)(x), grads, finished)
  assert np.all(np.isnan(u['b'][:, 0]))


def test_nobody_finished_skips_the_step():
  tx = optax_zoo.nonblocking_sgd(AXIS, inner=optax.sgd(LR, momentum=MOMENTUM))
  x = _on_workers(X0)
  s = jax.vmap(tx.init)(x)
  step = _vstep(tx)
  x, s, _ = step(x, s, _micro_grads(x), jnp.full(N, M))
  x2, s2, u = step(x, s, _micro_grads(x), jnp.zeros(N, jnp.int32))
  for k in x:
    np.testing.assert_array_equal(u[k], 0.0)
    np.testing.assert_array_equal(x2[k], x[k])
  jax.tree.map(np.testing.assert_array_equal, s2.inner_state, s.inner_state)
  assert int(s2.count[0]) == 2 and int(s2.skipped[0]) == 1


def test_one_worker_is_the_inner_optimizer_on_the_mean_microbatch():
  inner = optax.adam(0.05)
  tx = optax_zoo.nonblocking_sgd(AXIS, inner=inner)
  x = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32)[None], X0)
  s = jax.vmap(tx.init)(x)
  x_ref = jax.tree.map(lambda v: v[0], x)
  s_ref = inner.init(x_ref)

  def step(x, s, g):  # no num_finished: every micro-batch counts
    u, s = tx.update(g, s, x)
    return optax.apply_updates(x, u), s

  step = jax.jit(jax.vmap(step, axis_name=AXIS))
  for _ in range(STEPS):
    g = jax.tree.map(lambda v: v[:1], _micro_grads(_on_workers(x_ref)))
    x, s = step(x, s, g)
    u, s_ref = inner.update(
      jax.tree.map(lambda v: v[0].mean(0), g), s_ref, x_ref
    )
    x_ref = optax.apply_updates(x_ref, u)
    for k in x:
      np.testing.assert_allclose(x[k][0], x_ref[k], rtol=1e-6, atol=1e-7)
  # Plain gradients (no micro-batch axis) are one micro-batch: SSGD.
  g = jax.tree.map(lambda v: v[:1, 0], _micro_grads(_on_workers(x_ref)))
  baseline = optax_zoo.all_reduce_mean(AXIS, inner=optax.adam(0.05))
  for t in (tx, baseline):
    u, _ = jax.vmap(
      lambda g, p, t=t: t.update(g, t.init(p), p), axis_name=AXIS
    )(g, x)
    if t is tx:
      got = u
  for k in got:
    np.testing.assert_allclose(got[k], u[k], rtol=1e-6)


def test_delay_model_draws():
  mean = (1.0, 2.0, 0.5, 3.0)
  plain = optax_zoo.DelayModel(mean)
  np.testing.assert_array_equal(
    plain.sample(0, N, M), np.broadcast_to(np.array(mean)[:, None], (N, M))
  )
  always = optax_zoo.DelayModel(mean, straggler_prob=1.0, slowdown=3.0)
  np.testing.assert_allclose(
    always.sample(1, N, M), 3.0 * np.array(mean)[:, None] * np.ones(M)
  )
  model = optax_zoo.DelayModel(
    2.0, straggler_prob=0.2, slowdown=5.0, jitter=0.5
  )
  a = model.sample(jax.random.key(3), 2000, 8)
  np.testing.assert_array_equal(a, model.sample(jax.random.key(3), 2000, 8))
  assert a.shape == (2000, 8) and a.dtype == jnp.float32 and np.all(a > 0)
  # Stragglers whole steps at a time, at the rate p: a binomial count.
  ratio = np.asarray(a).mean(1) / 2.0
  slow = ratio > np.sqrt(5.0)
  assert abs(slow.mean() - 0.2) < 4 * np.sqrt(0.2 * 0.8 / 2000)
  # The noise has mean 1 and coefficient of variation `jitter`.
  noise = np.asarray(a)[~slow] / 2.0
  assert abs(noise.mean() - 1.0) < 0.03
  assert abs(noise.std() / noise.mean() - 0.5) < 0.03


def test_finished_microbatches_and_simulated_time():
  times = np.array([[1.0, 1.0, 1.0], [2.0, 0.5, 0.5], [4.0, 4.0, 4.0]])
  np.testing.assert_array_equal(
    optax_zoo.finished_microbatches(times, 2.5), [2, 2, 0]
  )
  np.testing.assert_array_equal(
    optax_zoo.finished_microbatches(times, 3.0), [3, 3, 0]
  )
  np.testing.assert_array_equal(
    optax_zoo.finished_microbatches(times, 0.0), [0, 0, 0]
  )
  comm = optax_zoo.alpha_beta_time(
    'ring_allreduce',
    num_workers=3,
    message_bytes=1e6,
    latency=1e-3,
    bandwidth=1e8,
  )
  kw = {'message_bytes': 1e6, 'latency': 1e-3, 'bandwidth': 1e8}
  # Synchronous SGD waits for the slowest worker; non-blocking for the
  # budget, or less when everyone finished earlier.
  np.testing.assert_allclose(
    optax_zoo.simulated_step_time(times, **kw), 12.0 + comm, rtol=1e-6
  )
  np.testing.assert_allclose(
    optax_zoo.simulated_step_time(times, 2.5, **kw), 2.5 + comm, rtol=1e-6
  )
  np.testing.assert_allclose(
    optax_zoo.simulated_step_time(times, 50.0, **kw), 12.0 + comm, rtol=1e-6
  )


@pytest.mark.parametrize(
  'kwargs, match',
  [
    ({'mean_times': -1.0}, 'mean_times'),
    ({'mean_times': (1.0, -0.5)}, 'mean_times'),
    ({'mean_times': (1.0, float('nan'))}, 'mean_times'),
    ({'mean_times': ()}, 'mean_times'),
    ({'mean_times': 'fast'}, 'mean_times'),
    ({'mean_times': 1.0, 'straggler_prob': 1.5}, 'straggler_prob'),
    ({'mean_times': 1.0, 'straggler_prob': -0.1}, 'straggler_prob'),
    ({'mean_times': 1.0, 'slowdown': 0.5}, 'slowdown'),
    ({'mean_times': 1.0, 'jitter': -1.0}, 'jitter'),
  ],
)
def test_bad_delay_model_raises(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optax_zoo.DelayModel(**kwargs)


def test_bad_inputs_raise():
  model = optax_zoo.DelayModel((1.0, 2.0))
  with pytest.raises(ValueError, match='num_workers'):
    model.sample(0, 3, 2)
  with pytest.raises(ValueError, match='num_microbatches'):
    model.sample(0, 2, 0)
  with pytest.raises(ValueError, match='budget'):
    optax_zoo.finished_microbatches(np.ones((2, 2)), -1.0)
  with pytest.raises(ValueError, match='times'):
    optax_zoo.finished_microbatches(np.array([[1.0, -1.0]]), 1.0)
  with pytest.raises(ValueError, match='budget'):
    optax_zoo.simulated_step_time(
      np.ones((2, 2)), -1.0, message_bytes=0, latency=0, bandwidth=1
    )
  for bad in (None, '', ['workers']):
    with pytest.raises(ValueError, match='axis_name'):
      optax_zoo.nonblocking_sgd(bad)
  with pytest.raises(ValueError, match='inner'):
    optax_zoo.nonblocking_sgd(AXIS, inner='sgd')
  tx = optax_zoo.nonblocking_sgd(AXIS)
  x = {'w': jnp.zeros((2, 3))}
  with pytest.raises(ValueError, match='not bound'):
    tx.update({'w': jnp.zeros((M, 2, 3))}, tx.init(x), x)

  def one_worker(g, f=None, params=x):
    return jax.vmap(
      lambda g: tx.update(g, tx.init(params), params, num_finished=f)[0],
      axis_name=AXIS,
    )(g)

  with pytest.raises(ValueError, match='num_finished'):
    one_worker({'w': jnp.zeros((1, M, 2, 3))}, M + 1)
  with pytest.raises(ValueError, match='shape'):
    one_worker({'w': jnp.zeros((1, M, 3, 2))})
  with pytest.raises(ValueError, match='params'):
    one_worker({'w': jnp.zeros((1, M, 2, 3))}, params=None)
  y = {'w': jnp.zeros((2, 3)), 'b': jnp.zeros(3)}
  with pytest.raises(ValueError, match='micro-batch axis'):
    one_worker({'w': jnp.zeros((1, M, 2, 3)), 'b': jnp.zeros((1, 3))}, None, y)


_MESH_SCRIPT = textwrap.dedent(
  """
  import jax, jax.numpy as jnp, numpy as np, optax
  from jax.sharding import PartitionSpec as P
  import optax_zoo

  N, M, LR, MOMENTUM, STEPS, AXIS = 8, 3, 0.1, 0.9, 3, 'workers'
  assert jax.device_count() == N, jax.devices()
  rng = np.random.default_rng(0)
  scales = rng.uniform(0.5, 2.0, size=(N, M)).astype(np.float32)
  centres = rng.normal(size=(N, M, 5)).astype(np.float32)
  x0 = rng.normal(size=5).astype(np.float32)
  # Fixed draws (the delay model is tested under vmap): stragglers and an
  # idle worker in every step.
  finished = np.array([[3, 2, 0, 1, 3, 3, 2, 1], [0, 1, 3, 3, 2, 0, 1, 2],
                       [1, 1, 1, 0, 3, 2, 3, 3]])
  mesh = optax_zoo.worker_mesh(N, AXIS)
  stacked = P(AXIS)
  tx = optax_zoo.nonblocking_sgd(AXIS, inner=optax.sgd(LR, momentum=MOMENTUM))

  def step(x, s, d, f):
    g = d['scale'][:, None] * (x - d['centre'])  # (M, 5): one per micro-batch
    u, s = tx.update(g, s, x, num_finished=f)
    return optax.apply_updates(x, u), s

  run = jax.jit(optax_zoo.worker_map(
    step, mesh, in_specs=(P(), P(), stacked, stacked), out_specs=(P(), P())))
  data = optax_zoo.shard_workers({'scale': scales, 'centre': centres}, mesh)
  x = optax_zoo.replicate_on_mesh(jnp.asarray(x0), mesh)
  s = optax_zoo.replicate_on_mesh(tx.init(jnp.asarray(x0)), mesh)
  want, mom = x0.astype(np.float64), np.zeros(5)
  for t in range(STEPS):
    f = finished[t]
    x, s = run(x, s, data, optax_zoo.shard_workers(jnp.asarray(f), mesh))
    g = scales[:, :, None] * (want - centres)
    mask = np.arange(M)[None, :] < f[:, None]
    mean = (g * mask[:, :, None]).sum((0, 1)) / f.sum()
    mom = MOMENTUM * mom + mean
    want = want - LR * mom
    np.testing.assert_allclose(optax_zoo.to_host(x), want, rtol=1e-5,
                               atol=1e-6)
  assert int(optax_zoo.to_host(s.count)) == STEPS

  # On the wire: one ring all-reduce of a float32 gradient and the count.
  w = optax_zoo.wire_bytes(run, x, s, data,
                           optax_zoo.shard_workers(jnp.full(N, M), mesh))
  assert {c.kind for c in w.collectives} == {'all-reduce'}, w.collectives
  want_bytes = 2 * (N - 1) / N * (5 * 4 + 4)
  assert abs(w.per_worker - want_bytes) < 1e-6, (w.per_worker, want_bytes)
  print('OK')
  """
)


def test_nonblocking_sgd_on_an_8_device_mesh():
  tu.run_on_cpu_devices(_MESH_SCRIPT)
