"""FedAvg with local continual training on clients simulated with
``jax.vmap(..., axis_name=...)``, and its helpers."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from optax_zoo._src import test_utils as tu

AXIS = 'clients'
K, LR = 4, 0.1
_RNG = np.random.default_rng(0)
# Client k's loss: the sum over leaves of 0.5 * s_k * ||x - c_k||^2.
SCALES = _RNG.uniform(0.5, 2.0, size=8)
CENTRES = {'w': _RNG.normal(size=(8, 2, 3)), 'b': _RNG.normal(size=(8, 3))}
X0 = {'w': _RNG.normal(size=(2, 3)), 'b': _RNG.normal(size=(3,))}


def _grads(x):
  """Each client's gradient at its own parameters (stacked, numpy)."""
  out = {}
  for k, v in x.items():
    n = len(v)
    s = SCALES[:n].reshape(-1, *[1] * (np.ndim(v) - 1))
    out[k] = s * (np.asarray(v, np.float64) - CENTRES[k][:n])
  return out


def _stack(tree, n=K):
  return jax.tree.map(
    lambda x: jnp.asarray(np.broadcast_to(x, (n, *np.shape(x))), jnp.float32),
    tree,
  )


def _trajectory(tx, steps, n=K, grads_fn=_grads, **extra):
  """The stacked parameters and state after each of ``steps`` steps of
  ``tx`` run per client under vmap, from X0 on every client; ``extra``
  update arguments carry a leading client axis."""

  def step(x, s, g, extra):
    u, s = tx.update(g, s, x, **extra)
    return optax.apply_updates(x, u), s

  step = jax.jit(jax.vmap(step, axis_name=AXIS))
  x = _stack(X0, n)
  state = jax.vmap(tx.init)(x)
  out = []
  for _ in range(steps):
    g = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), grads_fn(x))
    x, state = step(x, state, g, extra)
    out.append((x, state))
  return out


def _numpy_fedavg(steps, h, lr, lam=0.0, n=K):
  """McMahan et al.'s FedAvg (all clients, SGD) with Yao & Sun's uniform
  penalty lam * (x - global), in float64."""
  x = {k: np.broadcast_to(v, (n, *v.shape)).copy() for k, v in X0.items()}
  glob = {k: v.copy() for k, v in X0.items()}
  out = []
  for t in range(steps):
    g = _grads(x)
    x = {k: x[k] - lr * (g[k] + lam * (x[k] - glob[k])) for k in x}
    if (t + 1) % h == 0:
      glob = {k: v.mean(axis=0) for k, v in x.items()}
      x = {k: np.broadcast_to(glob[k], x[k].shape).copy() for k in x}
    out.append(x)
  return out


def _all_equal_across_clients(tree, rtol=1e-6):
  return all(
    np.allclose(a, a[:1], rtol=rtol, atol=1e-7)
    for a in map(np.asarray, jax.tree.leaves(tree))
  )


def test_one_local_step_all_clients_equals_synchronous_sgd():
  # Linear in the gradients: with momentum too, the average of the clients'
  # steps is the step on the average gradient.
  inner = optax.sgd(LR, momentum=0.9)
  fed = _trajectory(optax_zoo.fedavg(inner, AXIS, local_steps=1), 6)
  ssgd = _trajectory(optax_zoo.all_reduce_mean(AXIS, inner=inner), 6)
  for (x_f, _), (x_s, _) in zip(fed, ssgd, strict=True):
    tu.assert_trees_close(x_f, x_s, rtol=1e-5, atol=1e-6)


def test_averages_exactly_every_local_steps_and_matches_numpy():
  h, steps = 3, 8
  tx = optax_zoo.fedavg(optax.sgd(LR), AXIS, local_steps=h)
  got = _trajectory(tx, steps)
  want = _numpy_fedavg(steps, h, LR)
  for t, ((x, state), x_np) in enumerate(zip(got, want, strict=True)):
    tu.assert_trees_close(x, x_np, rtol=1e-5, atol=1e-6)
    round_end = (t + 1) % h == 0
    assert _all_equal_across_clients(x) == round_end, t
    # Right after a round the global model is the clients' model.
    if round_end:
      # (up to one rounding of x + (global - x))
      tu.assert_trees_equal(
        optax_zoo.eval_params(state, x), state.global_params
      )
      tu.assert_trees_close(state.global_params, x, rtol=1e-6, atol=1e-7)
      assert _all_equal_across_clients(state.global_params, rtol=0)
  assert int(got[-1][1].count[0]) == steps


