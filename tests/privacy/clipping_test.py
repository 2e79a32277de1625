"""Tests for the vmap path of per-example clipping (`clipped_grad_sum`)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from optax_zoo.privacy import (
  check_private_model,
  clipped_grad_sum,
  layer_bounds,
  model_clipped_grad_sum,
)
from optax_zoo.training.models import CNN1D, MLP

B, D, K = 8, 3, 2


def _loss(params, ex):
  logits = ex['x'] @ params['w'] + params['b']
  return optax.softmax_cross_entropy_with_integer_labels(logits, ex['y'])


def _params(seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {
    'w': jax.random.normal(k1, (D, K)),
    'b': jax.random.normal(k2, (K,)),
  }


def _batch(seed=0, size=B):
  k1, k2, k3 = jax.random.split(jax.random.key(seed + 100), 3)
  # Per-example scales from 0.01 to 100: some gradients are clipped, some not.
  scale = 10.0 ** jax.random.uniform(k3, (size, 1), minval=-2, maxval=2)
  return {
    'x': scale * jax.random.normal(k1, (size, D)),
    'y': jax.random.randint(k2, (size,), 0, K),
  }


@functools.partial(
  jax.jit, static_argnames=('clip_norm', 'microbatch_size', 'per_layer')
)
def _sum(
  params, batch, mask=None, *, clip_norm, microbatch_size=None, per_layer=False
):
  return clipped_grad_sum(
    _loss,
    params,
    batch,
    clip_norm=clip_norm,
    mask=mask,
    microbatch_size=microbatch_size,
    per_layer=per_layer,
  )


def _norm(tree):
  return float(optax.tree.norm(tree))


def _take(batch, idx):
  return jax.tree.map(lambda x: x[np.asarray(idx)], batch)


@pytest.mark.parametrize('seed', range(3))
def test_every_clipped_per_example_gradient_is_within_clip_norm(seed):
  params, batch, c = _params(seed), _batch(seed), 0.5
  raw = [_norm(jax.grad(_loss)(params, _take(batch, i))) for i in range(B)]
  assert min(raw) < c < max(raw)  # both regimes are exercised
  for i in range(B):
    one_hot = jnp.arange(B) == i
    g, stats = _sum(params, batch, one_hot, clip_norm=c)
    assert _norm(g) <= c * (1 + 1e-6)
    # An unclipped gradient is left as it is.
    if raw[i] < c:
      np.testing.assert_allclose(_norm(g), raw[i], rtol=1e-5)
    else:
      np.testing.assert_allclose(_norm(g), c, rtol=1e-5)
    assert int(stats.num_clipped) == int(raw[i] > c)


def test_huge_clip_norm_gives_the_plain_mean_gradient():
  params, batch = _params(), _batch()
  g, stats = _sum(params, batch, clip_norm=1e9)
  mean = jax.grad(lambda p: jax.vmap(_loss, (None, 0))(p, batch).mean())(params)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(mean), strict=True):
    np.testing.assert_allclose(a / B, b, rtol=1e-5, atol=1e-7)
  assert int(stats.num_clipped) == 0
  assert int(stats.num_examples) == B


def _diff(a, b):
  return _norm(jax.tree.map(jnp.subtract, a, b))


def test_neighbouring_batches_move_the_sum_by_at_most_the_sensitivity():
  # Add/remove (and zeroing by the mask): clip_norm. Replace-one: 2 clip_norm.
  c = 0.5
  params, batch = _params(1), _batch(1)
  big = {'x': jnp.full((1, D), 50.0), 'y': jnp.zeros((1,), jnp.int32)}
  s, _ = _sum(params, batch, clip_norm=c)
  for i in range(B):
    replaced = jax.tree.map(lambda x, b, i=i: x.at[i].set(b[0]), batch, big)
    s_rep, _ = _sum(params, replaced, clip_norm=c)
    assert _diff(s, s_rep) <= 2 * c * (1 + 1e-5)
    masked = jnp.arange(B) != i
    s_mask, _ = _sum(params, batch, masked, clip_norm=c)
    assert _diff(s, s_mask) <= c * (1 + 1e-5)
    dropped = _take(batch, [j for j in range(B) if j != i])
    s_drop, _ = _sum(params, dropped, clip_norm=c)
    assert _diff(s, s_drop) <= c * (1 + 1e-5)
    np.testing.assert_allclose(_diff(s_mask, s_drop), 0.0, atol=1e-6)
  # Unclipped, the same replacement would move the sum far more.
  s_raw, _ = _sum(params, batch, clip_norm=1e9)
  s_raw_rep, _ = _sum(params, replaced, clip_norm=1e9)
  assert _diff(s_raw, s_raw_rep) > 2 * c


def test_padded_rows_contribute_exactly_zero():
  params, batch = _params(2), _batch(2)
  mask = jnp.array([1, 1, 0, 1, 0, 1, 1, 0], bool)
  # Garbage in the padded rows: NaN, inf and huge values.
  x = batch['x'].at[2].set(jnp.nan).at[4].set(jnp.inf).at[7].set(1e30)
  padded = {'x': x, 'y': batch['y']}
  g, stats = _sum(params, padded, mask, clip_norm=0.5)
  real = _take(batch, np.flatnonzero(np.asarray(mask)))
  g_real, stats_real = _sum(params, real, clip_norm=0.5)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_real), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert int(stats.num_examples) == 5
  assert int(stats.num_nonfinite) == 0
  assert int(stats.num_clipped) == int(stats_real.num_clipped)
  # An all-padding batch sums to exactly zero.
  g0, stats0 = _sum(params, padded, jnp.zeros(B, bool), clip_norm=0.5)
  assert all(bool((leaf == 0).all()) for leaf in jax.tree.leaves(g0))
  assert int(stats0.num_examples) == 0


def test_nonfinite_per_example_gradients_are_zeroed_and_counted():
  params, batch = _params(3), _batch(3)
  x = batch['x'].at[1, 0].set(jnp.nan).at[5, 2].set(jnp.inf)
  bad = {'x': x, 'y': batch['y']}
  g, stats = _sum(params, bad, clip_norm=0.5)
  good = _take(batch, [j for j in range(B) if j not in (1, 5)])
  g_good, _ = _sum(params, good, clip_norm=0.5)
  # Not jax-privacy's entry-wise nan_safe: the whole gradient is dropped.
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_good), strict=True):
    assert bool(jnp.isfinite(a).all())
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert int(stats.num_nonfinite) == 2
  assert int(stats.num_examples) == B


def test_per_layer_clipping_bounds_each_leaf():
  params, batch, c = _params(4), _batch(4), 0.5
  bounds = layer_bounds(params, c)
  np.testing.assert_allclose(bounds['w'], c / np.sqrt(2))
  clipped_any = 0
  for i in range(B):
    one_hot = jnp.arange(B) == i
    g, stats = _sum(params, batch, one_hot, clip_norm=c, per_layer=True)
    raw = jax.grad(_loss)(params, _take(batch, i))
    over = False
    for name in ('w', 'b'):
      n, r = _norm(g[name]), _norm(raw[name])
      assert n <= bounds[name] * (1 + 1e-6)
      np.testing.assert_allclose(n, min(r, bounds[name]), rtol=1e-5)
      over |= r > bounds[name]
    assert _norm(g) <= c * (1 + 1e-6)
    assert int(stats.num_clipped) == int(over)
    clipped_any += int(over)
  assert 0 < clipped_any < B
  # With a huge bound it equals global clipping (both are the identity).
  g_pl, _ = _sum(params, batch, clip_norm=1e9, per_layer=True)
  g_gl, _ = _sum(params, batch, clip_norm=1e9)
  for a, b in zip(jax.tree.leaves(g_pl), jax.tree.leaves(g_gl), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize('microbatch_size', [1, 2, 4])
def test_microbatched_equals_unbatched(microbatch_size):
  params, batch = _params(5), _batch(5)
  # The last rows are padding, so trailing microbatches may be all padding.
  mask = jnp.arange(B) < 5
  x = batch['x'].at[1, 0].set(jnp.nan)
  batch = {'x': x, 'y': batch['y']}
  g, stats = _sum(params, batch, mask, clip_norm=0.5)
  g_mb, stats_mb = _sum(
    params, batch, mask, clip_norm=0.5, microbatch_size=microbatch_size
  )
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_mb), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert tuple(map(int, stats)) == tuple(map(int, stats_mb))
  assert int(stats.num_nonfinite) == 1


def test_per_example_keys_are_distinct():
  def noisy(p, ex, key):
    return jnp.sum(p * ex) * jax.random.normal(key)

  g, _ = clipped_grad_sum(
    noisy,
    jnp.ones(2),
    jnp.ones((4, 2)),
    clip_norm=1e9,
    key=jax.random.key(0),
  )
  one, _ = clipped_grad_sum(
    noisy,
    jnp.ones(2),
    jnp.ones((1, 2)),
    clip_norm=1e9,
    key=jax.random.key(0),
  )
  assert not np.allclose(g, 4 * one)


@pytest.mark.parametrize('bad', [0.0, -1.0, float('nan')])
def test_nonpositive_clip_norm_is_refused(bad):
  with pytest.raises(ValueError, match='clip_norm'):
    clipped_grad_sum(_loss, _params(), _batch(), clip_norm=bad)
  with pytest.raises(ValueError, match='clip_norm'):
    model_clipped_grad_sum(
      MLP(D, (4,), rngs=nnx.Rngs(0)),
      lambda m, ex: 0.0,
      {'x': jnp.ones((2, D))},
      clip_norm=bad,
    )


def test_bad_mask_and_microbatch_size_are_refused():
  with pytest.raises(ValueError, match='microbatch_size'):
    clipped_grad_sum(
      _loss, _params(), _batch(), clip_norm=1.0, microbatch_size=3
    )
  with pytest.raises(ValueError, match='mask'):
    clipped_grad_sum(
      _loss, _params(), _batch(), clip_norm=1.0, mask=jnp.ones(3, bool)
    )


class _WithBatchNorm(nnx.Module):
  def __init__(self, rngs):
    self.dense = nnx.Linear(D, 4, rngs=rngs)
    self.norm = nnx.BatchNorm(4, rngs=rngs)

  def __call__(self, x):
    return self.norm(self.dense(x))


def test_batchnorm_is_refused_with_the_layer_named():
  model = _WithBatchNorm(nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"BatchNorm at 'norm'"):
    check_private_model(model)
  for method in ('vmap', 'ghost', 'auto'):
    with pytest.raises(ValueError, match='BatchNorm'):
      model_clipped_grad_sum(
        model,
        lambda m, ex: jnp.sum(m(ex[None])),
        jnp.ones((2, D)),
        clip_norm=1.0,
        method=method,
      )


def _model_loss(model, ex):
  logits = model(ex['x'][None])[0]
  return optax.softmax_cross_entropy_with_integer_labels(logits, ex['y'])


@pytest.mark.parametrize(
  'make',
  [
    lambda: MLP(40, (16,), rngs=nnx.Rngs(0)),
    lambda: CNN1D(channels=4, rngs=nnx.Rngs(0)),
  ],
)
def test_nnx_model_gradients_are_shaped_like_its_params(make):
  model = make()
  model.eval()
  k1, k2 = jax.random.split(jax.random.key(7))
  batch = {
    'x': jax.random.normal(k1, (4, 40)),
    'y': jax.random.randint(k2, (4,), 0, 10),
  }

  @jax.jit
  def run(batch):
    return model_clipped_grad_sum(model, _model_loss, batch, clip_norm=1e9)

  g, _ = run(batch)
  params = nnx.state(model, nnx.Param)
  assert jax.tree.structure(g) == jax.tree.structure(params)

  def mean_loss(m):
    return jax.vmap(_model_loss, (None, 0))(m, batch).mean()

  plain = nnx.grad(mean_loss)(model)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(plain), strict=True):
    np.testing.assert_allclose(a / 4, b, rtol=1e-4, atol=1e-6)
