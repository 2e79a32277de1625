"""Sparse training: masks, sparsity distributions, RigL, SET, static sparse.

Masks are a tree of bool arrays beside the parameters (all True for the
dense leaves); `sparsity_distribution` spreads a target over layers
(uniform, Erdos-Renyi, ERK); `rigl`, `set_sparse` and `static_sparse` wrap
any optax optimizer; `inference_flops` and `training_flops` count the cost
of a sparse model as the RigL paper does.
"""

from optax_zoo.sparsity._flops import (
  dense_flops,
  inference_flops,
  training_flops,
)
from optax_zoo.sparsity._masks import (
  DISTRIBUTIONS,
  apply_masks,
  default_mask,
  init_masks,
  mask_densities,
  random_mask,
  sparse_leaves,
  sparsity_distribution,
)
from optax_zoo.sparsity._rigl import (
  DROP_FRACTION_SCHEDULES,
  SparseState,
  drop_and_grow,
  drop_fraction_at,
  rigl,
  set_sparse,
  static_sparse,
)

__all__ = [
  'DISTRIBUTIONS',
  'DROP_FRACTION_SCHEDULES',
  'SparseState',
  'apply_masks',
  'default_mask',
  'dense_flops',
  'drop_and_grow',
  'drop_fraction_at',
  'inference_flops',
  'init_masks',
  'mask_densities',
  'random_mask',
  'rigl',
  'set_sparse',
  'sparse_leaves',
  'sparsity_distribution',
  'static_sparse',
  'training_flops',
]
