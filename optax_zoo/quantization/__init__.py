"""8-bit optimizer state: block-wise dynamic quantization (Dettmers et al.).

`quantize_state` stores the moments of any optax optimizer in 8 bits;
`adam8bit` and `adamw8bit` are Adam and AdamW in the arithmetic of torchao's
``AdamW8bit``; `StableEmbedding` and `stable_embedding_mask` are the paper's
embedding layer with its state kept in 32 bits.
"""

from optax_zoo.quantization._adam import (
  adam8bit,
  adamw8bit,
  scale_by_adam8bit,
)
from optax_zoo.quantization._blockwise import (
  QuantizedArray,
  dequantize_blockwise,
  quantize_blockwise,
)
from optax_zoo.quantization._embedding import (
  StableEmbedding,
  StableEmbeddingParam,
  stable_embedding_mask,
)
from optax_zoo.quantization._maps import SIGNED_MAP, UNSIGNED_MAP
from optax_zoo.quantization._state import QuantizedState, quantize_state

__all__ = [
  'SIGNED_MAP',
  'UNSIGNED_MAP',
  'QuantizedArray',
  'QuantizedState',
  'StableEmbedding',
  'StableEmbeddingParam',
  'adam8bit',
  'adamw8bit',
  'dequantize_blockwise',
  'quantize_blockwise',
  'quantize_state',
  'scale_by_adam8bit',
  'stable_embedding_mask',
]
