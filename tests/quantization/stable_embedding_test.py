"""StableEmbedding: Xavier-uniform table, float32 LayerNorm, 32-bit state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from optax_zoo import quantization as q


def test_init_norm_and_mask():
  layer = q.StableEmbedding(4096, 8, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  table = np.asarray(layer.embedding[...], np.float32)
  bound = np.sqrt(6 / (4096 + 8))
  # bf16 rounding may lift the largest entry by 2^-8 relative.
  assert 0.9 * bound < np.abs(table).max() <= bound * (1 + 2**-8)
  y = layer(jnp.array([[0, 5, 4095]]))
  assert y.dtype == jnp.bfloat16 and y.shape == (1, 3, 8)
  # LayerNorm (scale 1, bias 0 at init) in float32, then the cast.
  rows = table[[0, 5, 4095]]
  want = (rows - rows.mean(-1, keepdims=True)) / np.sqrt(
    rows.var(-1, keepdims=True) + 1e-5
  )
  np.testing.assert_allclose(np.asarray(y[0], np.float32), want, rtol=1e-2)
  params = nnx.state(layer, nnx.Param)
  tx = q.adam8bit(1e-3, min_size=0, mask=q.stable_embedding_mask)
  mu = tx.init(params)[0].inner_state.mu
  leaves = jax.tree.leaves(mu, is_leaf=lambda x: hasattr(x, 'codes'))
  # The table (first) keeps float32 moments; the norm's are quantized.
  assert leaves[0].dtype == jnp.float32 and leaves[0].shape == (4096, 8)
  assert all(hasattr(x, 'codes') for x in leaves[1:])
