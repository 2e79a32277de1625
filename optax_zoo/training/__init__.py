"""Data, models and the training loop for optax_zoo's experiments.

`supply_extra_args` is the package's one supplier of extra update arguments
(``value``, ``value_sq_mean``, ``grad_fn``), which the loop uses; call it to
feed a method that takes them from a loop of your own.
"""

from optax_zoo._src.extra_args import supply as supply_extra_args
from optax_zoo.training.augment import AugmentFn, shift_and_noise
from optax_zoo.training.data import (
  Dataset,
  default_cache_dir,
  digits,
  mnist1d,
  with_label_noise,
)
from optax_zoo.training.loop import (
  EvalHook,
  History,
  LossFn,
  TrainResult,
  TrainState,
  cross_entropy_loss,
  make_eval_fn,
  make_train_fn,
  train,
  train_seeds,
)
from optax_zoo.training.models import (
  CNN1D,
  MLP,
  ResNet1D,
  ScaleInvariantCNN,
  WSConv1D,
  scale_invariant_mask,
)
from optax_zoo.training.private import PrivateTrainResult, train_private

__all__ = [
  'CNN1D',
  'MLP',
  'AugmentFn',
  'Dataset',
  'EvalHook',
  'History',
  'LossFn',
  'PrivateTrainResult',
  'ResNet1D',
  'ScaleInvariantCNN',
  'TrainResult',
  'TrainState',
  'WSConv1D',
  'cross_entropy_loss',
  'default_cache_dir',
  'digits',
  'make_eval_fn',
  'make_train_fn',
  'mnist1d',
  'scale_invariant_mask',
  'shift_and_noise',
  'supply_extra_args',
  'train',
  'train_private',
  'train_seeds',
  'with_label_noise',
]
