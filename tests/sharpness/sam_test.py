"""SAM, ASAM and GSAM against their formulas and references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optax_zoo
from optax_zoo._src import extra_args
from optax_zoo._src import test_utils as tu
from optax_zoo.training import Dataset, ResNet1D, train

STEPS = 60
LR, MOMENTUM = 0.05, 0.9


def _quadratic():
  """A random SPD quadratic ``0.5 x'Ax - b'x`` in float64 NumPy."""
  rng = np.random.default_rng(0)
  q = rng.normal(size=(5, 5))
  a = q @ q.T / 5 + 0.5 * np.eye(5)
  b = rng.normal(size=5)
  return a, b


def _run_jax(tx, grad, x0, steps=STEPS, grad_fn=None):
  """``steps`` jitted steps of ``tx`` on ``grad``; the iterates."""
  grad_fn = grad_fn or (lambda p, index=0, num_splits=1: grad(p))

  def step(carry, _):
    x, s = carry
    u, s = tx.update(grad(x), s, x, grad_fn=grad_fn)
    x = optax.apply_updates(x, u)
    return (x, s), x

  _, xs = jax.jit(lambda x: jax.lax.scan(step, (x, tx.init(x)), None, steps))(
    x0
  )
  return jax.tree.map(np.asarray, xs)


def _momentum_sgd(direction, x0, steps=STEPS, lr=lambda t: LR):
  """Heavy-ball SGD (optax's trace) on ``direction(x, t)``, float64."""
  x, m, xs = np.array(x0, np.float64), 0.0, []
  for t in range(steps):
    m = MOMENTUM * m + direction(x, t)
    x = x - lr(t) * m
    xs.append(x.copy())
  return np.stack(xs)


def _inner(lr=LR):
  return optax_zoo.sgd(lr, momentum=MOMENTUM)


def test_sam_matches_closed_form_step_on_quadratic():
  a, b = _quadratic()
  rho, x0 = 0.1, np.linspace(-1, 2, 5)

  def sam_direction(x, t):
    g = a @ x - b
    return a @ (x + rho * g / np.linalg.norm(g)) - b

  expected = _momentum_sgd(sam_direction, x0)
  af, bf = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  got = _run_jax(
    optax_zoo.sam(_inner(), rho=rho),
    lambda x: af @ x - bf,
    jnp.asarray(x0, jnp.float32),
  )
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
  # SAM is not the inner optimizer here: the check can tell them apart.
  plain = _momentum_sgd(lambda x, t: a @ x - b, x0)
  assert np.max(np.abs(plain - expected)) > 1e-2


def _two_leaf_problem():
  """A separable quadratic on a kernel and a bias, float64 NumPy."""
  rng = np.random.default_rng(1)
  shapes = {'b': (4,), 'w': (3, 4)}
  c = {k: rng.uniform(0.5, 2.0, s) for k, s in shapes.items()}
  t = {k: rng.normal(size=s) for k, s in shapes.items()}
  x0 = {k: rng.normal(size=s) for k, s in shapes.items()}
  return c, t, x0


def test_asam_matches_its_formula():
  c, t, x0 = _two_leaf_problem()
  rho, eta = 0.3, 0.01

  def grad_np(x):
    return {k: c[k] * (x[k] - t[k]) for k in x}

  def asam_direction(xflat, step):
    x = {'b': xflat[:4], 'w': xflat[4:].reshape(3, 4)}
    g = grad_np(x)
    tw = {'b': np.ones(4), 'w': np.abs(x['w']) + eta}  # weights only
    norm = np.sqrt(sum(np.sum((tw[k] * g[k]) ** 2) for k in g))
    e = {k: rho * tw[k] ** 2 * g[k] / norm for k in g}
    gs = grad_np({k: x[k] + e[k] for k in x})
    return np.concatenate([gs['b'], gs['w'].ravel()])

  flat0 = np.concatenate([x0['b'], x0['w'].ravel()])
  expected = _momentum_sgd(asam_direction, flat0)
  cj = jax.tree.map(lambda z: jnp.asarray(z, jnp.float32), c)
  tj = jax.tree.map(lambda z: jnp.asarray(z, jnp.float32), t)
  got = _run_jax(
    optax_zoo.asam(_inner(), rho=rho, eta=eta),
    lambda x: jax.tree.map(lambda xx, cc, tt: cc * (xx - tt), x, cj, tj),
    jax.tree.map(lambda z: jnp.asarray(z, jnp.float32), x0),
  )
  got = np.concatenate([got['b'], got['w'].reshape(STEPS, -1)], axis=1)
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def _gsam_gradient_np(
  grad,
  x,
  rho_max,
  rho_min,
  alpha,
  lr,
  lr_max,
  lr_min,
  eps,
  adaptive_perturbation,
  minimize_fp,
):
  """big_vision's ``gsam_gradient``, transcribed to NumPy on one vector."""
  g_clean = grad(x)
  g_len = np.linalg.norm(g_clean)
  if lr_max == lr_min:
    rho = rho_max
  else:
    rho = rho_min + (rho_max - rho_min) * (lr - lr_min) / (lr_max - lr_min)
  if adaptive_perturbation:
    x_sam = x + np.abs(x) * rho * g_clean / (g_len + eps)
  else:
    x_sam = x + rho * g_clean / (g_len + eps)
  g_robust = grad(x_sam)
  if minimize_fp:
    g_robust_n = g_robust / np.linalg.norm(g_robust)
    residual = g_clean - np.vdot(g_robust_n, g_clean) * g_robust_n
    return g_robust - residual * alpha
  g_clean_n = g_clean / g_len
  residual = g_robust - np.vdot(g_clean_n, g_robust) * g_clean_n
  return g_clean + residual * alpha


@pytest.mark.parametrize(
  'adaptive_perturbation,minimize_fp', [(False, True), (True, False)]
)
def test_gsam_matches_big_vision_transcription(
  adaptive_perturbation, minimize_fp
):
  a, b = _quadratic()
  quartic = np.linspace(0.2, 1.0, 5)

  def grad_np(x):  # a non-quadratic loss: g_robust is not parallel to g
    return a @ x - b + quartic * x**3

  lr_max, lr_min = 0.05, 0.005
  schedule = optax.linear_schedule(lr_max, lr_min, STEPS)
  kw = dict(rho_max=0.2, rho_min=0.02, alpha=0.4, lr_max=lr_max, lr_min=lr_min)
  lr_np = lambda t: float(schedule(t))

  expected = _momentum_sgd(
    lambda x, t: _gsam_gradient_np(
      grad_np,
      x,
      lr=lr_np(t),
      eps=1e-12,
      adaptive_perturbation=adaptive_perturbation,
      minimize_fp=minimize_fp,
      **kw,
    ),
    np.linspace(-1, 2, 5),
    lr=lr_np,
  )
  af, bf = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  qf = jnp.asarray(quartic, jnp.float32)
  tx = optax_zoo.gsam(
    optax_zoo.sgd(schedule, momentum=MOMENTUM),
    lr_schedule=schedule,
    adaptive_perturbation=adaptive_perturbation,
    minimize_fp=minimize_fp,
    **kw,
  )
  got = _run_jax(
    tx,
    lambda x: af @ x - bf + qf * x**3,
    jnp.linspace(-1.0, 2.0, 5),
  )
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_gsam_with_equal_rhos_and_zero_alpha_is_sam():
  a, b = _quadratic()
  af, bf = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  grad = lambda x: af @ x - bf
  x0 = jnp.linspace(-1.0, 2.0, 5)
  got = _run_jax(
    optax_zoo.gsam(_inner(), rho_max=0.1, rho_min=0.1, alpha=0.0), grad, x0
  )
  want = _run_jax(optax_zoo.sam(_inner(), rho=0.1), grad, x0)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_sam_equals_optax_contrib_sam_opaque_sync_period_2():
  a, b = _quadratic()
  af, bf = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  grad = lambda x: af @ x - bf
  rho, x0 = 0.1, jnp.linspace(-1.0, 2.0, 5)
  contrib = optax.contrib.sam(
    optax.sgd(LR, momentum=MOMENTUM),
    optax.chain(optax.contrib.normalize(), optax.sgd(rho)),
    sync_period=2,
    opaque_mode=True,
  )
  want = _run_jax(contrib, grad, x0, grad_fn=lambda p, i: grad(p))
  got = _run_jax(optax_zoo.sam(_inner(), rho=rho), grad, x0)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def _all_three(inner, rho=0.1):
  return {
    'sam': optax_zoo.sam(inner, rho=rho),
    'asam': optax_zoo.asam(inner, rho=rho),
    'gsam': optax_zoo.gsam(inner, rho_max=rho, rho_min=rho, alpha=0.3),
  }


@pytest.mark.parametrize('name', ['sam', 'asam', 'gsam'])
def test_stationary_point_gives_inner_step_of_zero_gradient(name):
  params = {'w': jnp.zeros((3, 2)), 'b': jnp.zeros(2)}
  grad_fn = jax.grad(lambda p: sum(jnp.sum(x**2) for x in jax.tree.leaves(p)))
  tx = _all_three(_inner())[name]
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = jax.jit(
    lambda s: tx.update(zero, s, params, grad_fn=lambda p, *_: grad_fn(p))
  )(tx.init(params))
  inner_updates, _ = _inner().update(zero, _inner().init(params), params)
  tu.assert_trees_equal(updates, inner_updates)


def _random_grads(i):
  k1, k2 = jax.random.split(jax.random.key(i))
  return {'w': jax.random.normal(k1, (3, 4)), 'b': jax.random.normal(k2, (4,))}


@pytest.mark.parametrize('name', ['sam', 'asam'])
@pytest.mark.parametrize('injected', [False, True])
def test_rho_zero_is_inner_to_the_bit(name, injected):
  factory = getattr(optax_zoo, name)
  if injected:  # a traced rho
    tx = optax.inject_hyperparams(factory, static_args=('num_splits',))(
      inner=_inner(), rho=0.0
    )
  else:
    tx = factory(_inner(), rho=0.0)
  inner = _inner()
  grad_fn = lambda p, *_: jax.tree.map(lambda x: 3.0 * x + 1.0, p)

  @jax.jit
  def run(params):
    def step(carry, i):
      p, s, q, r = carry
      g = _random_grads(i)
      u, s = tx.update(g, s, p, grad_fn=grad_fn)
      v, r = inner.update(g, r, q)
      return (optax.apply_updates(p, u), s, optax.apply_updates(q, v), r), None

    carry = (params, tx.init(params), params, inner.init(params))
    (p, _, q, _), _ = jax.lax.scan(step, carry, jnp.arange(20))
    return p, q

  p, q = run(_random_grads(99))
  tu.assert_trees_equal(p, q)


# m-sharpness: 4 workers with 2 examples each, or one batch of 8 in 4 parts.
_WORKERS, _PER_WORKER = 4, 2


def _regression():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(_WORKERS * _PER_WORKER, 3)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(_WORKERS * _PER_WORKER,)), jnp.float32)
  params = {'w': jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}
  return params, (x, y)


