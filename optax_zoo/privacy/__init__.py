"""Differentially private training.

Per-example clipping of a Flax NNX model's gradients (by `jax.vmap`, or by
ghost clipping for `nnx.Linear` and `nnx.Conv` layers), Gaussian
aggregation as an optax transform that divides by the expected batch size,
Poisson batches padded to a fixed size with a mask, and privacy accounting
(PLD and RDP) with a running accountant and a report. Built on jax-privacy
(clipping, noise, batch selection) and dp-accounting (the accountants);
each module says what comes from where.
"""

from optax_zoo.privacy._accounting import (
  PrivacyAccountant,
  PrivacyReport,
  calibrate_noise,
  dp_event,
  epsilon,
  privacy_report,
)
from optax_zoo.privacy._aggregate import (
  DPAggregateState,
  dp_aggregate,
  dp_sgd,
)
from optax_zoo.privacy._batches import (
  BatchSource,
  PaddedBatch,
  SamplingScheme,
  fixed_size_batches,
  poisson_batches,
  shuffled_batches,
)
from optax_zoo.privacy._clipping import (
  ClipStats,
  augmentation_multiplicity,
  check_private_model,
  clipped_grad_sum,
  layer_bounds,
  model_clipped_grad_sum,
)
from optax_zoo.privacy._ghost import ghost_clipped_grad_sum, unsupported_layers

__all__ = [
  'BatchSource',
  'ClipStats',
  'DPAggregateState',
  'PaddedBatch',
  'PrivacyAccountant',
  'PrivacyReport',
  'SamplingScheme',
  'augmentation_multiplicity',
  'calibrate_noise',
  'check_private_model',
  'clipped_grad_sum',
  'dp_aggregate',
  'dp_event',
  'dp_sgd',
  'epsilon',
  'fixed_size_batches',
  'ghost_clipped_grad_sum',
  'layer_bounds',
  'model_clipped_grad_sum',
  'poisson_batches',
  'privacy_report',
  'shuffled_batches',
  'unsupported_layers',
]
