"""Registry entries of `optax_zoo.adaptive`, collected by the registry."""

from __future__ import annotations

import jax.numpy as jnp

from optax_zoo import adaptive
from optax_zoo._src.method_info import BAD_ADAM_KWARGS, MethodInfo, paper

_ADAM = paper(
  'Adam: A Method for Stochastic Optimization',
  'Kingma & Ba',
  2015,
  '1412.6980',
)
_SIGNSGD = paper(
  'signSGD: Compressed Optimisation for Non-Convex Problems',
  'Bernstein et al.',
  2018,
  '1802.04434',
)
_BAD_LR = ({'learning_rate': -1.0},)
# An integer moment would round every step away; it must fail at construction.
_BAD_MU = {'mu_dtype': jnp.int32}

ENTRIES = (
  MethodInfo(
    name='adam',
    category='adaptive',
    factory=adaptive.adam,
    paper=_ADAM,
    reference='optax.adam',
    state_copies=2,
    learning_rate=0.01,
    invalid_kwargs=(*BAD_ADAM_KWARGS, _BAD_MU),
    parity='5.1e-6 (torch Adam)',
  ),
  MethodInfo(
    name='adamax',
    category='adaptive',
    factory=adaptive.adamax,
    paper=_ADAM,
    reference='optax.adamax',
    state_copies=2,
    learning_rate=0.03,
    invalid_kwargs=BAD_ADAM_KWARGS,
    parity='1.6e-7 (torch Adamax)',
  ),
  MethodInfo(
    name='adamw',
    category='adaptive',
    factory=adaptive.adamw,
    paper=paper(
      'Decoupled Weight Decay Regularization',
      'Loshchilov & Hutter',
      2019,
      '1711.05101',
    ),
    reference=(
      'optax.adamw (bit-identical), torch.optim.AdamW; paper Algorithm 2 '
      '(NumPy transcription) with schedule_multiplier'
    ),
    state_copies=2,
    learning_rate=0.01,
    invalid_kwargs=(
      *BAD_ADAM_KWARGS,
      {'weight_decay': -1e-4},
      {'schedule_multiplier': -1.0},
      _BAD_MU,
    ),
    deviations=(
      'default is the optax/PyTorch form (decay scaled by the full learning '
      "rate); schedule_multiplier gives the paper's form (decay scaled by "
      'the schedule multiplier only)'
    ),
    parity='0 (optax.adamw), 6.8e-6 (torch AdamW), 6.4e-6 (Algorithm 2)',
  ),
  MethodInfo(
    name='radam',
    category='adaptive',
    factory=adaptive.radam,
    paper=paper(
      'On the Variance of the Adaptive Learning Rate and Beyond',
      'Liu et al.',
      2020,
      '1908.03265',
    ),
    reference=(
      'LiyuanLucasLiu/RAdam radam.py (NumPy transcription), '
      'torch.optim.RAdam, pytorch-optimizer RAdam'
    ),
    state_copies=2,
    learning_rate=0.03,
    invalid_kwargs=(
      *BAD_ADAM_KWARGS,
      {'threshold': -1.0},
      {'threshold': 3.0},
      _BAD_MU,
    ),
    deviations=(
      'rho_t computed without float32 cancellation (optax.radam is off by '
      '1.2% at b2=0.999, up to 50% at 0.9999); steps below the threshold '
      'are SGD-momentum (paper; code with degenerated_to_sgd=True); the '
      "code's weight decay is not offered"
    ),
    parity='2.4e-7',
  ),
  MethodInfo(
    name='nadam',
    category='adaptive',
    factory=adaptive.nadam,
    paper=paper('Incorporating Nesterov Momentum into Adam', 'Dozat', 2016),
    reference='optax.nadam',
    state_copies=2,
    learning_rate=0.03,
    invalid_kwargs=(*BAD_ADAM_KWARGS, _BAD_MU),
  ),
  MethodInfo(
    name='adafactor',
    category='adaptive',
    factory=adaptive.adafactor,
    paper=paper(
      'Adafactor: Adaptive Learning Rates with Sublinear Memory Cost',
      'Shazeer & Stern',
      2018,
      '1804.04235',
    ),
    reference=(
      'paper Algorithms 4-5 with t5x adafactor.py momentum and decay (NumPy '
      'transcription)'
    ),
    state_copies=1,
    learning_rate=0.03,
    invalid_kwargs=(
      {'learning_rate': -1.0},
      {'decay_rate': 1.5},
      {'clipping_threshold': 0.0},
      {'min_dim_size_to_factor': 0},
      {'dtype_momentum': jnp.int32},
    ),
    static_args=('min_dim_size_to_factor',),
    deviations=(
      'factored only where the second-largest dim >= min_dim_size_to_factor '
      '(128; the paper factors every matrix: 1); learning_rate=None is the '
      "paper's relative step (optax.adafactor: no step size); momentum and "
      'weight decay (not lr-scaled) as t5x'
    ),
    parity='6.4e-7',
  ),
  MethodInfo(
    name='novograd',
    category='adaptive',
    factory=adaptive.novograd,
    paper=paper(
      'Stochastic Gradient Methods with Layer-wise Adaptive Moments for '
      'Training of Deep Networks',
      'Ginsburg et al.',
      2019,
      '1905.11286',
    ),
    reference=(
      'NVIDIA OpenSeq2Seq novograd.py (NumPy transcription), '
      'pytorch-optimizer NovoGrad'
    ),
    state_copies=1,
    learning_rate=0.03,
    invalid_kwargs=(
      *BAD_ADAM_KWARGS,
      {'weight_decay': -1.0},
      _BAD_MU,
    ),
    deviations=(
      "the reference code's defaults (b1=0.95, b2=0.98, eps_root=1e-8), not "
      "optax's; no grad_averaging option"
    ),
    parity='3.1e-7',
  ),
  MethodInfo(
    name='lamb',
    category='adaptive',
    factory=adaptive.lamb,
    paper=paper(
      'Large Batch Optimization for Deep Learning: Training BERT in 76 minutes',
      'You et al.',
      2020,
      '1904.00962',
    ),
    reference=(
      'paper Algorithm 2, phi = identity (NumPy transcription); '
      'pytorch-optimizer Lamb in the paper configuration'
    ),
    state_copies=2,
    learning_rate=0.01,
    invalid_kwargs=(*BAD_ADAM_KWARGS, {'weight_decay': -1.0}),
    deviations='trust ratio 1 where a norm is 0 (the paper leaves it open)',
    parity='4.7e-7',
  ),
  MethodInfo(
    name='lars',
    category='adaptive',
    factory=adaptive.lars,
    paper=paper(
      'Large Batch Training of Convolutional Networks',
      'You et al.',
      2017,
      '1708.03888',
    ),
    reference=(
      'paper Algorithm 1 (NumPy transcription); pytorch-optimizer LARS on '
      'rank-2 arrays'
    ),
    state_copies=1,
    learning_rate=3.0,
    invalid_kwargs=(
      {'learning_rate': -1.0},
      {'momentum': 1.0},
      {'trust_coefficient': 0.0},
      {'weight_decay': -1.0},
    ),
    deviations=(
      "the paper's ratio |w| / (|g| + wd |w|), not optax.lars's "
      '|w| / |g + wd w|; ratio 1 where |w| or the denominator is 0'
    ),
    parity='6.4e-7',
  ),
  MethodInfo(
    name='adan',
    category='adaptive',
    factory=adaptive.adan,
    paper=paper(
      'Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep '
      'Models',
      'Xie et al.',
      2022,
      '2208.06677',
    ),
    reference=(
      'sail-sg/Adan:adan.py (NumPy transcription); pytorch_optimizer.Adan'
    ),
    state_copies=4,
    learning_rate=0.03,
    invalid_kwargs=(
      {'learning_rate': -1.0},
      {'b1': 1.0},
      {'b3': -0.5},
      {'eps': -1.0},
      {'weight_decay': -1.0},
      _BAD_MU,
    ),
    deviations=(
      'betas are decay rates (paper beta = 1 - b); no built-in max_grad_norm; '
      'optax.adan differs (gradient difference weighted 1 - b2, optax PR '
      '#1715; no proximal decay)'
    ),
    parity='7.2e-6',
  ),
  MethodInfo(
    name='sgd',
    category='adaptive',
    factory=adaptive.sgd,
    paper=paper(
      'On the importance of initialization and momentum in deep learning',
      'Sutskever et al.',
      2013,
    ),
    reference='optax.sgd',
    state_copies=1,
    learning_rate=0.1,
    example_kwargs=lambda lr: {'learning_rate': lr, 'momentum': 0.9},
    invalid_kwargs=(
      {'learning_rate': -1.0},
      {'momentum': 1.5},
      {'momentum': None, 'nesterov': True},
      {'accumulator_dtype': jnp.int32},
    ),
    parity='1.3e-7 (torch SGD)',
  ),
  MethodInfo(
    name='sign_sgd',
    category='adaptive',
    factory=adaptive.sign_sgd,
    paper=_SIGNSGD,
    reference='optax.sign_sgd',
    state_copies=0,
    learning_rate=0.01,
    invalid_kwargs=_BAD_LR,
  ),
  MethodInfo(
    name='signum',
    category='adaptive',
    factory=adaptive.signum,
    paper=_SIGNSGD,
    reference='optax.signum',
    state_copies=1,
    learning_rate=0.003,
    invalid_kwargs=(
      {'learning_rate': -1.0},
      {'beta': 1.0},
      {'accumulator_dtype': jnp.int32},
    ),
  ),
  MethodInfo(
    name='diffgrad',
    category='adaptive',
    factory=adaptive.diffgrad,
    paper=paper(
      'diffGrad: An Optimization Method for Convolutional Neural Networks',
      'Dubey et al.',
      2019,
      '1909.11015',
    ),
    reference=(
      'shivram1987/diffGrad:diffGrad_v2.py; live parity with '
      'pytorch_optimizer.DiffGrad'
    ),
    state_copies=3,
    learning_rate=0.03,
    invalid_kwargs=(
      *BAD_ADAM_KWARGS,
      {'weight_decay': -1e-4},
      _BAD_MU,
    ),
    deviations=(
      'official code: eps added to the uncorrected root (paper: to the '
      'bias-corrected root); L2 weight decay as the official code'
    ),
    parity='8.1e-6',
  ),
  MethodInfo(
    name='pnm',
    category='adaptive',
    factory=adaptive.pnm,
    paper=paper(
      'Positive-Negative Momentum: Manipulating Stochastic Gradient Noise '
      'to Improve Generalization',
      'Xie et al.',
      2021,
      '2103.17182',
    ),
    reference=(
      'zeke-xie/Positive-Negative-Momentum:pnm_optim/pnm.py; live parity '
      'with pytorch_optimizer.PNM'
    ),
    state_copies=2,
    learning_rate=1.0,
    invalid_kwargs=(
      {'learning_rate': -1.0},
      {'b1': 1.0},
      {'b0': -0.5},
      {'weight_decay': -1e-4},
      {'decoupled': 'yes'},
      _BAD_MU,
    ),
    static_args=('decoupled',),
    parity='6.2e-7',
  ),
  MethodInfo(
    name='adapnm',
    category='adaptive',
    factory=adaptive.adapnm,
    paper=paper(
      'Positive-Negative Momentum: Manipulating Stochastic Gradient Noise '
      'to Improve Generalization',
      'Xie et al.',
      2021,
      '2103.17182',
    ),
    reference=(
      'zeke-xie/Positive-Negative-Momentum:pnm_optim/adapnm.py (NumPy '
      'transcription); live parity with pytorch_optimizer.AdaPNM at eps=0'
    ),
    state_copies=4,
    learning_rate=0.03,
    invalid_kwargs=(
      *BAD_ADAM_KWARGS,
      {'b0': -0.5},
      {'weight_decay': -1e-4},
      {'amsgrad': 'yes'},
      _BAD_MU,
    ),
    static_args=('amsgrad', 'decoupled'),
    parity='5.4e-6',
  ),
  MethodInfo(
    name='acprop',
    category='adaptive',
    factory=adaptive.acprop,
    paper=paper(
      'Momentum Centering and Asynchronous Update for Adaptive Gradient '
      'Methods',
      'Zhuang et al.',
      2021,
      '2110.05454',
    ),
    reference=(
      'juntang-zhuang/ACProp-Optimizer:optimizers/ACProp.py (NumPy '
      'transcription, rectify=False)'
    ),
    state_copies=2,
    learning_rate=0.01,
    # On deterministic problems the centred second moment vanishes as the
    # gradient settles, and g / sqrt(s) blows up at eps = 1e-16 (Rosenbrock
    # diverges at every rate); eps_root = 1e-6 bounds the step.
    example_kwargs=lambda lr: {
      'learning_rate': lr,
      'eps': 1e-6,
      'eps_root': 1e-6,
    },
    invalid_kwargs=(
      *BAD_ADAM_KWARGS,
      {'eps_root': -1.0},
      {'weight_decay': -1.0},
      _BAD_MU,
    ),
    deviations=(
      "the official class's rectify, amsgrad, momentum_update and "
      "fixed_decay options are not implemented (the paper's algorithm and "
      "the authors' main.py use none); optax.contrib.acprop differs (residual "
      'with m_{t-1}, optax #1132)'
    ),
    parity='5.8e-6',
  ),
  MethodInfo(
    name='lambc',
    category='adaptive',
    factory=adaptive.lambc,
    paper=paper(
      'Improving Layer-wise Adaptive Rate Methods using Trust Ratio Clipping',
      'Fong, Chen & Chen',
      2020,
      '2011.13584',
    ),
    reference='jeffrey-fong/LAMBC:lamb_optim/lambc.py (NumPy transcription)',
    state_copies=2,
    learning_rate=0.01,
    invalid_kwargs=(
      *BAD_ADAM_KWARGS,
      {'weight_decay': -1.0},
      {'clip_bound': 0.0},
      _BAD_MU,
    ),
    deviations=(
      'no bias correction (as the reference); clip_bound defaults to the '
      "authors' main.py value 1.0, the class default is 10.0"
    ),
    parity='1.6e-7',
  ),
  MethodInfo(
    name='arsg',
    category='adaptive',
    factory=adaptive.arsg,
    paper=paper(
      'An Adaptive Remote Stochastic Gradient Method for Training Neural '
      'Networks',
      'Chen et al.',
      2019,
      '1905.01422',
    ),
    reference=(
      'rationalspark/NAMSG:torch/arsg.py (NumPy transcription, '
      'tests/reference/arsg_test.py)'
    ),
    state_copies=3,
    learning_rate=0.03,
    invalid_kwargs=(
      *BAD_ADAM_KWARGS,
      {'mu': 1.0},
      {'weight_decay': -1.0},
      _BAD_MU,
    ),
    deviations=(
      'normalized moments (the MXNet form of the official code); its '
      'built-in lookahead (nLA) left to optax_zoo.lookahead'
    ),
    parity='9.1e-7',
  ),
  MethodInfo(
    name='koala_v',
    category='adaptive',
    factory=adaptive.koala_v,
    paper=paper(
      'KOALA: A Kalman Optimization Algorithm with Loss Adaptivity',
      'Davtyan et al.',
      2022,
      '2107.03331',
    ),
    reference=(
      'Araachie/koala:koala.py VanillaKOALA (NumPy transcription, '
      'tests/reference/koala_test.py)'
    ),
    state_copies=0,
    learning_rate=0.3,
    invalid_kwargs=(
      {'learning_rate': -1.0},
      {'r': -1.0},
      {'alpha_r': 1.0},
      {'weight_decay': -1.0},
      {'sigma': -1.0},
      {'q': -1.0},
    ),
    extra_args=('value', 'value_sq_mean'),
    parity='5.5e-7',
  ),
  MethodInfo(
    name='kfac',
    category='adaptive',
    factory=adaptive.kfac,
    paper=paper(
      'Optimizing Neural Networks with Kronecker-factored Approximate '
      'Curvature',
      'Martens & Grosse',
      2015,
      '1503.05671',
    ),
    reference=(
      'curvlinops-for-pytorch KFACLinearOperator and '
      'KFACInverseLinearOperator (factors and damped inverses, live, '
      'tests/reference/kfac_curvlinops_test.py); a dense float64 Fisher from '
      'per-example gradients'
    ),
    # Momentum; the Kronecker factors and their inverses are per layer
    # (d_in^2 + d_out^2 each, twice), not parameter copies.
    state_copies=1,
    # KL clipping caps the step, so the grid is flat (90.8-94.9%).
    learning_rate=10.0,
    invalid_kwargs=(
      {'learning_rate': -1.0},
      {'damping': 0.0},
      {'factor_decay': 1.0},
      {'inverse_every': 0},
      {'inverse': 'cholesky'},
      {'kl_clip': 0.0},
      {'momentum': 1.0},
      {'weight_decay': -1.0},
    ),
    static_args=('inverse_every', 'inverse'),
    extra_args=('kfac_stats',),
    parity=(
      '5.4e-7 factors, 8.7e-6 pi / 4.0e-6 exact-damped preconditioned '
      'gradient (curvlinops, float32 vs float64)'
    ),
    deviations=(
      'fixed damping, KL clipping and SGD momentum as the distributed '
      "K-FAC codes (kfac_pytorch, DP-KFAC), not Martens & Grosse's "
      'adaptive damping and quadratic-model learning rate and momentum; '
      "empirical Fisher in the training loop (fisher='mc' samples labels "
      'in kfac_value_and_grad); parameters outside nnx.Linear/nnx.Conv '
      'layers get the plain gradient'
    ),
  ),
  MethodInfo(
    name='koala_m',
    category='adaptive',
    factory=adaptive.koala_m,
    paper=paper(
      'KOALA: A Kalman Optimization Algorithm with Loss Adaptivity',
      'Davtyan et al.',
      2022,
      '2107.03331',
    ),
    reference=(
      'Araachie/koala:koala.py MomentumKOALA (NumPy transcription, '
      'tests/reference/koala_test.py)'
    ),
    state_copies=2,
    learning_rate=0.3,
    invalid_kwargs=(
      {'learning_rate': -1.0},
      {'r': -1.0},
      {'alpha_r': 1.0},
      {'weight_decay': -1.0},
      {'sw': -1.0},
      {'sc': 1.0},
      {'a': 1.0},
      {'qw': -1.0},
      {'mu_dtype': jnp.int32},
      {'qv': -1.0},
    ),
    extra_args=('value', 'value_sq_mean'),
    deviations=(
      'the learning rate is applied inside the filter (it scales the '
      'velocities); float32 covariance (float64 in the reference)'
    ),
    parity='4.1e-7',
  ),
  MethodInfo(
    name='generalized_signsgd',
    category='adaptive',
    factory=adaptive.generalized_signsgd,
    paper=paper(
      'Robustness to Unbounded Smoothness of Generalized SignSGD',
      'Crawshaw et al.',
      2022,
      '2208.11195',
    ),
    reference=(
      'paper Algorithm 1; zhenxun-zhuang/Generalized-SignSGD:cifar10/'
      'generalized_signsgd.py (NumPy transcription)'
    ),
    state_copies=2,
    learning_rate=0.001,
    invalid_kwargs=(
      *BAD_ADAM_KWARGS,
      {'weight_decay': -1.0},
      _BAD_MU,
    ),
    parity='3.5e-6',
  ),
  MethodInfo(
    name='weight_rescaling',
    category='adaptive',
    factory=adaptive.weight_rescaling,
    paper=paper(
      'The Implicit Biases of Stochastic Gradient Descent on Deep Neural '
      'Networks with Batch Normalization',
      'Liu et al.',
      2021,
      '2102.03497',
    ),
    reference='the paper (no reference code); NumPy transcription',
    state_copies=0,
    learning_rate=0.03,
    example_kwargs=lambda lr: {'inner': adaptive.sgd(lr, momentum=0.9)},
    invalid_kwargs=(
      {'every_k': 0},
      {'target_norm': 0.0},
      {'inner': 'sgd'},
    ),
    deviations=(
      "our reading of the paper's abstracts (restore each output unit's "
      'initial norm after every step); state copies count the target norms '
      'only'
    ),
    parity='2.8e-7',
  ),
)
