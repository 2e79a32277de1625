"""8-bit optimizer state: block-wise dynamic quantization (Dettmers et al.).

`quantize_state` stores the moments of any optax optimizer in 8 bits;
`adam8bit` and `adamw8bit` are Adam and AdamW in the arithmetic of torchao's
``AdamW8bit``; `StableEmbedding` and `stable_embedding_mask` are the paper's
embedding layer with its state kept in 32 bits.
"""

from optax_zoo.quantization import _maps
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
from optax_zoo.quantization._state import QuantizedState, quantize_state

#: The signed dynamic map: 256 float32 values in [-1, 1], the first moments'
#: codes (bitsandbytes' ``create_dynamic_map(signed=True)``).
SIGNED_MAP = _maps.SIGNED_MAP
#: The unsigned dynamic map: 256 float32 values in [0, 1], the second
#: moments' codes (``create_dynamic_map(signed=False)``).
UNSIGNED_MAP = _maps.UNSIGNED_MAP

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
