"""Registry entries of `optax_zoo.sharpness`, collected by the registry."""

from __future__ import annotations

from optax_zoo import adaptive
from optax_zoo._src.method_info import MethodInfo, paper
from optax_zoo.sharpness import _entropy_sgd, _replicated, _sam, _sphere

_BAD_SAM = ({'inner': 'sgd'}, {'num_splits': 0}, {'eps': -1.0})


def _sam_kwargs(**extra):
  """Example kwargs of a SAM-family wrapper around SGD with momentum.

  rho is small: SAM's fixed point on Rosenbrock's narrow valley is off the
  minimum by about 0.44 at rho = 0.05 and 0.02 at rho = 0.005.
  """

  def kwargs(learning_rate):
    return {'inner': adaptive.sgd(learning_rate, momentum=0.9), **extra}

  return kwargs


def _gsam_kwargs(learning_rate):
  # rho follows the inner rate, peaking at the schedule's value at step 0
  # (the registered schedules decay).
  peak = learning_rate(0) if callable(learning_rate) else learning_rate
  return {
    'inner': adaptive.sgd(learning_rate, momentum=0.9),
    'rho_max': 0.01,
    'rho_min': 0.002,
    'alpha': 0.1,
    'lr_schedule': learning_rate,
    'lr_max': peak,
  }


_SAM_PAPER = paper(
  'Sharpness-Aware Minimization for Efficiently Improving Generalization',
  'Foret et al.',
  2021,
  '2010.01412',
)

_SAM_ENTRIES: tuple[MethodInfo, ...] = (
  MethodInfo(
    name='sam',
    category='sharpness',
    factory=_sam.sam,
    paper=_SAM_PAPER,
    reference=(
      'google-research/sam (sam_jax/training_utils/flax_training.py); '
      'optax.contrib.sam opaque mode, sync_period=2'
    ),
    state_copies=0,
    learning_rate=0.1,
    example_kwargs=_sam_kwargs(rho=0.005),
    invalid_kwargs=(*_BAD_SAM, {'rho': -0.1}),
    static_args=('num_splits',),
    extra_args=('grad_fn',),
    deviations=(
      'eps=1e-12 added to the gradient norm (no NaN at a stationary point); '
      'clipping and weight decay belong to inner and the loss'
    ),
    parity=(
      'closed-form SAM step: max abs 3.4e-7 over 60 steps (float32 against '
      'float64 NumPy, iterates of order 1); optax.contrib.sam opaque mode, '
      'sync_period=2: 2.4e-7'
    ),
  ),
  MethodInfo(
    name='asam',
    category='sharpness',
    factory=_sam.asam,
    paper=paper(
      'ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant '
      'Learning of Deep Neural Networks',
      'Kwon et al.',
      2021,
      '2102.11600',
    ),
    reference='SamsungLabs/ASAM (asam.py), NumPy transcription',
    state_copies=0,
    learning_rate=0.1,
    example_kwargs=_sam_kwargs(rho=0.005, eta=0.01),
    invalid_kwargs=(*_BAD_SAM, {'rho': -0.1}, {'eta': -1.0}),
    static_args=('num_splits',),
    extra_args=('grad_fn',),
    deviations=(
      'default mask: leaves with ndim > 1 (the reference scales every '
      'parameter named weight, BatchNorm scales included)'
    ),
    parity='its formula (NumPy, float64): max abs 7.8e-7 over 60 steps',
  ),
  MethodInfo(
    name='gsam',
    category='sharpness',
    factory=_sam.gsam,
    paper=paper(
      'Surrogate Gap Minimization Improves Sharpness-Aware Training',
      'Zhuang et al.',
      2022,
      '2203.08065',
    ),
    reference=(
      'google-research/big_vision (big_vision/trainers/proj/gsam/gsam.py '
      'gsam_gradient), NumPy transcription'
    ),
    state_copies=0,
    learning_rate=0.1,
    example_kwargs=_gsam_kwargs,
    invalid_kwargs=(
      *_BAD_SAM,
      {'rho_max': -0.1},
      {'rho_min': 0.5},
      {'alpha': -1.0},
      {'lr_max': None},
    ),
    static_args=('num_splits',),
    extra_args=('grad_fn',),
    deviations=(
      'eps also in the norm of the decomposition (no NaN at a stationary '
      'point); rho follows lr_schedule (named so that it is not taken for '
      "the wrapper's own learning rate)"
    ),
    parity=(
      'NumPy transcription of gsam_gradient: max abs 3.7e-7 over 60 steps '
      '(both decompositions, plain and adaptive perturbation)'
    ),
  ),
)


def _entropy_kwargs(learning_rate):
  """Example kwargs of Entropy-SGD around Nesterov SGD (the reference's).

  ``minibatches=1``: the common tests and the bench supply ``grad_fn`` on
  one batch; a training run cuts its batch into ``langevin_steps`` parts
  (the default). Few, small Langevin steps keep the toy problems stable
  (Rosenbrock's curvature reaches ~1000) and the tests fast.
  """
  return {
    'inner': adaptive.sgd(learning_rate, momentum=0.9, nesterov=True),
    'langevin_steps': 5,
    'minibatches': 1,
    'gamma': 0.03,
    'scoping': 1e-3,
    'langevin_lr': 1e-3,
    'langevin_momentum': 0.0,
  }


