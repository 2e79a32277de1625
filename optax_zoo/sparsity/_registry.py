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
_FREE_TICKETS_PAPER = paper(
  'Deep Ensembling with No Overhead for either Training or Testing: The '
  'All-Round Blessings of Dynamic Sparsity',
  'Liu et al.',
  2022,
  '2106.14568',
)
_SUP_TICKETS_PAPER = paper(
  'Superposing Many Tickets into One: A Performance Booster for Sparse '
  'Neural Network Training',
  'Yin et al.',
  2022,
  '2205.15322',
)
_TICKETS_COMMON = (
  'mask updates step first and grow by gradient as the reference, but '
  'k = floor(f n) (reference ceil) with ties to the lower index; grown '
  'moments zeroed; re-exploration one step after the reference (after '
  "the next window's first inner step); counted in steps"
)
_BAD_TICKETS = (
  *_BAD_COMMON,
  {'update_every': 0},
  {'drop_fraction': 1.5},
  {'large_drop_fraction': -0.1},
  {'drop_fraction_schedule': 'linear'},
  {'growth': 'momentum'},
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


# FreeTickets' EDST at the paper's 80% sparsity and 3 tickets, Sup-tickets
# at 80% with the reference's 3 cycles of ~3% of training each; the lr
# grid's 2000 steps, a constant rate (their schedules are
# `free_tickets_schedule` and `sup_tickets_schedule`, for the experiments).
def _free_tickets_kwargs(learning_rate: Any) -> dict[str, Any]:
  return {
    'inner': adaptive.sgd(learning_rate, momentum=0.9),
    'sparsity': 0.8,
    'total_steps': 2000,
    'num_tickets': 3,
    'update_every': 100,
  }


def _sup_tickets_kwargs(learning_rate: Any) -> dict[str, Any]:
  return {
    'inner': adaptive.sgd(learning_rate, momentum=0.9),
    'sparsity': 0.8,
    'total_steps': 2000,
    'cycle_steps': 64,
    'num_cycles': 3,
    'update_every': 100,
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
  MethodInfo(
    name='free_tickets',
    category='sparsity',
    factory=sparsity.free_tickets,
    paper=_FREE_TICKETS_PAPER,
    reference=(
      'VITA-Group/FreeTickets main_EDST.py and sparselearning/core.py '
      'Masking (PyTorch, CUDA-only; transcribed, not run)'
    ),
    # Masks and the num_tickets - 1 stored tickets (the last is the params).
    state_copies=_MASK_COPIES + 2,
    learning_rate=0.1,
    example_kwargs=_free_tickets_kwargs,
    invalid_kwargs=(
      *_BAD_TICKETS,
      {'num_tickets': 0},
      {'exploration_steps': 1999},
    ),
    static_args=(
      'sparsity',
      'total_steps',
      'num_tickets',
      'exploration_steps',
      'update_every',
      'key',
    ),
    deviations=(
      "a ticket is its window's last weights (reference: best validation "
      'checkpoint); a weight dropped and regrown keeps its value '
      '(reference zeroes it); the reference passes a constant drop rate '
      '(its cosine decay has no effect; followed) and never resets '
      'momentum; ' + _TICKETS_COMMON
    ),
  ),
  MethodInfo(
    name='sup_tickets',
    category='sparsity',
    factory=sparsity.sup_tickets,
    paper=_SUP_TICKETS_PAPER,
    reference=(
      'luuyin/Sup-tickets CIFAR/main_suptickets.py (CAA_average, global '
      'topk pruning) and CIFAR/sparselearning/core.py (transcribed, not run)'
    ),
    # Masks and the float32 superposed ticket.
    state_copies=_MASK_COPIES + 1,
    learning_rate=0.1,
    example_kwargs=_sup_tickets_kwargs,
    invalid_kwargs=(
      *_BAD_TICKETS,
      {'cycle_steps': 0},
      {'num_cycles': 0},
      {'num_cycles': 40},
      {'superposition_factor': 0.0},
    ),
    static_args=(
      'sparsity',
      'total_steps',
      'cycle_steps',
      'num_cycles',
      'update_every',
      'key',
    ),
    # Its state defines eval_params (the superposed ticket), but with the
    # example's 2000 steps the first superposition comes at step 1872:
    # the common test's 3-step run must see the trained params, which
    # this flag asserts.
    has_eval_params=False,
    deviations=(
      'pruning keeps exactly the masks count (reference int(N d) and all '
      'ties at the threshold); BatchNorm statistics recomputed, not '
      'averaged; the DST path only (no GraNet); ' + _TICKETS_COMMON
    ),
  ),
)
