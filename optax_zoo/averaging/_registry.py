"""Registry entries of `optax_zoo.averaging`, collected by the registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optax_zoo import adaptive, averaging
from optax_zoo._src.method_info import BAD_ADAM_KWARGS, MethodInfo, paper


def _lookahead_kwargs(learning_rate: Any) -> dict[str, Any]:
  return {
    'inner': adaptive.adam(learning_rate),
    'sync_period': 6,
    'alpha': 0.5,
  }


def _sgd_wrapper_kwargs(**extra: Any) -> Callable[[Any], dict[str, Any]]:
  """Example kwargs of an averaging wrapper around SGD with momentum."""

  def kwargs(learning_rate: Any) -> dict[str, Any]:
    return {
      'inner': adaptive.sgd(learning_rate, momentum=0.9),
      'start_step': 1,
      **extra,
    }

  return kwargs


_BAD_AVERAGING = ({'start_step': -1}, {'every_k': 0}, {'inner': 'sgd'})
_GADAM_PAPER = paper(
  'Iterate Averaging in the Quest for Best Test Error',
  'Granziol et al.',
  2020,
  '2003.01247',
)

ENTRIES = (
  MethodInfo(
    name='lookahead',
    category='averaging',
    factory=averaging.lookahead,
    paper=paper(
      'Lookahead Optimizer: k steps forward, 1 step back',
      'Zhang et al.',
      2019,
      '1907.08610',
    ),
    reference=('optax.lookahead (bit-identical); pytorch-optimizer Lookahead'),
    state_copies=1,
    learning_rate=0.03,
    example_kwargs=_lookahead_kwargs,
    invalid_kwargs=(
      {'sync_period': 0},
      {'alpha': 1.5},
      {'inner': 'adam'},
    ),
    has_eval_params=True,
    deviations=(
      "drop-in: slow weights live in the state instead of optax's "
      'LookaheadParams; state copies count the slow weights only'
    ),
    parity='0 (optax.lookahead), 1e-5 (pytorch-optimizer)',
  ),
  MethodInfo(
    name='swa',
    category='averaging',
    factory=averaging.swa,
    paper=paper(
      'Averaging Weights Leads to Wider Optima and Better Generalization',
      'Izmailov et al.',
      2018,
      '1803.05407',
    ),
    reference=(
      'timgaripov/swa; torch.optim.swa_utils.AveragedModel (parity test)'
    ),
    state_copies=1,
    learning_rate=0.1,
    example_kwargs=_sgd_wrapper_kwargs(every_k=1),
    invalid_kwargs=_BAD_AVERAGING,
    has_eval_params=True,
    deviations='snapshots counted in steps, not epochs',
    parity='2.4e-7 (torch AveragedModel)',
  ),
  MethodInfo(
    name='periodic_swa',
    category='averaging',
    factory=averaging.periodic_swa,
    paper=paper(
      'Stochastic Weight Averaging Revisited',
      'Guo, Jin & Liu',
      2022,
      '2201.00519',
    ),
    reference='the paper (no reference code)',
    state_copies=1,
    learning_rate=0.1,
    example_kwargs=_sgd_wrapper_kwargs(period=5),
    invalid_kwargs=(*_BAD_AVERAGING, {'period': 0}),
    has_eval_params=True,
    deviations='steps, not epochs; inner momentum kept across restarts',
  ),
  MethodInfo(
    name='swag',
    category='averaging',
    factory=averaging.swag,
    paper=paper(
      'A Simple Baseline for Bayesian Uncertainty in Deep Learning',
      'Maddox et al.',
      2019,
      '1902.02476',
    ),
    reference=(
      'wjmaddox/swa_gaussian:swag/posteriors/swag.py (NumPy transcription)'
    ),
    state_copies=4,
    learning_rate=0.1,
    example_kwargs=_sgd_wrapper_kwargs(rank=2),
    invalid_kwargs=(*_BAD_AVERAGING, {'rank': 0}),
    static_args=('rank',),
    has_eval_params=True,
    deviations=(
      'steps, not epochs; state copies are rank + 2; low-rank term divided '
      'by sqrt(rank - 1) (1 for rank 1), as the reference'
    ),
    parity='3e-7 (moments, NumPy transcription)',
  ),
  MethodInfo(
    name='fge',
    category='averaging',
    factory=averaging.fge,
    paper=paper(
      'Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs',
      'Garipov et al.',
      2018,
      '1802.10026',
    ),
    reference='timgaripov/dnn-mode-connectivity:fge.py',
    state_copies=3,
    learning_rate=0.1,
    example_kwargs=lambda lr: {
      'inner': adaptive.sgd(lr, momentum=0.9),
      'cycle_steps': 4,
      'num_snapshots': 3,
    },
    invalid_kwargs=(
      {'cycle_steps': 1},
      {'num_snapshots': 0},
      {'start_step': -1},
      {'inner': 'sgd'},
    ),
    static_args=('cycle_steps', 'num_snapshots'),
    deviations=(
      'steps, not epochs; an ensemble (fge_ensemble_predict), so no single '
      'eval params'
    ),
  ),
  MethodInfo(
    name='gadam',
    category='averaging',
    factory=averaging.gadam,
    paper=_GADAM_PAPER,
    reference='diegogranziol/Gadam:core/methods (not run; optax adamw + IA)',
    state_copies=3,
    learning_rate=0.03,
    example_kwargs=lambda lr: {'learning_rate': lr, 'start_step': 1},
    invalid_kwargs=(
      *BAD_ADAM_KWARGS,
      {'weight_decay': -1.0},
      {'start_step': -1},
    ),
    has_eval_params=True,
    deviations='optax adamw weight decay form; steps, not epochs',
  ),
  MethodInfo(
    name='gadamx',
    category='averaging',
    factory=averaging.gadamx,
    paper=_GADAM_PAPER,
    reference='diegogranziol/Gadam:core/methods; uclaml/Padam (not run)',
    state_copies=4,
    learning_rate=0.3,
    example_kwargs=lambda lr: {'learning_rate': lr, 'start_step': 1},
    invalid_kwargs=(
      *BAD_ADAM_KWARGS,
      {'partial': 0.75},
      {'every_k': 0},
    ),
    has_eval_params=True,
    deviations=(
      'Padam bias correction on the moments, not the step size; steps, not '
      'epochs'
    ),
  ),
  MethodInfo(
    name='weight_ema',
    category='averaging',
    factory=averaging.weight_ema,
    paper=paper(
      'Unlocking High-Accuracy Differentially Private Image Classification '
      'through Scale',
      'De et al.',
      2022,
      '2204.13650',
    ),
    reference=(
      'google-deepmind/jax_privacy:jax_privacy/dp_sgd/averaging.py ema '
      '(NumPy transcription, tests/averaging/ema_test.py)'
    ),
    state_copies=1,
    learning_rate=0.1,
    example_kwargs=_sgd_wrapper_kwargs(decay=0.9),
    invalid_kwargs=(
      {'start_step': -1},
      {'decay': 1.0},
      {'decay': -0.1},
      {'inner': 'sgd'},
    ),
    has_eval_params=True,
  ),
)