def _losses(params, batch):
  """Per-example losses of a small nonlinear regression."""
  x, y = batch
  return (jnp.sum(jnp.tanh(x @ params['w']), axis=1) - y) ** 2


def _batch_grad(params, batch):
  return jax.grad(lambda p: jnp.mean(_losses(p, batch)))(params)


def _hand_m_sharpness(params, batch, rho, *, synced, steps=3):
  """SAM with per-part perturbations, part by part in Python, then SGD."""
  x, y = batch
  parts = [
    (
      x[i * _PER_WORKER : (i + 1) * _PER_WORKER],
      y[i * _PER_WORKER : (i + 1) * _PER_WORKER],
    )
    for i in range(_WORKERS)
  ]
  for _ in range(steps):
    grads = [_batch_grad(params, part) for part in parts]
    if synced:
      mean = jax.tree.map(lambda *g: sum(g) / _WORKERS, *grads)
      grads = [mean] * _WORKERS
    sams = []
    for g, part in zip(grads, parts, strict=True):
      scale = rho / jnp.sqrt(sum(jnp.sum(z**2) for z in jax.tree.leaves(g)))
      ascent = jax.tree.map(jnp.add, params, jax.tree.map(scale.__mul__, g))
      sams.append(_batch_grad(ascent, part))
    sam_grad = jax.tree.map(lambda *g: sum(g) / _WORKERS, *sams)
    params = jax.tree.map(lambda p, g: p - LR * g, params, sam_grad)
  return params


