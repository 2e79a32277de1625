"""optax_zoo: the optimization methods of modern deep learning for optax.

Every method is an `optax.GradientTransformation`, importable as
``optax_zoo.<name>``, registered in `optax_zoo.methods()` and buildable by name
with `optax_zoo.create(name, **kwargs)`.
"""

from optax_zoo import schedules
from optax_zoo.adaptive import (
  adafactor,
  adam,
  adamax,
  adamw,
  adan,
  lamb,
  lars,
  nadam,
  novograd,
  radam,
  sgd,
  sign_sgd,
  signum,
)

# >>> imports A
# >>> imports B
# >>> imports C
# >>> imports D
from optax_zoo.averaging import (
  FGEState,
  LookaheadState,
  PadamState,
  SWAGState,
  SWAState,
  bayesian_model_average,
  curve_loss_fn,
  curve_point,
  eval_params,
  evaluate_curve,
  fge,
  fge_ensemble_predict,
  gadam,
  gadamx,
  lookahead,
  periodic_swa,
  scale_by_padam,
  swa,
  swag,
  swag_sample,
  update_batch_stats,
)
from optax_zoo.registry import MethodInfo, Paper, create, get, methods
from optax_zoo.schedules import fge_schedule, swa_schedule

__version__ = '0.1.0'

__all__ = [
  'FGEState',
  'LookaheadState',
  'MethodInfo',
  'PadamState',
  'Paper',
  'SWAGState',
  'SWAState',
  'adafactor',
  'adam',
  'adamax',
  'adamw',
  'adan',
  'bayesian_model_average',
  'create',
  'curve_loss_fn',
  'curve_point',
  'eval_params',
  'evaluate_curve',
  'fge',
  'fge_ensemble_predict',
  'fge_schedule',
  'gadam',
  'gadamx',
  'get',
  'lamb',
  'lars',
  'lookahead',
  'methods',
  'nadam',
  'novograd',
  'periodic_swa',
  'radam',
  'scale_by_padam',
  'schedules',
  'sgd',
  'sign_sgd',
  'signum',
  'swa',
  'swa_schedule',
  'swag',
  'swag_sample',
  'update_batch_stats',
  # >>> __all__ A
  # >>> __all__ B
  # >>> __all__ C
  # >>> __all__ D
]
