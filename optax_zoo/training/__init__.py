"""Data, models, the training loop and training procedures.

Procedures that change what a step trains on are ``batch_transform``s of
the loop: `batch_augmentation` (with the 1-D augmentations of
``augment``), `adversarial_training` (PGD, FGSM with random start) and the
`h_sat` / `p_sat` curricula.

`supply_extra_args` is the package's one supplier of extra update arguments
(``value``, ``value_sq_mean``, ``grad_fn``), which the loop uses; call it to
feed a method that takes them from a loop of your own.
"""

from optax_zoo._src.extra_args import supply as supply_extra_args
from optax_zoo.training.adversarial import (
  adversarial_training,
  catastrophic_overfitting,
  fgsm_attack,
  h_sat,
  make_robust_eval_fn,
  p_sat,
  pgd_attack,
  pgd_check,
  robust_accuracy,
)
from optax_zoo.training.augment import (
  AugmentFn,
  batch_augmentation,
  compose,
  crop_and_resize,
  gaussian_noise,
  random_scale,
  random_shift,
  shift_and_noise,
)
from optax_zoo.training.data import (
  Dataset,
  default_cache_dir,
  digits,
  mnist1d,
  with_label_noise,
)
from optax_zoo.training.loop import (
  BatchTransform,
  EvalHook,
  History,
  LossFn,
  StepContext,
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
  'BatchTransform',
  'Dataset',
  'EvalHook',
  'History',
  'LossFn',
  'PrivateTrainResult',
  'ResNet1D',
  'ScaleInvariantCNN',
  'StepContext',
  'TrainResult',
  'TrainState',
  'WSConv1D',
  'adversarial_training',
  'batch_augmentation',
  'catastrophic_overfitting',
  'compose',
  'crop_and_resize',
  'cross_entropy_loss',
  'default_cache_dir',
  'digits',
  'fgsm_attack',
  'gaussian_noise',
  'h_sat',
  'make_eval_fn',
  'make_robust_eval_fn',
  'make_train_fn',
  'mnist1d',
  'p_sat',
  'pgd_attack',
  'pgd_check',
  'random_scale',
  'random_shift',
  'robust_accuracy',
  'scale_invariant_mask',
  'shift_and_noise',
  'supply_extra_args',
  'train',
  'train_private',
  'train_seeds',
  'with_label_noise',
]
