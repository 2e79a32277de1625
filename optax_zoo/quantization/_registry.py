"""Registry entries of `optax_zoo.quantization`, collected by the registry."""

from __future__ import annotations

from typing import Any

from optax_zoo import adaptive, quantization
from optax_zoo._src.method_info import BAD_ADAM_KWARGS, MethodInfo, paper

_PAPER = paper(
  '8-bit Optimizers via Block-wise Quantization',
  'Dettmers et al.',
  2022,
  '2110.02861',
)
# min_size=0: the common tests' parameters (4032 and 63 elements) are under
# the references' 4096, and a method whose state stays float32 there would
# pass them without quantizing anything.
_BAD_QUANT = (
  {'block_size': 100},
  {'block_size': 0},
  {'min_size': -1},
  {'second_moment_floor': 1.5},
)
_STATIC = ('block_size', 'min_size')
# One byte per element per moment and a float32 per block of 256, over the
# 4 bytes of a float32 parameter: 2 * (1 + 4 / 256) / 4 = 0.508 (the common
# test's 63-element leaf rounds up to one block).
_COPIES_8BIT = 0.51
_DEVIATIONS = (
  'tensors not a multiple of the block are quantized with a partial last '
  'block (torchao keeps them float32); absmax not clipped at 1e-12 '
  "(torchao's floor); no percentile clipping"
)


def _adam_kwargs(learning_rate: Any) -> dict[str, Any]:
  return {'learning_rate': learning_rate, 'min_size': 0}


def _quantize_state_kwargs(learning_rate: Any) -> dict[str, Any]:
  return {'inner': adaptive.adam(learning_rate), 'min_size': 0}


ENTRIES = (
  MethodInfo(
    name='adam8bit',
    category='quantization',
    factory=quantization.adam8bit,
    paper=_PAPER,
    reference=(
      'bitsandbytes 0.50 bnb.optim.Adam8bit (CPU lookup-table quantizer); '
      'torchao 0.18 torchao.optim.Adam8bit arithmetic'
    ),
    state_copies=_COPIES_8BIT,
    # The grid's optimum (every tensor quantized, min_size=0). Adam's own,
    # 0.01, diverges on 1 of the grid's 2 seeds and 0.03 on both: tiny second
    # moments round to 0 (see `quantize_state`'s second_moment_floor, and
    # experiments/quantization/accuracy for the no-retuning claim).
    learning_rate=0.003,
    example_kwargs=_adam_kwargs,
    invalid_kwargs=(*BAD_ADAM_KWARGS, *_BAD_QUANT),
    static_args=_STATIC,
    deviations=_DEVIATIONS + '; no weight decay (use adamw8bit)',
  ),
  MethodInfo(
    name='adamw8bit',
    category='quantization',
    factory=quantization.adamw8bit,
    paper=_PAPER,
    reference='torchao 0.18 torchao.optim.AdamW8bit (eager)',
    state_copies=_COPIES_8BIT,
    learning_rate=0.003,
    example_kwargs=_adam_kwargs,
    invalid_kwargs=(
      *BAD_ADAM_KWARGS,
      *_BAD_QUANT,
      {'weight_decay': -1.0},
    ),
    static_args=_STATIC,
    deviations=_DEVIATIONS,
  ),
  MethodInfo(
    name='quantize_state',
    category='quantization',
    factory=quantization.quantize_state,
    paper=_PAPER,
    reference=(
      'torchao 0.18 quantize_8bit_with_qmap and dequant_with_qmap (codes '
      'equal); the inner optimizer unquantized'
    ),
    # What it adds to the inner state: 0.51 copies instead of Adam's 2.
    state_copies=_COPIES_8BIT - 2,
    learning_rate=0.003,
    example_kwargs=_quantize_state_kwargs,
    invalid_kwargs=(
      *_BAD_QUANT,
      {'bits': 4},
      {'inner': 'adam'},
    ),
    static_args=('bits', *_STATIC),
    deviations=(
      'any inner optimizer; state copies count what it adds to the inner '
      "state (negative: the saving); the inner optimizer's own arithmetic "
      "(optax.adam's, not torchao's lerp); " + _DEVIATIONS
    ),
  ),
)
