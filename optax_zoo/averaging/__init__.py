"""Lookahead, weight averaging and ensembles, with `eval_params`."""

from optax_zoo.averaging._batch_stats import eval_model, update_batch_stats
from optax_zoo.averaging._curves import (
  curve_loss_fn,
  curve_point,
  evaluate_curve,
)
from optax_zoo.averaging._ema import WeightEMAState, weight_ema
from optax_zoo.averaging._eval_params import eval_params
from optax_zoo.averaging._fge import FGEState, fge, fge_ensemble_predict
from optax_zoo.averaging._gadam import (
  PadamState,
  gadam,
  gadamx,
  scale_by_padam,
)
from optax_zoo.averaging._lookahead import LookaheadState, lookahead
from optax_zoo.averaging._swa import (
  PeriodicSWAState,
  SWAState,
  periodic_swa,
  swa,
)
from optax_zoo.averaging._swag import (
  SWAGState,
  bayesian_model_average,
  swag,
  swag_sample,
)

__all__ = [
  'FGEState',
  'LookaheadState',
  'PadamState',
  'PeriodicSWAState',
  'SWAGState',
  'SWAState',
  'WeightEMAState',
  'bayesian_model_average',
  'curve_loss_fn',
  'curve_point',
  'eval_model',
  'eval_params',
  'evaluate_curve',
  'fge',
  'fge_ensemble_predict',
  'gadam',
  'gadamx',
  'lookahead',
  'periodic_swa',
  'scale_by_padam',
  'swa',
  'swag',
  'swag_sample',
  'update_batch_stats',
  'weight_ema',
]