def _vmapped_workers(params, batch, tx, steps=3):
  x, y = batch
  shards = (
    x.reshape(_WORKERS, _PER_WORKER, -1),
    y.reshape(_WORKERS, _PER_WORKER),
  )

  def worker(shard):
    grad_fn = extra_args.make_grad_fn(_losses, shard)
    p, s = params, tx.init(params)
    for _ in range(steps):
      u, s = tx.update(grad_fn(p), s, p, grad_fn=grad_fn)
      p = optax.apply_updates(p, u)
    return p

  out = jax.jit(jax.vmap(worker, axis_name='workers'))(shards)
  # Every worker holds the same parameters after the averaged step.
  for leaf in jax.tree.leaves(out):
    np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[0], leaf.shape))
  return jax.tree.map(lambda z: z[0], out)


@pytest.mark.parametrize('synced', [False, True])
def test_m_sharpness_under_vmap_matches_per_worker_computation(synced):
  params, batch = _regression()
  rho = 0.5
  tx = optax_zoo.sam(
    optax_zoo.sgd(LR),
    rho=rho,
    axis_name='workers',
    sync_perturbation=synced,
  )
  got = _vmapped_workers(params, batch, tx)
  want = _hand_m_sharpness(params, batch, rho, synced=synced)
  tu.assert_trees_close(got, want, rtol=1e-5, atol=1e-6)
  # Per-worker and synced perturbations differ: the check can tell.
  other = _hand_m_sharpness(params, batch, rho, synced=not synced)
  assert not np.allclose(got['w'], other['w'], rtol=1e-4)


