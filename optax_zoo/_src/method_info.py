"""`MethodInfo`: what `optax_zoo.registry` knows about a method.

Each subpackage declares its methods' entries in its own ``_registry.py``;
`optax_zoo.registry` collects them.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from typing import Any

import optax

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
    replicas: the size of the leading replica axis every parameter carries
      with ``example_kwargs`` (Replicated-SGD trains several coupled copies),
      or 0 for plain parameters.
    deviations: known deviations from the paper or reference, or ''.
    parity: the worst relative deviation from ``reference`` measured by the
      parity tests in ``tests/reference`` (float32, 150 steps), or '' where
      none runs.
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
  replicas: int = 0
  deviations: str = ''
  parity: str = ''

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

  def single_model_skip_reason(self) -> str | None:
    """Why a loop that trains one plain model cannot run it, or None.

    The bench and the learning-rate grid train one model on one device: a
    method that needs a named axis or replicated parameters is skipped
    there, with this reason.
    """
    if self.needs_axis_name:
      return 'needs an axis_name, which this single-device loop does not bind'
    if self.replicas:
      return (
        'trains parameters with a leading replica axis, which this '
        'single-model loop does not build'
      )
    return None

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


def paper(title: str, authors: str, year: int, arxiv: str | None = None):
  """A `Paper` from positional fields."""
  return Paper(title=title, authors=authors, year=year, arxiv=arxiv)


BAD_ADAM_KWARGS = (
  {'learning_rate': -1.0},
  {'b1': 1.5},
  {'b2': -0.1},
  {'eps': -1},
)
