"""Adaptive-moment and sign-based optimizers."""

from optax_zoo.adaptive._acprop import acprop, scale_by_acprop
from optax_zoo.adaptive._adafactor import adafactor
from optax_zoo.adaptive._adam import adam, adamax, nadam
from optax_zoo.adaptive._adamw import adamw
from optax_zoo.adaptive._adan import AdanState, adan, scale_by_adan
from optax_zoo.adaptive._arsg import ArsgState, arsg, scale_by_arsg
from optax_zoo.adaptive._diffgrad import (
  DiffGradState,
  diffgrad,
  scale_by_diffgrad,
)
from optax_zoo.adaptive._kfac import (
  FISHER_TYPES,
  INVERSE_MODES,
  KFACLayer,
  KFACLayerStats,
  KFACState,
  kfac,
  kfac_check_stats,
  kfac_factors,
  kfac_init,
  kfac_inverses,
  kfac_layer_stats,
  kfac_layers,
  kfac_precondition,
  kfac_precondition_updates,
  kfac_running_factors,
  kfac_value_and_grad,
  scale_by_kfac,
)
from optax_zoo.adaptive._koala import (
  KoalaMState,
  KoalaVState,
  koala_m,
  koala_v,
  scale_by_koala_m,
  scale_by_koala_v,
)
from optax_zoo.adaptive._lambc import lamb, lambc, scale_by_lambc
from optax_zoo.adaptive._lars import ScaleByLarsState, lars, scale_by_lars
from optax_zoo.adaptive._novograd import novograd, scale_by_novograd
from optax_zoo.adaptive._pnm import (
  AdaPNMState,
  PNMState,
  adapnm,
  pnm,
  scale_by_adapnm,
  scale_by_pnm,
)
from optax_zoo.adaptive._radam import radam, scale_by_radam
from optax_zoo.adaptive._sgd import sgd
from optax_zoo.adaptive._signsgd import (
  GeneralizedSignSGDState,
  generalized_signsgd,
  scale_by_generalized_signsgd,
  sign_sgd,
  signum,
)
from optax_zoo.adaptive._weight_rescaling import (
  WeightRescalingState,
  weight_rescaling,
)

__all__ = [
  'FISHER_TYPES',
  'INVERSE_MODES',
  'AdaPNMState',
  'AdanState',
  'ArsgState',
  'DiffGradState',
  'GeneralizedSignSGDState',
  'KFACLayer',
  'KFACLayerStats',
  'KFACState',
  'KoalaMState',
  'KoalaVState',
  'PNMState',
  'ScaleByLarsState',
  'WeightRescalingState',
  'acprop',
  'adafactor',
  'adam',
  'adamax',
  'adamw',
  'adan',
  'adapnm',
  'arsg',
  'diffgrad',
  'generalized_signsgd',
  'kfac',
  'kfac_check_stats',
  'kfac_factors',
  'kfac_init',
  'kfac_inverses',
  'kfac_layer_stats',
  'kfac_layers',
  'kfac_precondition',
  'kfac_precondition_updates',
  'kfac_running_factors',
  'kfac_value_and_grad',
  'koala_m',
  'koala_v',
  'lamb',
  'lambc',
  'lars',
  'nadam',
  'novograd',
  'pnm',
  'radam',
  'scale_by_acprop',
  'scale_by_adan',
  'scale_by_adapnm',
  'scale_by_arsg',
  'scale_by_diffgrad',
  'scale_by_generalized_signsgd',
  'scale_by_kfac',
  'scale_by_koala_m',
  'scale_by_koala_v',
  'scale_by_lambc',
  'scale_by_lars',
  'scale_by_novograd',
  'scale_by_pnm',
  'scale_by_radam',
  'sgd',
  'sign_sgd',
  'signum',
  'weight_rescaling',
]