def test_uniform_penalty_matches_numpy():
  h, steps, lam = 4, 8, 0.5
  tx = optax_zoo.fedavg(
    optax.sgd(LR), AXIS, local_steps=h, continual_weight=lam
  )
  got = _trajectory(tx, steps)
  want = _numpy_fedavg(steps, h, LR, lam)
  for (x, _), x_np in zip(got, want, strict=True):
    tu.assert_trees_close(x, x_np, rtol=1e-5, atol=1e-6)


def _loss_fn(params, batch):
  """Linear regression, mean squared error of a batch."""
  pred = batch['x'] @ params['w'] + params['b']
  return jnp.mean(0.5 * jnp.sum((pred - batch['y']) ** 2, axis=-1))


_PROXY = {'x': _RNG.normal(size=(5, 2)), 'y': _RNG.normal(size=(5, 3))}


def _numpy_fisher(params):
  x, y = _PROXY['x'], _PROXY['y']
  r = x @ np.asarray(params['w'], np.float64) + np.asarray(params['b']) - y
  per_w = x[:, :, None] * r[:, None, :]  # d loss_i / d w, per example
  return {'w': np.mean(per_w**2, axis=0), 'b': np.mean(r**2, axis=0)}


def test_fisher_importance_is_mean_squared_per_example_gradient():
  proxy = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), _PROXY)
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), X0)
  got = optax_zoo.fisher_importance(_loss_fn, params, proxy)
  tu.assert_trees_close(got, _numpy_fisher(X0), rtol=1e-5, atol=1e-7)


def _importance_fn(params):
  proxy = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), _PROXY)
  return optax_zoo.fisher_importance(_loss_fn, params, proxy)


def test_penalty_gradient_is_weighted_pull_to_global_model():
  # inner = scale(-lr): the update of a step inside a round is -lr times
  # the penalized gradient, g + lam * F * (x - global).
  lam, h = 0.7, 3
  tx = optax_zoo.fedavg(
    optax.scale(-LR),
    AXIS,
    local_steps=h,
    continual_weight=lam,
    importance_fn=_importance_fn,
  )
  x = _stack(X0)
  state = jax.vmap(tx.init)(x)
  update = jax.jit(jax.vmap(tx.update, axis_name=AXIS))
  fisher = _numpy_fisher(X0)
  glob = X0
  for t in range(2 * h):
    g = _grads(x)
    u, state = update(jax.tree.map(jnp.float32, g), state, x)
    if (t + 1) % h:
      want = {
        k: -LR
        * (g[k] + lam * fisher[k] * (np.asarray(x[k], np.float64) - glob[k]))
        for k in g
      }
      tu.assert_trees_close(u, want, rtol=1e-5, atol=1e-6)
    x = optax.apply_updates(x, u)
    if (t + 1) % h == 0:
      # The server's importance is recomputed on the new global model.
      glob = jax.tree.map(lambda a: np.asarray(a[0], np.float64), x)
      fisher = _numpy_fisher(glob)
      tu.assert_trees_close(
        jax.tree.map(lambda a: a[0], state.importance),
        fisher,
        rtol=1e-5,
        atol=1e-7,
      )


_STATIC = ('local_steps', 'client_fraction', 'importance_fn', 'key')


def test_continual_weight_zero_is_plain_fedavg():
  plain = optax_zoo.fedavg(optax.adam(LR), AXIS, local_steps=3)
  zero = optax_zoo.fedavg(
    optax.adam(LR),
    AXIS,
    local_steps=3,
    continual_weight=0.0,
    importance_fn=_importance_fn,
  )
  # A traced zero weight takes the penalty path and must add nothing.
  traced = optax.inject_hyperparams(
    optax_zoo.fedavg,
    static_args=('local_steps', 'client_fraction', 'importance_fn', 'key'),
  )(
    inner=optax.adam(LR),
    axis_name=AXIS,
    local_steps=3,
    continual_weight=0.0,
    importance_fn=_importance_fn,
  )
  want = _trajectory(plain, 7)
  for tx in (zero, traced):
    for (x, _), (x_want, _) in zip(_trajectory(tx, 7), want, strict=True):
      tu.assert_trees_equal(x, x_want)


