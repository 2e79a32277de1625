"""K-FAC: the capture, the factors against dense per-example ground truth,
the preconditioner's limits, and the method in a user's training loop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optax_zoo
from optax_zoo import training
from optax_zoo._src import layers as layers_lib


class _Net(nnx.Module):
  """Conv (SAME, bias) -> tanh -> Linear: both layer kinds, T > 1."""

  def __init__(self, rngs):
    self.conv = nnx.Conv(2, 3, (3,), padding='SAME', rngs=rngs)
    self.lin = nnx.Linear(3 * 5, 4, rngs=rngs)

  def __call__(self, x):
    h = jnp.tanh(self.conv(x))
    return self.lin(h.reshape(h.shape[0], -1))


def _ce(model, x, y):
  logits = model(x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@functools.cache
def _problem(batch=6):
  model = _Net(nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (batch, 5, 2))
  y = jnp.arange(batch) % 4
  return model, x, y


def _stats(model, x, y, **kw):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return optax_zoo.kfac_layer_stats(graphdef, params, rest, _ce, x, y, **kw)


def test_capture_rows_reproduce_the_kernel_gradient():
  model, x, y = _problem()
  loss, grads, _, stats = _stats(model, x, y)
  np.testing.assert_allclose(loss, _ce(model, x, y), rtol=1e-6)
  for name in ('conv', 'lin'):
    s = stats[name]
    # grad W = sum_b a_b^T g_b / B (g is each example's own gradient).
    rows = jnp.einsum('bti,bto->io', s.a, s.g) / s.a.shape[0]
    kernel = layers_lib.conv_kernel_rows(grads[name]['kernel'][...])
    want = jnp.concatenate([kernel, grads[name]['bias'][...][None]])
    np.testing.assert_allclose(rows, want, atol=1e-6)
  assert stats['conv'].a.shape == (6, 5, 2 * 3 + 1)
  assert stats['lin'].g.shape == (6, 1, 4)


def test_conv_patches_match_a_hand_im2col():
  model, x, _ = _problem()
  patches = layers_lib.conv_patches(model.conv, x)  # (B, T, C * k)
  pad = jnp.pad(x, ((0, 0), (1, 1), (0, 0)))
  for t in range(5):
    window = pad[:, t : t + 3, :]  # (B, k, C): channel-major in the patches
    np.testing.assert_allclose(
      patches[:, t], window.transpose(0, 2, 1).reshape(6, -1), atol=1e-6
    )
  kernel = model.conv.kernel[...]
  back = layers_lib.conv_kernel_from_rows(
    layers_lib.conv_kernel_rows(kernel), kernel.shape
  )
  np.testing.assert_array_equal(back, kernel)


def _per_example_output_grads(model, x, y, layer):
  """Dense per-example d loss_i / d s (layer output) by a probe, float64."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss_i(probe, xi, yi):
    m = nnx.merge(graphdef, params, rest)
    target = getattr(m, layer)
    base = type(target).__call__

    class Probed(type(target)):
      def __call__(self, inputs):
        return base(self, inputs) + probe

    object.__setattr__(target, '__class__', Probed)
    return _ce(m, xi[None], yi[None])

  out_shape = {'conv': (5, 3), 'lin': (4,)}[layer]
  probe = jnp.zeros((1, *out_shape))
  return jax.vmap(jax.grad(loss_i), in_axes=(None, 0, 0))(probe, x, y)


@pytest.mark.parametrize('layer', ['conv', 'lin'])
def test_factors_match_dense_per_example_computation(layer):
  with jax.enable_x64(True):
    model, x, y = _problem()
    _, _, _, stats = _stats(model, x, y)
    big_a, big_g = optax_zoo.kfac_factors(stats)[layer]
    g = _per_example_output_grads(model, x, y, layer)  # (B, 1, T?, d)
    g = np.asarray(g, np.float64).reshape(6, -1, big_g.shape[0])
    want_g = np.einsum('bti,btj->ij', g, g) / 6
    a = np.asarray(stats[layer].a, np.float64)
    want_a = np.einsum('bti,btj->ij', a, a) / (a.shape[0] * a.shape[1])
  np.testing.assert_allclose(big_g, want_g, rtol=2e-5, atol=1e-9)
  np.testing.assert_allclose(big_a, want_a, rtol=1e-5, atol=1e-9)


