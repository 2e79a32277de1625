"""Registry entries of `optax_zoo.distributed`, collected by the registry."""

from __future__ import annotations

from optax_zoo import adaptive
from optax_zoo._src.method_info import MethodInfo, paper
from optax_zoo.distributed import (
  _compressed,
  _fedavg,
  _gossip,
  _kfac,
  _nonblocking,
  _topology,
)

# The common tests run a distributed method per worker under
# jax.vmap(..., axis_name=<example axis_name>) over one worker, where it
# must be exactly its inner optimizer: SGD with momentum as in the papers.
_AXIS = 'workers'


def _gossip_kwargs(learning_rate):
  return {
    'topology': _topology.ring(1),
    'axis_name': _AXIS,
    'inner': adaptive.sgd(learning_rate, momentum=0.9),
  }


def _all_reduce_kwargs(learning_rate):
  return {
    'axis_name': _AXIS,
    'inner': adaptive.sgd(learning_rate, momentum=0.9),
  }


_GOSSIP_ENTRIES: tuple[MethodInfo, ...] = (
  MethodInfo(
    name='gossip',
    category='distributed',
    factory=_gossip.gossip,
    paper=paper(
      'Can Decentralized Algorithms Outperform Centralized Algorithms? A '
      'Case Study for Decentralized Parallel Stochastic Gradient Descent',
      'Lian et al.',
      2017,
      '1705.09056',
    ),
    reference=(
      'paper (algorithm 1, D-PSGD): W @ X - lr * G in NumPy, step for step '
      'on 8 simulated and 8 real CPU devices and across two processes'
    ),
    state_copies=0,
    # Not on the CNN learning-rate grid (it needs a worker axis): the
    # inner SGD's usual rate.
    learning_rate=0.1,
    example_kwargs=_gossip_kwargs,
    invalid_kwargs=(
      {'topology': 'ring'},
      {'topology': None},
      {'axis_name': None},
      {'axis_name': ['workers']},
      {'inner': 'sgd'},
    ),
    needs_axis_name=True,
    deviations=(
      'W may be directed (doubly stochastic, not symmetric: the exponential '
      'graphs of Ying et al. 2021); eval_params is the worker average, '
      'equal to the parameters on the one-worker axis of the common tests '
      '(so has_eval_params is False there)'
    ),
    parity=(
      'W @ X - lr * G (NumPy, float64): max abs 2.9e-7 over 5 steps '
      '(iterates of order 1), 8 vmapped workers, ring/torus/exponential/'
      'one-peer/random W; rtol 1e-5 on 8 CPU devices and two processes'
    ),
  ),
  MethodInfo(
    name='all_reduce_mean',
    category='distributed',
    factory=_gossip.all_reduce_mean,
    paper=paper(
      'Revisiting Distributed Synchronous SGD',
      'Chen et al.',
      2016,
      '1604.00981',
    ),
    reference='the mean gradient of all workers, then the inner optimizer',
    state_copies=0,
    learning_rate=0.1,
    example_kwargs=_all_reduce_kwargs,
    invalid_kwargs=(
      {'axis_name': None},
      {'axis_name': ['workers']},
      {'inner': 'sgd'},
    ),
    needs_axis_name=True,
  ),
)


_NATURAL_PAPER = paper(
  'Natural Compression for Distributed Deep Learning',
  'Horvath, Ho, Horvath, Sahu, Canini & Richtarik',
  2019,
  '1905.10988',
)
# SGD with momentum, as the papers train; the common tests run one worker.
_BAD_COMPRESSED = (
  {'learning_rate': -1.0},
  {'momentum': 1.5},
  {'axis_name': None},
  {'axis_name': ''},
)


def _compressed_kwargs(**extra):
  def kwargs(learning_rate):
    return {
      'learning_rate': learning_rate,
      'axis_name': 'workers',
      'momentum': 0.9,
      **extra,
    }

  return kwargs