def test_num_splits_matches_per_part_computation():
  params, batch = _regression()
  rho = 0.5
  tx = optax_zoo.sam(optax_zoo.sgd(LR), rho=rho, num_splits=_WORKERS)
  grad_fn = extra_args.make_grad_fn(_losses, batch)

  @jax.jit
  def run(p):
    s = tx.init(p)
    for _ in range(3):
      u, s = tx.update(grad_fn(p), s, p, grad_fn=grad_fn)
      p = optax.apply_updates(p, u)
    return p

  want = _hand_m_sharpness(params, batch, rho, synced=False)
  tu.assert_trees_close(run(params), want, rtol=1e-5, atol=1e-6)
  whole = optax_zoo.sam(optax_zoo.sgd(LR), rho=rho)
  p, s = params, whole.init(params)
  for _ in range(3):
    u, s = whole.update(grad_fn(p), s, p, grad_fn=grad_fn)
    p = optax.apply_updates(p, u)
  assert not np.allclose(p['w'], want['w'], rtol=1e-4)


def _tiny_data():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(48, 40)).astype(np.float32)
  y = rng.integers(0, 3, 48).astype(np.int32)
  return Dataset(x[:32], y[:32], x[32:], y[32:], num_classes=3, name='tiny')


def test_batchnorm_statistics_come_from_the_clean_pass():
  data = _tiny_data()

  def run(tx):
    model = ResNet1D(3, channels=4, num_blocks=1, rngs=nnx.Rngs(0))
    result = train(model, tx, data, steps=1, batch_size=16, progress=False)
    return result.model_state, result.params

  sgd_stats, sgd_params = run(_inner(0.5))
  sam_stats, sam_params = run(optax_zoo.sam(_inner(0.5), rho=2.0))
  stats = lambda s: nnx.state(s, nnx.BatchStat)
  # SAM's statistics are SGD's: the clean pass's, to roundoff (two
  # programs; XLA's classic CPU emitters round one batch mean 1 ulp apart,
  # 4e-7 relative). Statistics of the perturbed pass (weights moved by
  # rho=2) are not within 1e-6 of them.
  tu.assert_trees_close(sgd_stats, sam_stats, rtol=1e-6, atol=1e-9)
  init = nnx.state(
    ResNet1D(3, channels=4, num_blocks=1, rngs=nnx.Rngs(0)), nnx.BatchStat
  )
  assert not np.allclose(  # the step did update the statistics
    jax.tree.leaves(stats(sam_stats))[0], jax.tree.leaves(init)[0]
  )
  assert not np.allclose(  # and SAM did move the weights differently
    jax.tree.leaves(sam_params)[0], jax.tree.leaves(sgd_params)[0]
  )


