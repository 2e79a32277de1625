"""Sparse training: masks, distributions, RigL, SET, static, tickets.

Masks are a tree of bool arrays beside the parameters (all True for the
dense leaves); `sparsity_distribution` spreads a target over layers
(uniform, Erdos-Renyi, ERK); `rigl`, `set_sparse` and `static_sparse` wrap
any optax optimizer; `inference_flops` and `training_flops` count the cost
of a sparse model as the RigL paper does; `free_tickets` (an ensemble of
sparse tickets from one run, `ensemble_predict`) and `sup_tickets` (tickets
superposed into one) build on the same machinery.
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
from optax_zoo.sparsity._tickets import (
  GROWTH_MODES,
  FreeTicketsState,
  SupTicketsState,
  ensemble_predict,
  free_tickets,
  free_tickets_members,
  free_tickets_schedule,
  sup_tickets,
  sup_tickets_schedule,
)

__all__ = [
  'DISTRIBUTIONS',
  'DROP_FRACTION_SCHEDULES',
  'GROWTH_MODES',
  'FreeTicketsState',
  'SparseState',
  'SupTicketsState',
  'apply_masks',
  'default_mask',
  'dense_flops',
  'drop_and_grow',
  'drop_fraction_at',
  'ensemble_predict',
  'free_tickets',
  'free_tickets_members',
  'free_tickets_schedule',
  'inference_flops',
  'init_masks',
  'mask_densities',
  'random_mask',
  'rigl',
  'set_sparse',
  'sparse_leaves',
  'sparsity_distribution',
  'static_sparse',
  'sup_tickets',
  'sup_tickets_schedule',
  'training_flops',
]
