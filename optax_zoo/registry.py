"""The method registry: one `MethodInfo` per method, `create` and `methods`.

Every method in optax_zoo has one entry here. The entry is all a method needs
to join the common test suite (`tests/common_test.py`), the `optax-zoo list`
table, the README's method table and `optax-zoo bench`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from collections.abc import Callable, Mapping
from typing import Any

import optax

from optax_zoo import adaptive, averaging

__all__ = [
  'CATEGORIES',
  'MethodInfo',
  'Paper',
  'create',
  'get',
  'markdown_table',
  'methods',
]

CATEGORIES = (
  'adaptive',
  'averaging',
  'sharpness',
  'privacy',
  'sparsity',
  'quantization',
  'distributed',
  'schedules',
)


@dataclasses.dataclass(frozen=True)
class Paper:
  """The paper a method comes from."""

  title: str
  authors: str
  year: int
  arxiv: str | None = None

  def cite(self) -> str:
    ref = f' (arXiv:{self.arxiv})' if self.arxiv else ''
    return f'{self.authors} {self.year}{ref}'


def _lr_kwargs(learning_rate: Any) -> dict[str, Any]:
  return {'learning_rate': learning_rate}


@dataclasses.dataclass(frozen=True)
class MethodInfo:
  """What optax_zoo knows about one method.

  Attributes:
    name: the registry name, also the public function `optax_zoo.<name>`.
    category: one of `CATEGORIES`.
    factory: the public constructor.
    paper: the paper it implements.
    reference: the implementation our version is checked against.
    state_copies: optimizer state size, in copies of the parameters (a
      per-layer scalar counts as 0).
    learning_rate: the default learning rate of `optax-zoo bench`: the best
      point of a log grid for the MNIST-1D CNN (batch 128, 2000 steps, 2
      seeds), measured by ``experiments/lr_grid/run.py``.
    example_kwargs: maps a learning rate to the keyword arguments of
      ``factory`` for a typical run (for wrappers, the rate goes to the inner
      optimizer). `build` uses it; the common tests use it with traced
      learning rates.
    invalid_kwargs: keyword overrides that must each raise `ValueError`.
    static_args: hyperparameters that fix shapes or control flow and so
      cannot be traced by `optax.inject_hyperparams` (pass them as its
      ``static_args``).
    extra_args: names of extra `update` arguments the method needs.
    has_eval_params: whether its state defines ``eval_params``.
    needs_axis_name: whether it must run under a named mapped axis.
    deviations: known deviations from the paper or reference, or ''.
  """

  name: str
  category: str
  factory: Callable[..., optax.GradientTransformation]
  paper: Paper
  reference: str
  state_copies: float
  learning_rate: float
  example_kwargs: Callable[[Any], dict[str, Any]] = _lr_kwargs
  invalid_kwargs: tuple[Mapping[str, Any], ...] = ()
  static_args: tuple[str, ...] = ()
  extra_args: tuple[str, ...] = ()
  has_eval_params: bool = False
  needs_axis_name: bool = False
  deviations: str = ''

  def __post_init__(self):
    if self.category not in CATEGORIES:
      raise ValueError(
        f'`category` must be one of {CATEGORIES}, got {self.category!r}.'
      )
    object.__setattr__(
      self,
      'invalid_kwargs',
      tuple(types.MappingProxyType(dict(k)) for k in self.invalid_kwargs),
    )

  def build(
    self, learning_rate: optax.ScalarOrSchedule | None = None, **overrides
  ) -> optax.GradientTransformation:
    """The method with its example hyperparameters.

    Args:
      learning_rate: overrides the registered default `learning_rate`.
      **overrides: further keyword arguments for ``factory``.

    Returns:
      The transform.
    """
    lr = self.learning_rate if learning_rate is None else learning_rate
    return self.factory(**{**self.example_kwargs(lr), **overrides})


def _paper(title: str, authors: str, year: int, arxiv: str | None = None):
  return Paper(title=title, authors=authors, year=year, arxiv=arxiv)


_ADAM = _paper(
  'Adam: A Method for Stochastic Optimization',
  'Kingma & Ba',
  2015,
  '1412.6980',
)
_SIGNSGD = _paper(
  'signSGD: Compressed Optimisation for Non-Convex Problems',
  'Bernstein et al.',
  2018,
  '1802.04434',
)
_BAD_LR = ({'learning_rate': -1.0},)
_BAD_ADAM = ({'learning_rate': -1.0}, {'b1': 1.5}, {'b2': -0.1}, {'eps': -1})


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
_GADAM_PAPER = _paper(
  'Iterate Averaging in the Quest for Best Test Error',
  'Granziol et al.',
  2020,
  '2003.01247',
)


_ENTRIES = (
  MethodInfo(
    name='adam',
    category='adaptive',
    factory=adaptive.adam,
    paper=_ADAM,
    reference='optax.adam',
    state_copies=2,
    learning_rate=0.01,
    invalid_kwargs=_BAD_ADAM,
  ),
  MethodInfo(
    name='adamax',
    category='adaptive',
    factory=adaptive.adamax,
    paper=_ADAM,
    reference='optax.adamax',
    state_copies=2,
    learning_rate=0.03,
    invalid_kwargs=_BAD_ADAM,
  ),
  MethodInfo(
    name='adamw',
    category='adaptive',
    factory=adaptive.adamw,
    paper=_paper(
      'Decoupled Weight Decay Regularization',
      'Loshchilov & Hutter',
      2019,
      '1711.05101',
    ),
    reference='optax.adamw',
    state_copies=2,
    learning_rate=0.01,
    invalid_kwargs=(*_BAD_ADAM, {'weight_decay': -1e-4}),
    deviations=(
      'optax form: weight decay scaled by the full learning rate, the paper '
      'scales it by the schedule multiplier only'
    ),
  ),
  MethodInfo(
    name='radam',
    category='adaptive',
    factory=adaptive.radam,
    paper=_paper(
      'On the Variance of the Adaptive Learning Rate and Beyond',
      'Liu et al.',
      2020,
      '1908.03265',
    ),
    reference='LiyuanLucasLiu/RAdam (parity test: issue 3)',
    state_copies=2,
    learning_rate=0.03,
    invalid_kwargs=(*_BAD_ADAM, {'threshold': -1.0}),
  ),
  MethodInfo(
    name='nadam',
    category='adaptive',
    factory=adaptive.nadam,
    paper=_paper('Incorporating Nesterov Momentum into Adam', 'Dozat', 2016),
    reference='optax.nadam',
    state_copies=2,
    learning_rate=0.03,
    invalid_kwargs=_BAD_ADAM,
  ),
  MethodInfo(
    name='adafactor',
    category='adaptive',
    factory=adaptive.adafactor,
    paper=_paper(
      'Adafactor: Adaptive Learning Rates with Sublinear Memory Cost',
      'Shazeer & Stern',
      2018,
      '1804.04235',
    ),
    reference='optax.adafactor; t5x adafactor (parity test: issue 3)',
    state_copies=1,
    learning_rate=0.03,
    invalid_kwargs=(
      {'learning_rate': -1.0},
      {'decay_rate': 1.5},
      {'clipping_threshold': 0.0},
      {'min_dim_size_to_factor': 0},
    ),
    static_args=('min_dim_size_to_factor',),
    deviations='second moment is factored only for dims >= 128 (optax)',
  ),
  MethodInfo(
    name='novograd',
    category='adaptive',
    factory=adaptive.novograd,
    paper=_paper(
      'Stochastic Gradient Methods with Layer-wise Adaptive Moments for '
      'Training of Deep Networks',
      'Ginsburg et al.',
      2019,
      '1905.11286',
    ),
    reference='NVIDIA OpenSeq2Seq; kozistr novograd.py (parity: issue 3)',
    state_copies=1,
    learning_rate=0.03,
    invalid_kwargs=(*_BAD_ADAM, {'weight_decay': -1.0}),
  ),
  MethodInfo(
    name='lamb',
    category='adaptive',
    factory=adaptive.lamb,
    paper=_paper(
      'Large Batch Optimization for Deep Learning: Training BERT in 76 minutes',
      'You et al.',
      2020,
      '1904.00962',
    ),
    reference='paper Algorithm 2 (parity test: issue 3)',
    state_copies=2,
    learning_rate=0.01,
    invalid_kwargs=(*_BAD_ADAM, {'weight_decay': -1.0}),
    deviations='not yet checked step by step against the paper (issue 3)',
  ),
  MethodInfo(
    name='lars',
    category='adaptive',
    factory=adaptive.lars,
    paper=_paper(
      'Large Batch Training of Convolutional Networks',
      'You et al.',
      2017,
      '1708.03888',
    ),
    reference='paper Algorithm 1 (parity test: issue 3)',
    state_copies=1,
    learning_rate=3.0,
    invalid_kwargs=(
      {'learning_rate': -1.0},
      {'momentum': 1.0},
      {'trust_coefficient': 0.0},
      {'weight_decay': -1.0},
    ),
    deviations='not yet checked step by step against the paper (issue 3)',
  ),
  MethodInfo(
    name='adan',
    category='adaptive',
    factory=adaptive.adan,
    paper=_paper(
      'Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep '
      'Models',
      'Xie et al.',
      2022,
      '2208.06677',
    ),
    reference='sail-sg/Adan:adan.py (parity test: issue 3)',
    state_copies=4,
    learning_rate=0.03,
    invalid_kwargs=(
      {'learning_rate': -1.0},
      {'b1': 1.0},
      {'b3': -0.5},
      {'weight_decay': -1.0},
    ),
    deviations=(
      'optax form: plain decoupled weight decay, the paper and official '
      'code use proximal decay (optax PR #410); identical at weight_decay=0'
    ),
  ),
  MethodInfo(
    name='sgd',
    category='adaptive',
    factory=adaptive.sgd,
    paper=_paper(
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
    ),
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
    invalid_kwargs=({'learning_rate': -1.0}, {'beta': 1.0}),
  ),
  # >>> entries A: diffgrad, pnm, adapnm
  # >>> entries B: acprop, lambc
  # >>> entries C: arsg, koala, generalized_signsgd, weight_rescaling
  MethodInfo(
    name='lookahead',
    category='averaging',
    factory=averaging.lookahead,
    paper=_paper(
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
  ),
  MethodInfo(
    name='swa',
    category='averaging',
    factory=averaging.swa,
    paper=_paper(
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
  ),
  MethodInfo(
    name='periodic_swa',
    category='averaging',
    factory=averaging.periodic_swa,
    paper=_paper(
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
    paper=_paper(
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
  ),
  MethodInfo(
    name='fge',
    category='averaging',
    factory=averaging.fge,
    paper=_paper(
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
    invalid_kwargs=(*_BAD_ADAM, {'weight_decay': -1.0}, {'start_step': -1}),
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
      *_BAD_ADAM,
      {'partial': 0.75},
      {'every_k': 0},
    ),
    has_eval_params=True,
    deviations=(
      'Padam bias correction on the moments, not the step size; steps, not '
      'epochs'
    ),
  ),
)

_REGISTRY: dict[str, MethodInfo] = {}
for _info in _ENTRIES:
  if _info.name in _REGISTRY:
    raise RuntimeError(f'duplicate registry entry {_info.name!r}')
  _REGISTRY[_info.name] = _info
del _info


def get(name: str) -> MethodInfo:
  """The `MethodInfo` registered under ``name``.

  Raises:
    ValueError: for an unknown name, suggesting the closest registered names.
  """
  try:
    return _REGISTRY[name]
  except (KeyError, TypeError):
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3)
    hint = f' Did you mean {", ".join(map(repr, close))}?' if close else ''
    raise ValueError(
      f'`name` must be a registered method, got {name!r}.{hint} '
      'See optax_zoo.methods() for the list.'
    ) from None


def create(name: str, **kwargs: Any) -> optax.GradientTransformation:
  """Builds the method registered under ``name`` with ``kwargs``.

  Example:
    >>> import optax_zoo
    >>> tx = optax_zoo.create('adam', learning_rate=1e-3)
    >>> try:
    ...   optax_zoo.create('adamm')
    ... except ValueError as e:
    ...   print('adam' in str(e))
    True
  """
  return get(name).factory(**kwargs)


def methods(category: str | None = None) -> list[MethodInfo]:
  """All registered methods, optionally of one category, in registry order.

  Example:
    >>> import optax_zoo
    >>> [m.name for m in optax_zoo.methods('averaging')][:3]
    ['lookahead', 'swa', 'periodic_swa']
  """
  if category is not None and category not in CATEGORIES:
    raise ValueError(
      f'`category` must be None or one of {CATEGORIES}, got {category!r}.'
    )
  return [m for m in _REGISTRY.values() if category in (None, m.category)]


def markdown_table(infos: list[MethodInfo] | None = None) -> str:
  """The registry as a Markdown table (the README's method table)."""
  infos = methods() if infos is None else infos
  rows = [
    '| method | category | paper | state (param copies) | eval params '
    '| reference | known deviations |',
    '|---|---|---|---|---|---|---|',
  ]
  for m in infos:
    paper = f'{m.paper.authors} {m.paper.year}'
    if m.paper.arxiv:
      paper = f'[{paper}](https://arxiv.org/abs/{m.paper.arxiv})'
    rows.append(
      f'| `{m.name}` | {m.category} | {paper} | {m.state_copies:g} '
      f'| {"yes" if m.has_eval_params else ""} | {m.reference} '
      f'| {m.deviations} |'
    )
  return '\n'.join(rows)