def test_one_client_one_local_step_is_exactly_inner():
  inner = optax.adam(LR)
  fed = _trajectory(optax_zoo.fedavg(inner, AXIS, local_steps=1), 5, n=1)
  x, s = _stack(X0, 1), jax.vmap(inner.init)(_stack(X0, 1))
  for x_fed, _ in fed:
    u, s = jax.vmap(inner.update)(jax.tree.map(jnp.float32, _grads(x)), s, x)
    x = optax.apply_updates(x, u)
    tu.assert_trees_equal(x_fed, x)


def _participants(tx, n, rounds, h, **extra):
  """Per round, the set of clients that trained (moved in its first step),
  and the trajectory."""
  traj = _trajectory(tx, rounds * h, n=n, **extra)
  x_prev = _stack(X0, n)
  sets = []
  for t, (x, _) in enumerate(traj):
    if t % h == 0:
      moved = np.any(np.asarray(x['w'] - x_prev['w']) != 0, axis=(1, 2))
      sets.append(frozenset(np.flatnonzero(moved).tolist()))
    x_prev = x
  return sets, traj


def test_client_sampling_is_seeded_and_draws_the_requested_count():
  n, h, rounds = 8, 2, 6
  weights = jnp.arange(1.0, n + 1.0)  # the clients' example counts

  def build(key):
    return optax_zoo.fedavg(
      optax.sgd(LR), AXIS, local_steps=h, client_fraction=0.375, key=key
    )

  sets, traj = _participants(build(1), n, rounds, h, client_weight=weights)
  again, _ = _participants(build(1), n, rounds, h, client_weight=weights)
  other, _ = _participants(build(2), n, rounds, h, client_weight=weights)
  assert [len(s) for s in sets] == [3] * rounds  # round(0.375 * 8)
  assert sets == again
  assert sets != other
  assert len(set(sets)) > 1  # a new draw each round
  # The global model is the client_weight-weighted mean of the
  # participants' local models; the others held the global model.
  x_mid, _ = traj[2 * h]
  x_end, _ = traj[2 * h + 1]
  g = np.asarray(_grads(x_mid)['w'], np.float64)
  local = np.asarray(x_mid['w'], np.float64) - LR * g
  chosen = sorted(sets[2])
  w = np.asarray(weights)[chosen]
  want = np.tensordot(w, local[chosen], axes=1) / w.sum()
  np.testing.assert_allclose(x_end['w'], np.broadcast_to(want, (n, 2, 3)), 1e-5)
  idle = np.array([k for k in range(n) if k not in sets[2]])
  before = np.asarray(traj[2 * h - 1][0]['w'])
  np.testing.assert_array_equal(np.asarray(x_mid['w'])[idle], before[idle])


def test_bad_input_raises_naming_the_argument():
  good = {'inner': optax.sgd(LR), 'axis_name': AXIS, 'local_steps': 2}
  bad = (
    {'local_steps': 0},
    {'local_steps': 1.5},
    {'client_fraction': 0.0},
    {'client_fraction': 1.5},
    {'continual_weight': -1.0},
    {'axis_name': None},
    {'inner': 'sgd'},
    {'importance_fn': 3},
    {'key': 'seed'},
  )
  for override in bad:
    (name,) = override
    with pytest.raises(ValueError, match=name):
      optax_zoo.fedavg(**{**good, **override})
  tx = optax_zoo.fedavg(**good)
  x = jnp.zeros(3)
  with pytest.raises(ValueError, match='not bound'):
    tx.update(x, tx.init(x), x)


def test_dirichlet_split_covers_every_index_once():
  labels = np.random.default_rng(3).integers(0, 10, size=2000)
  for alpha in (0.1, 1.0, 100.0):
    shards = optax_zoo.dirichlet_split(labels, 10, alpha, seed=0)
    assert len(shards) == 10 and all(len(s) for s in shards)
    np.testing.assert_array_equal(
      np.sort(np.concatenate(shards)), np.arange(len(labels))
    )
  first = optax_zoo.dirichlet_split(labels, 10, 0.1, seed=0)
  again = optax_zoo.dirichlet_split(labels, 10, 0.1, seed=0)
  other = optax_zoo.dirichlet_split(labels, 10, 0.1, seed=1)
  for a, b in zip(first, again, strict=True):
    np.testing.assert_array_equal(a, b)
  assert any(len(a) != len(b) for a, b in zip(first, other, strict=True))


