"""Sharpness-aware and flat-minima training.

SAM, ASAM and GSAM (with m-sharpness across devices or batch parts),
Entropy-SGD, Replicated-SGD, and SGD on the sphere at a fixed effective
learning rate. The methods that need the gradient at other weights take it
as the ``grad_fn`` extra update argument
(`optax_zoo.training.supply_extra_args` builds it; the training loop
passes it). Flatness
measures of the minima found are in `optax_zoo.analysis`.
"""

from optax_zoo.sharpness._entropy_sgd import EntropySGDState, entropy_sgd
from optax_zoo.sharpness._replicated import (
  ReplicatedState,
  exponential_coupling,
  replica_mean,
  replicate,
  replicated_loss,
  replicated_sgd,
)
from optax_zoo.sharpness._sam import SAMState, asam, gsam, sam
from optax_zoo.sharpness._sphere import (
  SphereSGDState,
  sphere_equalize_filters,
  sphere_sgd,
)

__all__ = [
  'EntropySGDState',
  'ReplicatedState',
  'SAMState',
  'SphereSGDState',
  'asam',
  'entropy_sgd',
  'exponential_coupling',
  'gsam',
  'replica_mean',
  'replicate',
  'replicated_loss',
  'replicated_sgd',
  'sam',
  'sphere_equalize_filters',
  'sphere_sgd',
]
