"""Ghost clipping gives the clipped sum of the vmap path."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from optax_zoo.privacy import (
  ghost_clipped_grad_sum,
  model_clipped_grad_sum,
  unsupported_layers,
)
from optax_zoo.privacy._ghost import _sq_norm_of_outer
from optax_zoo.training.models import CNN1D, MLP

B = 8


def _loss(model, ex):
  logits = model(ex['x'][None])[0]
  return optax.softmax_cross_entropy_with_integer_labels(logits, ex['y'])


def _batch(seed=0, size=B, length=40):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  scale = 10.0 ** jax.random.uniform(k3, (size, 1), minval=-1, maxval=1)
  return {
    'x': scale * jax.random.normal(k1, (size, length)),
    'y': jax.random.randint(k2, (size,), 0, 10),
  }


def _run(model, loss, batch, method, mask=None, **kw):
  @jax.jit
  def f(batch, mask):
    return model_clipped_grad_sum(
      model, loss, batch, mask=mask, method=method, **kw
    )

  return f(batch, mask)


def _median_norm(model, loss, batch):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  g = jax.vmap(
    jax.grad(lambda p, ex: loss(nnx.merge(graphdef, p, rest), ex)),
    (None, 0),
  )(params, batch)
  norms = jax.vmap(optax.tree.norm)(g)
  return float(jnp.median(norms)), norms


def _assert_trees_close(a, b, rtol=1e-5):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * np.abs(y).max())


_MODELS = {
  'mlp': lambda: MLP(40, (16, 16), rngs=nnx.Rngs(0)),
  'cnn1d': lambda: CNN1D(channels=4, rngs=nnx.Rngs(0)),
}


@pytest.mark.parametrize('name', sorted(_MODELS))
def test_ghost_and_vmap_give_the_same_clipped_sum(name):
  model = _MODELS[name]()
  model.eval()
  batch = _batch(1)
  c, _ = _median_norm(model, _loss, batch)
  mask = jnp.array([1, 1, 1, 0, 1, 1, 0, 1], bool)
  # Garbage in a padded row must not matter to either path.
  batch['x'] = batch['x'].at[3].set(jnp.nan)
  g_v, s_v = _run(model, _loss, batch, 'vmap', clip_norm=c, mask=mask)
  g_g, s_g = _run(model, _loss, batch, 'ghost', clip_norm=c, mask=mask)
  _assert_trees_close(g_g, g_v)
  assert jax.tree.structure(g_g) == jax.tree.structure(g_v)
  assert tuple(map(int, s_g)) == tuple(map(int, s_v))
  # Some real examples are clipped and some are not.
  assert 0 < int(s_g.num_clipped) < int(s_g.num_examples) == 6
  # The user's model is left as it was.
  assert type(model.head) is nnx.Linear


def test_gram_and_direct_norm_forms_agree():
  k1, k2 = jax.random.split(jax.random.key(0))
  for t, d, p in ((2, 5, 4), (9, 2, 3)):  # Gram form, then direct
    a = jax.random.normal(k1, (3, t, d))
    g = jax.random.normal(k2, (3, t, p))
    want = jnp.sum(jnp.einsum('btd,btp->bdp', a, g) ** 2, axis=(1, 2))
    np.testing.assert_allclose(_sq_norm_of_outer(a, g), want, rtol=1e-5)


class _Conv2DNet(nnx.Module):
  """2-D conv (stride, dilation, SAME), a Linear on 3-D input used twice."""

  def __init__(self, rngs):
    self.conv = nnx.Conv(
      2,
      3,
      (3, 3),
      strides=(2, 1),
      kernel_dilation=(1, 2),
      padding='SAME',
      rngs=rngs,
    )
    self.conv_valid = nnx.Conv(3, 4, (2, 2), padding='VALID', rngs=rngs)
    self.mix = nnx.Linear(4, 4, rngs=rngs)
    self.head = nnx.Linear(4, 10, use_bias=False, rngs=rngs)

  def __call__(self, x):
    h = nnx.relu(self.conv(x))
    h = nnx.tanh(self.conv_valid(h))  # (N, H', W', 4)
    h = self.mix(nnx.relu(self.mix(h)))  # a 4-D input, a layer called twice
    return self.head(h.mean(axis=(1, 2)))


def test_ghost_handles_2d_convs_shared_layers_and_nd_linear_inputs():
  model = _Conv2DNet(nnx.Rngs(1))
  k1, k2 = jax.random.split(jax.random.key(2))
  batch = {
    'x': jax.random.normal(k1, (B, 6, 5, 2)),
    'y': jax.random.randint(k2, (B,), 0, 10),
  }
  assert unsupported_layers(model) == []
  c, _ = _median_norm(model, _loss, batch)
  g_v, s_v = _run(model, _loss, batch, 'vmap', clip_norm=c)
  g_g, s_g = _run(model, _loss, batch, 'ghost', clip_norm=c)
  _assert_trees_close(g_g, g_v)
  assert tuple(map(int, s_g)) == tuple(map(int, s_v))


def test_microbatched_ghost_equals_unbatched():
  model = _MODELS['cnn1d']()
  batch = _batch(2)
  mask = jnp.arange(B) < 5
  g, s = _run(model, _loss, batch, 'ghost', clip_norm=0.5, mask=mask)
  g_mb, s_mb = _run(
    model, _loss, batch, 'ghost', clip_norm=0.5, mask=mask, microbatch_size=4
  )
  _assert_trees_close(g_mb, g, rtol=1e-6)
  assert tuple(map(int, s_mb)) == tuple(map(int, s))


class _WithLayerNorm(nnx.Module):
  def __init__(self, rngs):
    self.dense = nnx.Linear(40, 8, rngs=rngs)
    self.norm = nnx.LayerNorm(8, rngs=rngs)
    self.head = nnx.Linear(8, 10, rngs=rngs)

  def __call__(self, x):
    return self.head(self.norm(self.dense(x)))


def test_unsupported_layer_is_named_or_falls_back_to_vmap():
  model = _WithLayerNorm(nnx.Rngs(0))
  assert unsupported_layers(model) == [
    'norm (LayerNorm): not an nnx.Linear or nnx.Conv'
  ]
  batch = _batch(3)
  with pytest.raises(ValueError, match=r'norm \(LayerNorm\)'):
    ghost_clipped_grad_sum(model, _loss, batch, clip_norm=1.0)
  g_auto, _ = _run(model, _loss, batch, 'auto', clip_norm=0.5)
  g_vmap, _ = _run(model, _loss, batch, 'vmap', clip_norm=0.5)
  _assert_trees_close(g_auto, g_vmap, rtol=1e-7)
  grouped = nnx.Conv(4, 4, 3, feature_group_count=2, rngs=nnx.Rngs(0))
  assert 'feature_group_count' in unsupported_layers(grouped)[0]


def test_ghost_refuses_per_layer_and_bad_clip_norm():
  model = _MODELS['mlp']()
  with pytest.raises(ValueError, match='per_layer'):
    ghost_clipped_grad_sum(
      model, _loss, _batch(), clip_norm=1.0, per_layer=True
    )
  with pytest.raises(ValueError, match='clip_norm'):
    ghost_clipped_grad_sum(model, _loss, _batch(), clip_norm=0.0)


def test_ghost_neutralizes_and_counts_nonfinite_examples():
  model = _MODELS['mlp']()
  batch = _batch(4)
  batch['x'] = batch['x'].at[2, 5].set(jnp.inf).at[6, 0].set(jnp.nan)
  g_g, s_g = _run(model, _loss, batch, 'ghost', clip_norm=0.5)
  g_v, s_v = _run(model, _loss, batch, 'vmap', clip_norm=0.5)
  assert int(s_g.num_nonfinite) == 2
  assert tuple(map(int, s_g)) == tuple(map(int, s_v))
  _assert_trees_close(g_g, g_v)


def test_ghost_falls_back_when_a_zeroed_row_is_still_nonfinite():
  # log(|x|) is -inf at the all-zero row the weighted pass substitutes.
  model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))

  def loss(m, ex):
    return jnp.sum(m(jnp.log(jnp.abs(ex)))) ** 2

  batch = jnp.array([[1.0, 2.0, 3.0], [0.0, 1.0, 1.0], [2.0, 2.0, 0.5]])

  g, s = jax.jit(
    lambda b: ghost_clipped_grad_sum(model, loss, b, clip_norm=0.5)
  )(batch)
  g_v, _ = _run(model, loss, batch, 'vmap', clip_norm=0.5)
  assert int(s.num_nonfinite) == 1
  _assert_trees_close(g, g_v)
  g_raw, _ = jax.jit(
    lambda b: ghost_clipped_grad_sum(
      model, loss, b, clip_norm=0.5, nonfinite_fallback=False
    )
  )(batch)
  assert not all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(g_raw))


def test_ghost_with_batch_dim_and_eval_dropout_matches_vmap():
  model = MLP(40, (16,), dropout=0.5, rngs=nnx.Rngs(0))
  model.eval()  # dropout off, as a private step needs

  def loss(m, ex):  # written for a batch of one
    logits = m(ex['x'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, ex['y'])[0]

  batch = _batch(5)
  unbatched = lambda m, ex: loss(m, jax.tree.map(lambda x: x[None], ex))
  c, _ = _median_norm(model, unbatched, batch)
  kw = dict(clip_norm=c, keep_batch_dim=True)
  g_g, s_g = _run(model, loss, batch, 'ghost', **kw)
  g_v, s_v = _run(model, loss, batch, 'vmap', **kw)
  _assert_trees_close(g_g, g_v)
  assert tuple(map(int, s_g)) == tuple(map(int, s_v))
  assert 0 < int(s_g.num_clipped) < B