def test_one_example_kronecker_product_is_the_per_example_fisher():
  # B = 1, T = 1: vec(dW) vec(dW)^T = A (x) G exactly (rows: inputs + bias).
  model, x, y = _problem()
  x, y = x[:1], y[:1]
  _, grads, _, stats = _stats(model, x, y)
  big_a, big_g = optax_zoo.kfac_factors(stats)['lin']
  rows = jnp.concatenate(
    [grads['lin']['kernel'][...], grads['lin']['bias'][...][None]]
  )  # (d_A, d_G); row-major vec
  v = np.asarray(rows, np.float64).reshape(-1)
  np.testing.assert_allclose(
    np.kron(big_a, big_g), np.outer(v, v), rtol=1e-4, atol=1e-9
  )


@pytest.mark.parametrize('inverse', optax_zoo.INVERSE_MODES)
def test_infinite_damping_gives_the_scaled_gradient(inverse):
  model, x, y = _problem()
  _, grads, _, stats = _stats(model, x, y)
  params = nnx.state(model, nnx.Param)
  damping = 1e11
  tx = optax_zoo.scale_by_kfac(damping=damping, inverse=inverse)
  out, _ = tx.update(grads, tx.init(params), params, kfac_stats=stats)
  for got, want in zip(
    jax.tree.leaves(out), jax.tree.leaves(grads), strict=True
  ):
    np.testing.assert_allclose(got * damping, want, rtol=1e-3, atol=1e-9)


def test_least_squares_step_is_the_natural_gradient_step():
  # One linear layer, Gaussian model: the Fisher (= GGN = Hessian) is
  # E[x x^T] (x) 1, so K-FAC with g = 1 is exact and one step with lr 1
  # lands on the least-squares solution.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 3)).astype(np.float32)
  w_true = rng.normal(size=(3, 1)).astype(np.float32)
  y = x @ w_true + 0.1 * rng.normal(size=(64, 1)).astype(np.float32)
  params = {'head': {'kernel': jnp.zeros((3, 1))}}

  def loss(p):
    return 0.5 * jnp.mean((x @ p['head']['kernel'] - y) ** 2)

  grads = jax.grad(loss)(params)
  stats = {
    'head': optax_zoo.KFACLayerStats(
      jnp.asarray(x)[:, None], jnp.ones((64, 1, 1))
    )
  }
  for inverse in optax_zoo.INVERSE_MODES:
    tx = optax_zoo.scale_by_kfac(damping=1e-10, inverse=inverse)
    step, _ = tx.update(grads, tx.init(params), params, kfac_stats=stats)
    w = -step['head']['kernel']
    w_ls = np.linalg.lstsq(x, y, rcond=None)[0]
    np.testing.assert_allclose(w, w_ls, rtol=1e-3, atol=1e-4)


def test_mc_fisher_is_unbiased_for_the_true_fisher_and_empirical_is_not():
  model = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (5, 3)) * 2.0
  y = jnp.zeros(5, jnp.int32)

  def loss_logits(m, x, y):
    logits = m(x)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce, logits

  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def mc_g(key):
    stats = optax_zoo.kfac_layer_stats(
      graphdef, params, rest, loss_logits, x, y, fisher='mc', key=key
    )[3]
    return optax_zoo.kfac_factors(stats)[''][1]

  keys = jax.random.split(jax.random.key(1), 4000)
  samples = jax.lax.map(mc_g, keys, batch_size=500)
  mean, se = samples.mean(0), samples.std(0) / np.sqrt(len(keys))
  p = jax.nn.softmax(model(x))
  # E_y~p[(p - e_y)(p - e_y)^T] = diag(p) - p p^T, averaged over examples.
  true_g = jnp.mean(jax.vmap(lambda q: jnp.diag(q) - jnp.outer(q, q))(p), 0)
  assert np.all(np.abs(mean - true_g) <= 5 * se + 1e-6)
  emp = optax_zoo.kfac_factors(
    optax_zoo.kfac_layer_stats(graphdef, params, rest, _ce, x, y)[3]
  )['']
  assert np.max(np.abs(emp[1] - true_g) / (se + 1e-6)) > 20