def test_dirichlet_split_label_skew_follows_alpha():
  labels = np.random.default_rng(4).integers(0, 10, size=4000)
  overall = np.bincount(labels, minlength=10) / len(labels)

  def skew(alpha):
    """Mean over clients: labels holding > 5% of the client's data, and
    the total variation distance to the overall label distribution."""
    shards = optax_zoo.dirichlet_split(labels, 10, alpha, seed=1)
    hist = [np.bincount(labels[s], minlength=10) / len(s) for s in shards]
    many = np.mean([(h > 0.05).sum() for h in hist])
    tv = np.mean([0.5 * np.abs(h - overall).sum() for h in hist])
    return many, tv

  labels_small, tv_small = skew(0.05)
  labels_mid, tv_mid = skew(1.0)
  labels_large, tv_large = skew(1000.0)
  assert labels_small < 3 < labels_mid < labels_large == 10
  assert tv_small > 0.6 > tv_mid > 0.2 > 0.05 > tv_large


def test_dirichlet_split_rejects_bad_input():
  labels = np.arange(20) % 4
  for kwargs, name in (
    ({'alpha': 0.0}, 'alpha'),
    ({'alpha': -1.0}, 'alpha'),
    ({'num_clients': 0}, 'num_clients'),
  ):
    with pytest.raises(ValueError, match=name):
      optax_zoo.dirichlet_split(
        labels, **{'num_clients': 3, 'alpha': 1.0, **kwargs}, seed=0
      )
  with pytest.raises(ValueError, match='without examples'):
    optax_zoo.dirichlet_split(np.arange(3) % 2, 10, 1.0, seed=0)
  with pytest.raises(ValueError, match='labels'):
    optax_zoo.dirichlet_split(np.zeros(5), 2, 1.0, seed=0)


# One subprocess: the device count is fixed when JAX starts. FedAvg with
# client sampling, client weights, momentum and Fisher-weighted continual
# training under jax.shard_map on 8 CPU devices equals its vmapped twin.
_MESH_SCRIPT = textwrap.dedent(
  """
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import PartitionSpec as P
import optax_zoo
N, AXIS, H = 8, 'workers', 3
rng = np.random.default_rng(0)
centres = rng.normal(size=(N, 5)).astype(np.float32)
x0 = np.broadcast_to(rng.normal(size=5), (N, 5)).astype(np.float32)
mesh = optax_zoo.worker_mesh(N, AXIS)
proxy = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
loss = lambda p, b: jnp.mean(jnp.sum((b - p) ** 2, -1))
def make():
  return optax_zoo.fedavg(optax.sgd(0.1, momentum=0.9), AXIS, local_steps=H,
    client_fraction=0.5, continual_weight=0.3, key=3,
    importance_fn=lambda p: optax_zoo.fisher_importance(loss, p, proxy))
def step(x, s, c, w):
  u, s = tx.update(x - c, s, x, client_weight=w)
  return optax.apply_updates(x, u), s
tx = make()
weights = np.arange(1.0, N + 1, dtype=np.float32)
# vmapped twin
vs = jax.jit(jax.vmap(step, axis_name=AXIS))
xv, sv = jnp.asarray(x0), jax.vmap(tx.init)(jnp.asarray(x0))
params = optax_zoo.shard_workers(jnp.asarray(x0), mesh)
state = optax_zoo.init_on_workers(tx, params, mesh)
specs = optax_zoo.worker_specs(state, AXIS)
data = optax_zoo.shard_workers(
  (jnp.asarray(centres), jnp.asarray(weights)), mesh)
run = jax.jit(optax_zoo.worker_map(lambda x, s, d: step(x, s, *d), mesh,
  in_specs=(P(AXIS), specs, P(AXIS)), out_specs=(P(AXIS), specs)))
for t in range(2 * H + 1):
  params, state = run(params, state, data)
  xv, sv = vs(xv, sv, jnp.asarray(centres), jnp.asarray(weights))
  got = optax_zoo.to_host(params)
  np.testing.assert_allclose(got, xv, rtol=1e-5, atol=1e-6)
  assert np.allclose(got, got[:1], rtol=1e-6) == ((t + 1) % H == 0), t
print('OK')
  """
)


def test_on_an_8_device_mesh_equals_vmapped_clients():
  tu.run_on_cpu_devices(_MESH_SCRIPT)