def test_works_inside_chain_and_multisteps():
  params, batch = _regression()
  grad_fn = extra_args.make_grad_fn(_losses, batch)
  alone = optax_zoo.sam(optax_zoo.sgd(LR), rho=0.5)
  chained = optax.chain(optax.identity(), alone, optax.scale(1.0))
  multi = optax.MultiSteps(alone, every_k_schedule=1)
  outs = []
  for tx in (alone, chained, multi):
    u, _ = jax.jit(
      lambda p, s, tx=tx: tx.update(grad_fn(p), s, p, grad_fn=grad_fn)
    )(params, tx.init(params))
    outs.append(u)
  tu.assert_trees_close(outs[1], outs[0], rtol=1e-7)
  tu.assert_trees_close(outs[2], outs[0], rtol=1e-7)


def test_bfloat16_params_keep_their_dtype_and_norm_in_float32():
  params = {'w': jnp.full((64, 64), 3.0, jnp.bfloat16)}
  grad_fn = lambda p, *_: jax.tree.map(lambda x: x * 1, p)
  tx = optax_zoo.sam(optax.sgd(1.0), rho=64.0)
  updates, _ = tx.update(
    grad_fn(params), tx.init(params), params, grad_fn=grad_fn
  )
  assert updates['w'].dtype == jnp.bfloat16
  # ||g|| = 3 * 64 = 192 and e = 64 * 3 / 192 = 1 exactly; a bfloat16 sum
  # of 4096 squares would have rounded the norm.
  np.testing.assert_array_equal(np.asarray(updates['w'], np.float32), -4.0)


@pytest.mark.parametrize(
  'factory,kwargs,name',
  [
    (optax_zoo.sam, {'rho': -0.1}, 'rho'),
    (optax_zoo.sam, {'num_splits': 0}, 'num_splits'),
    (optax_zoo.sam, {'sync_perturbation': True}, 'sync_perturbation'),
    (optax_zoo.asam, {'eta': -1.0}, 'eta'),
    (optax_zoo.asam, {'mask': {'w': False}}, 'mask'),
    (optax_zoo.gsam, {'rho_min': 1.0, 'rho_max': 0.1}, 'rho_min'),
    (optax_zoo.gsam, {'lr_schedule': 0.1}, 'lr_max'),
    (
      optax_zoo.gsam,
      {'lr_schedule': 0.1, 'lr_max': 0.1, 'lr_min': 0.2},
      'lr_min',
    ),
  ],
)
def test_bad_arguments_raise_at_construction(factory, kwargs, name):
  with pytest.raises(ValueError, match=name):
    factory(_inner(), **kwargs)


@pytest.mark.parametrize('name', ['sam', 'asam', 'gsam'])
def test_inner_must_be_a_transform_and_grad_fn_given(name):
  factory = getattr(optax_zoo, name)
  with pytest.raises(ValueError, match='inner'):
    factory('sgd')
  tx = factory(_inner())
  params = jnp.ones(3)
  with pytest.raises(ValueError, match='grad_fn'):
    tx.update(params, tx.init(params), params)