def test_running_average_and_inverse_refresh_schedule():
  model, x, y = _problem()
  params = nnx.state(model, nnx.Param)
  tx = optax_zoo.scale_by_kfac(factor_decay=0.5, inverse_every=3)
  state = tx.init(params)
  batches = []
  for i in range(4):
    xi = x * (1.0 + 0.5 * i)
    _, grads, _, stats = _stats(model, xi, y)
    batches.append(optax_zoo.kfac_factors(stats)['lin'][0])
    prev = state
    _, state = tx.update(grads, state, params, kfac_stats=stats)
    refreshed = i % 3 == 0
    same = np.array_equal(state.inverses['lin'][0], prev.inverses['lin'][0])
    assert same != refreshed, i
  # eps_k = min(1 - 1/(k+1), 0.5): 0, 0.5, 0.5, 0.5
  want = batches[0]
  for b in batches[1:]:
    want = 0.5 * want + 0.5 * b
  np.testing.assert_allclose(state.factors['lin'][0], want, rtol=1e-5)


def test_kl_clip_bounds_the_quadratic_model_step():
  model, x, y = _problem()
  _, grads, _, stats = _stats(model, x, y)
  params = nnx.state(model, nnx.Param)
  lr, kappa = 10.0, 1e-4
  tx = optax_zoo.scale_by_kfac(kl_clip=kappa, learning_rate=lr)
  out, _ = tx.update(grads, tx.init(params), params, kfac_stats=stats)
  unclipped, _ = optax_zoo.scale_by_kfac().update(
    grads, tx.init(params), params, kfac_stats=stats
  )
  ratio = jax.tree.map(lambda a, b: a / b, out, unclipped)
  nu = jax.tree.leaves(ratio)[0].reshape(-1)[0]
  assert 0 < nu < 1
  # The quadratic model's KL of the clipped step: lr^2 nu^2 <Delta, g>.
  vg = sum(
    jnp.sum(a * b)
    for a, b in zip(
      jax.tree.leaves(unclipped), jax.tree.leaves(grads), strict=True
    )
  )
  np.testing.assert_allclose(lr**2 * nu**2 * vg, kappa, rtol=1e-3)
  for r in jax.tree.leaves(ratio):
    np.testing.assert_allclose(r, nu, rtol=1e-4)


def test_parameters_outside_layers_get_the_plain_gradient():
  class WithNorm(nnx.Module):
    def __init__(self, rngs):
      self.lin = nnx.Linear(3, 4, rngs=rngs)
      self.norm = nnx.LayerNorm(4, rngs=rngs)

    def __call__(self, x):
      return self.norm(self.lin(x))

  model = WithNorm(nnx.Rngs(0))
  x, y = jnp.ones((4, 3)), jnp.arange(4)
  _, grads, stats = optax_zoo.kfac_value_and_grad(_ce)(model, x, y)
  assert set(stats) == {'lin'}
  params = nnx.state(model, nnx.Param)
  tx = optax_zoo.scale_by_kfac()
  out, _ = tx.update(grads, tx.init(params), params, kfac_stats=stats)
  np.testing.assert_array_equal(out['norm']['scale'], grads['norm']['scale'])
  assert not np.allclose(out['lin']['kernel'], grads['lin']['kernel'])