_COMPRESSED_ENTRIES: tuple[MethodInfo, ...] = (
  MethodInfo(
    name='natural_compression',
    category='distributed',
    factory=_compressed.natural_compression,
    paper=_NATURAL_PAPER,
    reference=(
      'sands-lab/grace grace_dl/torch/compressor/natural.py (read for the '
      'rounding law); statistical tests of the law, unbiasedness and '
      "variance; NumPy decoding of every worker's payload"
    ),
    state_copies=1,
    # Not on the CNN learning-rate grid (it needs a worker axis): SGD's.
    learning_rate=0.1,
    example_kwargs=_compressed_kwargs(key=0),
    invalid_kwargs=(*_BAD_COMPRESSED, {'key': 'seed'}),
    static_args=('key',),
    needs_axis_name=True,
    deviations=(
      'float32 exponent range: subnormals round between 0 and 2^-126 '
      '(unbiased, variance bound only for normal inputs); the top binade '
      'never rounds up (no overflow to inf); inf and NaN both decode to NaN'
    ),
    parity=(
      'payloads decoded in NumPy: bit-exact averages over 8 simulated and '
      '8 real CPU devices and across two processes'
    ),
  ),
  MethodInfo(
    name='natural_dithering',
    category='distributed',
    factory=_compressed.natural_dithering,
    paper=_NATURAL_PAPER,
    reference='paper (natural dithering definition), statistical tests',
    state_copies=1,
    learning_rate=0.1,
    example_kwargs=_compressed_kwargs(key=0),
    invalid_kwargs=(
      *_BAD_COMPRESSED,
      {'levels': 0},
      {'levels': 127},
      {'norm': 1.0},
      {'key': 'seed'},
    ),
    static_args=('key', 'levels', 'norm'),
    needs_axis_name=True,
    deviations=(
      'applied per leaf (the paper states it for one vector); level codes '
      'packed ceil(log2(levels + 1)) bits each'
    ),
  ),
  MethodInfo(
    name='adacomp',
    category='distributed',
    factory=_compressed.adacomp,
    paper=paper(
      'AdaComp: Adaptive Residual Gradient Compression for Data-Parallel '
      'Distributed Training',
      'Chen, Choi, Brand, Agrawal, Zhang & Gopalakrishnan',
      2018,
      '1712.02679',
    ),
    reference=(
      'paper (Algorithm 1): NumPy transcription, step by step over 8 '
      'simulated workers'
    ),
    state_copies=2,
    learning_rate=0.1,
    example_kwargs=_compressed_kwargs(bin_size=4),
    invalid_kwargs=(
      *_BAD_COMPRESSED,
      {'bin_size': 0},
      {'max_per_bin': 0},
    ),
    static_args=('bin_size', 'max_per_bin'),
    needs_axis_name=True,
    deviations=(
      'fixed payload: at most max_per_bin coordinates per bin (largest |H| '
      'first), the rest wait in the residue; coordinates with G = 0 are not '
      "sent (ternary 0); scale = mean of the bins' local maxima"
    ),
    parity=(
      'NumPy transcription of Algorithm 1: exact over 5 steps, 8 workers '
      '(float32)'
    ),
  ),
)


def _nonblocking_kwargs(learning_rate):
  return {
    'axis_name': _AXIS,
    'inner': adaptive.sgd(learning_rate, momentum=0.9),
  }


_NONBLOCKING_ENTRIES: tuple[MethodInfo, ...] = (
  MethodInfo(
    name='nonblocking_sgd',
    category='distributed',
    factory=_nonblocking.nonblocking_sgd,
    paper=paper(
      'Accelerating Parallel Stochastic Gradient Descent via Non-blocking '
      'Mini-batches',
      'He & Dube',
      2022,
      '2211.00889',
    ),
    reference=(
      'paper (mean of the finished mini-batch gradients): NumPy weighted '
      'mean over fixed delay draws, 4 simulated workers; synchronous SGD '
      'with gradient accumulation when all finish'
    ),
    state_copies=0,
    # Not on the CNN learning-rate grid (it needs a worker axis): the
    # inner SGD's usual rate.
    learning_rate=0.1,
    example_kwargs=_nonblocking_kwargs,
    invalid_kwargs=(
      {'axis_name': None},
      {'axis_name': ['workers']},
      {'inner': 'sgd'},
    ),
    needs_axis_name=True,
    deviations=(
      'combined by all-reduce only (the paper also by D-PSGD and MATCHA '
      'gossip); the straggler delays come from DelayModel, not the '
      "paper's distribution; without num_finished every micro-batch counts "
      'and gradients shaped like the parameters are one micro-batch'
    ),
    parity=(
      'NumPy float64 mean of exactly the finished micro-batches: max rel '
      '1.2e-7 over 3 random delay draws, 4 vmapped workers; SSGD with '
      'accumulation over 5 steps and 8 CPU devices over 3 steps: rtol 1e-5'
    ),
  ),
)