def _replicated_kwargs(learning_rate):
  return {
    'inner': adaptive.sgd(learning_rate, momentum=0.9),
    'num_replicas': 2,
    'coupling': 0.1,
  }


_ENTROPY_ENTRIES: tuple[MethodInfo, ...] = (
  MethodInfo(
    name='entropy_sgd',
    category='sharpness',
    factory=_entropy_sgd.entropy_sgd,
    paper=paper(
      'Entropy-SGD: Biasing Gradient Descent Into Wide Valleys',
      'Chaudhari et al.',
      2017,
      '1611.01838',
    ),
    reference=(
      'ucla-vision/entropy-sgd python/optim.py (NumPy transcription, '
      'scoping 0) and entropyoptim.lua (scoping)'
    ),
    state_copies=0,
    # The grid's top point (accuracy still rising): the outer gradient
    # x - mu is a Langevin displacement, of the order of langevin_lr (1e-3
    # in the example) times the gradient, so the outer rate is large.
    learning_rate=10.0,
    example_kwargs=_entropy_kwargs,
    invalid_kwargs=(
      {'inner': 'sgd'},
      {'langevin_steps': 0},
      {'gamma': 0.0},
      {'gamma': -1.0},
      {'scoping': -1e-3},
      {'langevin_lr': 0.0},
      {'noise': -1.0},
      {'mu_decay': 1.0},
      {'langevin_momentum': 1.5},
      {'minibatches': 2},
      {'minibatches': 0},
    ),
    static_args=('langevin_steps', 'minibatches', 'langevin_nesterov', 'key'),
    extra_args=('grad_fn',),
    deviations=(
      'gamma scoped (1 + scoping)^t as the Lua original and the paper (the '
      'port never increments t); inner starts from its own init (the port '
      'seeds its outer momentum with the first gradient); the gradient at x '
      'is unused except that its NaNs pass through'
    ),
    parity=(
      'NumPy transcription of python/optim.py, scoping 0: 1e-5 over 6 '
      'outer steps (see tests/sharpness/entropy_sgd_test.py)'
    ),
  ),
  MethodInfo(
    name='replicated_sgd',
    category='sharpness',
    factory=_replicated.replicated_sgd,
    paper=paper(
      'Entropic gradient descent algorithms and wide flat minima',
      'Pittorino et al.',
      2021,
      '2006.07897',
    ),
    reference=(
      "Pittorino et al.'s sacreddnn (copy in romanhahn/mean-dimension): "
      'models/robust.py RobustNet and its training script (coupling '
      'loss, lr *= y, exponential coupling schedule)'
    ),
    state_copies=0,
    # Not on the CNN learning-rate grid (it trains replicated parameters):
    # the rate tuned in experiments/sharpness/entropy_replicated.py.
    learning_rate=0.3,
    example_kwargs=_replicated_kwargs,
    invalid_kwargs=(
      {'inner': 'sgd'},
      {'num_replicas': 1},
      {'num_replicas': 0},
      {'coupling': -0.1},
    ),
    static_args=('num_replicas',),
    has_eval_params=True,
    replicas=2,
    deviations=(
      'parameters carry a leading replica axis; coupling = 2 g of the '
      'reference; no automatic initial coupling; inner vmapped per replica'
    ),
    parity=(
      "one step of the reference's coupled loss with lr * y: 1e-5; "
      'coupling 0 vs independent runs: bit-identical (SGD), 1 ulp (Adam, '
      'global-norm clip) (see tests/sharpness/replicated_test.py)'
    ),
  ),
)


def _every_leaf(params):
  """The registry's example mask: all leaves on one sphere."""
  del params
  return True


_SPHERE_ENTRIES: tuple[MethodInfo, ...] = (
  MethodInfo(
    name='sphere_sgd',
    category='sharpness',
    factory=_sphere.sphere_sgd,
    paper=paper(
      'Training Scale-Invariant Neural Networks on the Sphere Can Happen '
      'in Three Regimes',
      'Kodryan, Lobacheva, Nakhodnov & Vetrov',
      2022,
      '2209.03695',
    ),
    reference=(
      'tipt0p/three_regimes_on_the_sphere: train.py --fix_elr / '
      '--fix_all_elr, training_utils.fix_si_pnorm(s) (torch transcription)'
    ),
    state_copies=0,
    learning_rate=0.001,
    example_kwargs=lambda lr: {'effective_lr': lr, 'mask': _every_leaf},
    invalid_kwargs=(
      {'effective_lr': 0.0},
      {'effective_lr': -1.0},
      {'mask': {'w': False, 'b': False}},
      {'learning_rate': -1.0},
      {'momentum': 1.5},
      {'weight_decay': -1.0},
    ),
    static_args=('mask', 'per_filter'),
    parity='4e-7 (torch transcription)',
    deviations=(
      'lr = elr * ||w0||^2 from the state each step; per_filter equalizes '
      'the filter norms in its first update, not before the first gradient '
      '(sphere_equalize_filters does it first); filters are the last axis'
    ),
  ),
)

ENTRIES = (*_SAM_ENTRIES, *_ENTROPY_ENTRIES, *_SPHERE_ENTRIES)