def test_nnx_optimizer_loop_trains_and_does_not_recompile():
  data = training.digits()
  model = training.MLP(data.num_features, (32,), 10, rngs=nnx.Rngs(0))
  opt = nnx.Optimizer(model, optax_zoo.kfac(0.05), wrt=nnx.Param)
  traces = []

  @nnx.jit
  def step(model, opt, x, y):
    traces.append(1)
    loss, grads, stats = optax_zoo.kfac_value_and_grad(_ce)(model, x, y)
    opt.update(model, grads, kfac_stats=stats)
    return loss

  x, y = data.x_train[:256], data.y_train[:256]
  losses = [float(step(model, opt, x, y)) for _ in range(15)]
  assert losses[-1] < 0.5 * losses[0]
  assert len(traces) == 1


def test_train_loop_supplies_the_statistics():
  data = training.digits()
  model = training.MLP(data.num_features, (32,), 10, rngs=nnx.Rngs(0))
  result = training.train(
    model, optax_zoo.kfac(0.05), data, steps=40, batch_size=64
  )
  assert result.history.final_accuracy > 0.8


def test_inject_hyperparams_multisteps_and_bf16():
  model, x, y = _problem()
  _, grads, _, stats = _stats(model, x, y)
  params = nnx.state(model, nnx.Param)
  plain = optax_zoo.kfac(0.1, damping=1e-2)
  injected = optax.inject_hyperparams(
    optax_zoo.kfac, static_args=('inverse_every', 'inverse')
  )(0.1, damping=1e-2)
  want, _ = plain.update(grads, plain.init(params), params, kfac_stats=stats)
  got, _ = injected.update(
    grads, injected.init(params), params, kfac_stats=stats
  )
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
  multi = optax.MultiSteps(plain, every_k_schedule=2)
  s = multi.init(params)
  u1, s = multi.update(grads, s, params, kfac_stats=stats)
  assert all(np.all(u == 0) for u in jax.tree.leaves(u1))
  u2, s = multi.update(grads, s, params, kfac_stats=stats)
  assert any(np.any(u != 0) for u in jax.tree.leaves(u2))
  half = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
  hgrads = jax.tree.map(lambda g: g.astype(jnp.bfloat16), grads)
  hout, _ = plain.update(hgrads, plain.init(half), half, kfac_stats=stats)
  assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(hout))
  assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(hout))


@pytest.mark.parametrize(
  'kwargs, match',
  [
    ({'damping': 0.0}, '`damping`'),
    ({'damping': -1.0}, '`damping`'),
    ({'inverse_every': 0}, '`inverse_every`'),
    ({'factor_decay': 1.0}, '`factor_decay`'),
    ({'inverse': 'lu'}, '`inverse`'),
    ({'kl_clip': 1e-3}, '`kl_clip` needs `learning_rate`'),
    ({'kl_clip': 0.0, 'learning_rate': 0.1}, '`kl_clip`'),
  ],
)
def test_bad_hyperparameters_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optax_zoo.scale_by_kfac(**kwargs)


def test_bad_statistics_and_layers_raise():
  model, x, y = _problem()
  with pytest.raises(ValueError, match='`fisher`'):
    _stats(model, x, y, fisher='type-3')
  with pytest.raises(ValueError, match='`key`'):
    _stats(model, x, y, fisher='mc')
  grouped = nnx.Conv(4, 4, (3,), feature_group_count=2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r'<root> \(Conv\).*feature_group'):
    optax_zoo.kfac_value_and_grad(lambda m, x: jnp.mean(m(x)))(
      grouped, jnp.ones((2, 5, 4))
    )
  _, grads, _, stats = _stats(model, x, y)
  params = nnx.state(model, nnx.Param)
  tx = optax_zoo.scale_by_kfac()
  with pytest.raises(ValueError, match='`kfac_stats`'):
    tx.update(grads, tx.init(params), params)
  wrong = {'lin': stats['conv']}
  with pytest.raises(ValueError, match="kfac_stats\\['lin'\\]"):
    tx.update(grads, tx.init(params), params, kfac_stats=wrong)
  with pytest.raises(ValueError, match='not layers'):
    tx.update(grads, tx.init(params), params, kfac_stats={'x': stats['lin']})