def _fedavg_kwargs(learning_rate):
  # Two local steps: the common tests cross round boundaries; on their one
  # client the average is the client's own model, and the penalty pulls it
  # towards the model at the start of the round.
  return {
    'inner': adaptive.sgd(learning_rate, momentum=0.9),
    'axis_name': _AXIS,
    'local_steps': 2,
    'continual_weight': 0.1,
  }


_FEDAVG_ENTRIES: tuple[MethodInfo, ...] = (
  MethodInfo(
    name='fedavg',
    category='distributed',
    factory=_fedavg.fedavg,
    paper=paper(
      'Continual Local Training for Better Initialization of Federated Models',
      'Yao & Sun',
      2020,
      '2005.12657',
    ),
    reference=(
      'McMahan et al. 2017 algorithm 1 (FederatedAveraging) plus the '
      "paper's importance-weighted penalty, in NumPy step by step over 4 "
      'vmapped clients; SSGD (all_reduce_mean) for one local step'
    ),
    # The global model; the importance weights add one more copy when an
    # importance_fn is given.
    state_copies=1,
    # Not on the CNN learning-rate grid (it needs a client axis): SGD's.
    learning_rate=0.1,
    example_kwargs=_fedavg_kwargs,
    invalid_kwargs=(
      {'local_steps': 0},
      {'client_fraction': 0.0},
      {'client_fraction': 1.5},
      {'continual_weight': -1.0},
      {'axis_name': None},
      {'inner': 'sgd'},
      {'importance_fn': 3},
      {'key': 'seed'},
    ),
    static_args=('local_steps', 'client_fraction', 'importance_fn', 'key'),
    has_eval_params=True,
    needs_axis_name=True,
    deviations=(
      'local_steps H steps per round in place of E local epochs; the '
      "average and the importance (the server's work) are computed on every "
      'client; eval_params is the global model of the last round'
    ),
    parity=(
      'NumPy FedAvg with the uniform penalty (float64): rtol 1e-5 over 8 '
      'steps, 4 clients; penalized gradient with Fisher weights rtol 1e-5'
    ),
  ),
)


def _kfac_kwargs(learning_rate):
  return {'learning_rate': learning_rate, 'axis_name': _AXIS}


_KFAC_BAD = (
  {'learning_rate': -1.0},
  {'axis_name': None},
  {'damping': 0.0},
  {'inverse_every': 0},
  {'momentum': 1.0},
)
_KFAC_ENTRIES = (
  MethodInfo(
    name='dkfac',
    category='distributed',
    factory=_kfac.dkfac,
    paper=paper(
      'Distributed Second-Order Optimization using Kronecker-Factored '
      'Approximations',
      'Ba, Grosse & Martens',
      2017,
      None,
    ),
    reference=(
      'single-device optax_zoo.kfac on the concatenated batch (8-device '
      'mesh and vmapped workers, tests/distributed/kfac_*_test.py)'
    ),
    state_copies=1,
    # kfac's grid optimum (the grid trains no axis methods).
    learning_rate=10.0,
    example_kwargs=_kfac_kwargs,
    invalid_kwargs=_KFAC_BAD,
    static_args=('inverse_every', 'inverse'),
    extra_args=('kfac_stats',),
    needs_axis_name=True,
    deviations='as kfac',
  ),
  MethodInfo(
    name='dp_kfac',
    category='distributed',
    factory=_kfac.dp_kfac,
    paper=paper(
      'Scalable K-FAC Training for Deep Neural Networks with Distributed '
      'Preconditioning',
      'Zhang, Shi, Wang, Li & Chu',
      2022,
      '2206.15143',
    ),
    reference=(
      'single-device optax_zoo.kfac when every worker sees the same data; '
      'the paper for the assignment (no public code)'
    ),
    state_copies=1,
    # kfac's grid optimum (the grid trains no axis methods).
    learning_rate=10.0,
    example_kwargs=_kfac_kwargs,
    invalid_kwargs=_KFAC_BAD,
    static_args=('inverse_every', 'inverse'),
    extra_args=('kfac_stats',),
    needs_axis_name=True,
    deviations=(
      "as kfac; the state keeps every layer's factors on every worker "
      "(the paper's per-worker memory saving is not realized); the "
      'preconditioned gradients are summed by an all-reduce'
    ),
  ),
)

ENTRIES: tuple[MethodInfo, ...] = (
  *_GOSSIP_ENTRIES,
  *_COMPRESSED_ENTRIES,
  *_NONBLOCKING_ENTRIES,
  *_FEDAVG_ENTRIES,
  *_KFAC_ENTRIES,
)
