"""Registry entries of `optax_zoo.distributed`, collected by the registry."""

from __future__ import annotations

from optax_zoo import adaptive
from optax_zoo._src.method_info import MethodInfo, paper
from optax_zoo.distributed import _compressed, _gossip, _topology

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

ENTRIES: tuple[MethodInfo, ...] = (*_GOSSIP_ENTRIES, *_COMPRESSED_ENTRIES)
