"""Registry entries of `optax_zoo.sparsity`, collected by the registry."""

from __future__ import annotations

from typing import Any

from optax_zoo import adaptive, sparsity
from optax_zoo._src.method_info import MethodInfo, paper

_RIGL_PAPER = paper(
  'Rigging the Lottery: Making All Tickets Winners',
  'Evci et al.',
  2020,
  '1911.11134',
)
_SET_PAPER = paper(
  'Scalable training of artificial neural networks with adaptive sparse '
  'connectivity inspired by network science',
  'Mocanu et al.',
  2018,
  '1707.04780',
)
# One bool per parameter, over its 4 float32 bytes; the count and key are
# negligible.
_MASK_COPIES = 0.25
# `sparsity` fixes the masks' densities and `update_every`, `total_steps`,
# `end_fraction` the mask-update schedule: Python numbers, not traced.
_STATIC = ('sparsity', 'update_every', 'total_steps', 'end_fraction', 'key')
_BAD_COMMON = (
  {'sparsity': 1.0},
  {'sparsity': -0.1},
  {'distribution': 'gaussian'},
  {'inner': 'sgd'},
)
_BAD_DYNAMIC = (
  *_BAD_COMMON,
  {'update_every': 0},
  {'drop_fraction': 1.5},
  {'drop_fraction_schedule': 'linear'},
  {'end_fraction': 0.0},
  {'total_steps': 0},
)
_DEVIATIONS = (
  'initial masks hold round(density * size) ones (reference: size - '
  'floor(sparsity * size)); ERK budget in real numbers; bool masks'
)


# The paper's 90% sparsity and the lr grid's and bench's 2000 steps.
def _dynamic_kwargs(learning_rate: Any) -> dict[str, Any]:
  return {
    'inner': adaptive.sgd(learning_rate, momentum=0.9),
    'sparsity': 0.9,
    'total_steps': 2000,
    'update_every': 100,
  }


def _static_kwargs(learning_rate: Any) -> dict[str, Any]:
  return {
    'inner': adaptive.sgd(learning_rate, momentum=0.9),
    'sparsity': 0.9,
  }


ENTRIES = (
  MethodInfo(
    name='rigl',
    category='sparsity',
    factory=sparsity.rigl,
    paper=_RIGL_PAPER,
    reference=(
      'google-research/rigl sparse_optimizers_base.SparseRigLOptimizerBase '
      'and sparse_utils.get_sparsities_erdos_renyi (TF1; transcribed, not run)'
    ),
    state_copies=_MASK_COPIES,
    # The lr grid's optimum (SGD momentum inside, 90% ERK sparsity, CNN).
    learning_rate=0.1,
    example_kwargs=_dynamic_kwargs,
    invalid_kwargs=_BAD_DYNAMIC,
    static_args=_STATIC,
    deviations=(
      'only active weights compete to stay (reference: pruned entries '
      'ranked by noise too); last update below end_fraction * T (reference '
      '<= end_step, fraction 0 there); ' + _DEVIATIONS
    ),
  ),
  MethodInfo(
    name='set_sparse',
    category='sparsity',
    factory=sparsity.set_sparse,
    paper=_SET_PAPER,
    reference=(
      'google-research/rigl sparse_optimizers_base.SparseSETOptimizerBase '
      '(transcribed, not run)'
    ),
    state_copies=_MASK_COPIES,
    learning_rate=0.3,  # the lr grid's optimum
    example_kwargs=_dynamic_kwargs,
    invalid_kwargs=_BAD_DYNAMIC,
    static_args=_STATIC,
    deviations=(
      "the RigL authors' SET (annealed magnitude drop per layer, uniform "
      "regrowth), not the paper's epoch-wise thresholds; " + _DEVIATIONS
    ),
  ),
  MethodInfo(
    name='static_sparse',
    category='sparsity',
    factory=sparsity.static_sparse,
    paper=_RIGL_PAPER,
    reference=(
      "the RigL paper's Static baseline: a fixed random mask from "
      'google-research/rigl sparse_utils (get_mask_random, ERK)'
    ),
    state_copies=_MASK_COPIES,
    learning_rate=0.1,  # the lr grid's optimum
    example_kwargs=_static_kwargs,
    invalid_kwargs=_BAD_COMMON,
    static_args=('sparsity', 'key'),
    deviations=(
      "fixed mask (the reference's SparseStaticOptimizer re-initializes "
      'dropped weights in place); ' + _DEVIATIONS
    ),
  ),
)
