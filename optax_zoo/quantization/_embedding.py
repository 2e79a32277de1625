"""The stable embedding layer of 8-bit optimizers (Dettmers et al. 2022)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ['StableEmbedding', 'StableEmbeddingParam', 'stable_embedding_mask']


class StableEmbeddingParam(nnx.Param):
  """The table of a `StableEmbedding`; `stable_embedding_mask` finds it."""


class StableEmbedding(nnx.Module):
  r"""An embedding with Xavier-uniform init and a float32 LayerNorm.

  Dettmers et al. (2022, Section 2.3): a token's embedding sees a gradient
  only when the token occurs, so its optimizer state is sparse and has
  extreme values; the stable embedding keeps training stable under 8-bit
  state with three changes, as bitsandbytes' ``StableEmbedding``:

  .. math::
    y = \mathrm{LayerNorm}_{32}(E[\mathrm{ids}]),\qquad
    E \sim \mathcal U\big(\pm\sqrt{6 / (n + d)}\big),

  the LayerNorm (learned scale and bias) computed in float32 and the result
  cast back to the table's dtype, and the table's optimizer state kept in
  32 bits: pass `stable_embedding_mask` as ``mask`` to `quantize_state`,
  `adam8bit` or `adamw8bit`.

  Args:
    num_embeddings: vocabulary size :math:`n`.
    features: embedding width :math:`d`.
    param_dtype: dtype of the table.
    epsilon: the LayerNorm's epsilon.
    rngs: `nnx.Rngs` with a ``params`` stream.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from optax_zoo.quantization import StableEmbedding
    >>> layer = StableEmbedding(10, 4, rngs=nnx.Rngs(0))
    >>> y = layer(jnp.array([[1, 2, 3]]))
    >>> y.shape, bool(jnp.allclose(y.mean(-1), 0.0, atol=1e-6))
    ((1, 3, 4), True)

  References:
    Dettmers et al., `8-bit Optimizers via Block-wise Quantization
    <https://arxiv.org/abs/2110.02861>`_, 2022; bitsandbytes
    ``bnb.nn.StableEmbedding``.
  """

  def __init__(
    self,
    num_embeddings: int,
    features: int,
    *,
    param_dtype: Any = jnp.float32,
    epsilon: float = 1e-5,
    rngs: nnx.Rngs,
  ):
    init = jax.nn.initializers.xavier_uniform()
    self.embedding = StableEmbeddingParam(
      init(rngs.params(), (num_embeddings, features), param_dtype)
    )
    self.norm = nnx.LayerNorm(
      features,
      epsilon=epsilon,
      dtype=jnp.float32,
      param_dtype=jnp.float32,
      rngs=rngs,
    )

  def __call__(self, ids: jax.Array) -> jax.Array:
    table = self.embedding[...]
    x = jnp.take(table, ids, axis=0).astype(jnp.float32)
    return self.norm(x).astype(table.dtype)


def stable_embedding_mask(params: Any) -> Any:
  """False at the tables of `StableEmbedding` layers, True elsewhere.

  The ``mask`` of `quantize_state` that keeps the embeddings' optimizer
  state in 32 bits, as the paper does.

  Args:
    params: ``nnx.state(model, nnx.Param)`` (or a split's parameters).

  Returns:
    A tree of booleans with one entry per parameter.

  Example:
    >>> import jax
    >>> from flax import nnx
    >>> from optax_zoo.quantization import (
    ...   StableEmbedding, stable_embedding_mask)
    >>> layer = StableEmbedding(10, 4, rngs=nnx.Rngs(0))
    >>> mask = stable_embedding_mask(nnx.state(layer, nnx.Param))
    >>> jax.tree.leaves(mask)
    [False, True, True]
  """
  return jax.tree.map(
    lambda x: not isinstance(x, StableEmbeddingParam),
    params,
    is_leaf=lambda x: isinstance(x, nnx.Variable),
  )
