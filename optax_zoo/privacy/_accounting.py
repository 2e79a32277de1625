"""Privacy accounting for DP-SGD runs: epsilon, calibration, a running
accountant and the privacy report.

What comes from where: every epsilon is computed by `dp_accounting` (its
PLD and RDP accountants and `calibrate_dp_mechanism`), on the DP events of
`jax_privacy.experimental.accounting` (`dpsgd_event`, `truncated_dpsgd_event`,
`fixed_dpsgd_event`); the RDP orders and PLD discretization are
`jax_privacy.accounting`'s defaults. Written here: the choice of event and
neighbouring relation from the batch source's `SamplingScheme` (and the
refusals), argument checks, the running accountant and the report. No
accountant is written here.

Which scheme goes where:

* ``POISSON``: Poisson-subsampled Gaussian, add-or-remove-one, PLD or RDP.
* ``TRUNCATED_POISSON``: dp-accounting's truncated subsampled Gaussian,
  add-or-remove-one, PLD only (RDP refuses it).
* ``FIXED_SIZE``: sampling without replacement, replace-one, RDP only (PLD
  refuses it). Replace-one epsilons are not comparable with add-or-remove.
* ``SHUFFLE``: refused: dp-accounting has no shuffling analysis, and
  accounting it as Poisson overstates its privacy (Chua et al. 2024).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from optax_zoo._src import validation as v
from optax_zoo.privacy._batches import BatchSource, SamplingScheme

if TYPE_CHECKING:
  import dp_accounting


def _dp_accounting():
  # dp-accounting (which `import jax_privacy` loads too) pulls in
  # scipy.signal and scipy.stats: 40% of `import optax_zoo` (1.8-3.5 s on 2
  # cores), paid by every process, notebook kernel and 8-device subprocess
  # whether it touches privacy or not. So the privacy modules import both
  # on first use.
  return importlib.import_module('dp_accounting')


def _jp_accounting():
  return importlib.import_module('jax_privacy.experimental.accounting')


__all__ = [
  'PrivacyAccountant',
  'PrivacyReport',
  'calibrate_noise',
  'dp_event',
  'epsilon',
  'privacy_report',
]

ACCOUNTANTS = ('pld', 'rdp')
_RDP_ORDERS = np.concatenate(
  (np.linspace(1.01, 8, num=50), np.arange(8, 64), np.linspace(65, 512, 10))
)  # jax_privacy.accounting's default orders
PLD_DISCRETIZATION = 1e-4  # jax_privacy.accounting's default


def _check_delta(delta):
  v.check_in_range(
    'delta', delta, 0.0, 1.0, low_inclusive=False, high_inclusive=False
  )


def _check_rate(sampling_rate):
  v.check_in_range(
    'sampling_rate',
    sampling_rate,
    0.0,
    1.0,
    low_inclusive=False,
    high_inclusive=True,
  )


def _relation(scheme: SamplingScheme) -> dp_accounting.NeighboringRelation:
  if scheme == SamplingScheme.FIXED_SIZE:
    return _dp_accounting().NeighboringRelation.REPLACE_ONE
  return _dp_accounting().NeighboringRelation.ADD_OR_REMOVE_ONE


def _refusal(scheme: SamplingScheme, accountant: str) -> str | None:
  """Why ``accountant`` cannot account ``scheme``, or None."""
  if scheme == SamplingScheme.SHUFFLE:
    return (
      'shuffled batches cannot be accounted: dp-accounting has no shuffling '
      'analysis, and the Poisson one overstates its privacy (Chua et al. '
      '2024); use poisson_batches'
    )
  if scheme == SamplingScheme.TRUNCATED_POISSON and accountant == 'rdp':
    return (
      "truncated Poisson batches are accounted by 'pld' only (dp-accounting's "
      'RDP accountant does not support TruncatedSubsampledGaussianDpEvent)'
    )
  if scheme == SamplingScheme.FIXED_SIZE and accountant == 'pld':
    return (
      "fixed-size batches are accounted by 'rdp' only (sampling without "
      'replacement, replace-one relation; PLD does not support it)'
    )
  return None


def dp_event(
  *,
  noise_multiplier: float,
  steps: int,
  sampling_rate: float | None = None,
  scheme: SamplingScheme | str = SamplingScheme.POISSON,
  num_examples: int | None = None,
  batch_size: int | None = None,
) -> dp_accounting.DpEvent:
  """The dp-accounting event of ``steps`` DP-SGD steps under ``scheme``.

  Args:
    noise_multiplier: sigma, >= 0.
    steps: steps taken, an integer >= 0.
    sampling_rate: Poisson's q in (0, 1] (Poisson schemes).
    scheme: a `SamplingScheme` or its value.
    num_examples: data-set size (truncated Poisson, fixed size).
    batch_size: the truncation size or the fixed batch size.

  Returns:
    A `dp_accounting.DpEvent`.

  Example:
    >>> import optax_zoo
    >>> optax_zoo.dp_event(noise_multiplier=1.0, steps=3, sampling_rate=0.1)
    SelfComposedDpEvent(event=PoissonSampledDpEvent(sampling_probability=0.1, event=GaussianDpEvent(noise_multiplier=1.0)), count=3)
  """  # noqa: E501
  scheme = SamplingScheme(scheme)
  v.check_non_negative('noise_multiplier', noise_multiplier)
  v.check_int('steps', steps, minimum=0)
  if scheme == SamplingScheme.SHUFFLE:
    raise ValueError(f'`scheme`: {_refusal(scheme, "pld")}.')
  if scheme == SamplingScheme.FIXED_SIZE:
    _check_batch(num_examples, batch_size)
    return _jp_accounting().fixed_dpsgd_event(
      float(noise_multiplier),
      int(steps),
      dataset_size=int(num_examples),
      batch_size=int(batch_size),
    )
  _check_rate(sampling_rate)
  if scheme == SamplingScheme.TRUNCATED_POISSON:
    _check_batch(num_examples, batch_size)
    return _jp_accounting().truncated_dpsgd_event(
      float(noise_multiplier),
      int(steps),
      sampling_prob=float(sampling_rate),
      num_examples=int(num_examples),
      truncated_batch_size=int(batch_size),
    )
  return _jp_accounting().dpsgd_event(
    float(noise_multiplier), int(steps), sampling_prob=float(sampling_rate)
  )


def _check_batch(num_examples, batch_size):
  v.check_int('num_examples', num_examples, minimum=1)
  v.check_int('batch_size', batch_size, minimum=1)
  if num_examples < batch_size:
    raise ValueError(
      f'`num_examples` must be >= `batch_size` ({batch_size}), got '
      f'{num_examples!r}.'
    )


def _make_accountant(accountant, scheme, pld_discretization):
  v.check_choice('accountant', accountant, ACCOUNTANTS)
  reason = _refusal(scheme, accountant)
  if reason:
    raise ValueError(f'`accountant`={accountant!r}: {reason}.')
  relation = _relation(scheme)
  if accountant == 'rdp':
    return _dp_accounting().rdp.RdpAccountant(
      orders=_RDP_ORDERS, neighboring_relation=relation
    )
  v.check_positive('pld_discretization', pld_discretization)
  return _dp_accounting().pld.PLDAccountant(
    neighboring_relation=relation,
    value_discretization_interval=pld_discretization,
  )


def epsilon(
  *,
  noise_multiplier: float,
  sampling_rate: float | None,
  steps: int,
  delta: float,
  accountant: str = 'pld',
  scheme: SamplingScheme | str = SamplingScheme.POISSON,
  num_examples: int | None = None,
  batch_size: int | None = None,
  pld_discretization: float = PLD_DISCRETIZATION,
) -> float:
  r"""The epsilon of ``steps`` DP-SGD steps at ``delta``, by dp-accounting.

  Args:
    noise_multiplier: sigma, >= 0 (0 gives inf).
    sampling_rate: Poisson's q in (0, 1] (ignored for fixed-size batches).
    steps: steps taken, >= 0 (0 gives 0).
    delta: in (0, 1).
    accountant: ``'pld'`` (tight) or ``'rdp'`` (an upper bound, as Opacus).
    scheme: the batch source's `SamplingScheme` (see the module docstring
      for what each accountant accepts).
    num_examples: data-set size (truncated Poisson and fixed size).
    batch_size: truncation size or fixed batch size.
    pld_discretization: the PLD's value discretization interval (coarser is
      faster and more pessimistic).

  Returns:
    epsilon, a float (inf without noise).

  Example:
    >>> import optax_zoo
    >>> eps = optax_zoo.epsilon(noise_multiplier=1.0, sampling_rate=256/60000,
    ...   steps=10_000, delta=1e-5, accountant='rdp')
    >>> round(eps, 4)
    2.566
  """
  scheme = SamplingScheme(scheme)
  _check_delta(delta)
  event = dp_event(
    noise_multiplier=noise_multiplier,
    steps=steps,
    sampling_rate=sampling_rate,
    scheme=scheme,
    num_examples=num_examples,
    batch_size=batch_size,
  )
  acc = _make_accountant(accountant, scheme, pld_discretization)
  if steps == 0:
    return 0.0
  if noise_multiplier == 0:
    return math.inf
  return float(acc.compose(event).get_epsilon(delta))


def calibrate_noise(
  *,
  target_epsilon: float,
  delta: float,
  sampling_rate: float | None,
  steps: int,
  accountant: str = 'pld',
  scheme: SamplingScheme | str = SamplingScheme.POISSON,
  num_examples: int | None = None,
  batch_size: int | None = None,
  pld_discretization: float = PLD_DISCRETIZATION,
  tol: float = 1e-3,
) -> float:
  """The smallest noise multiplier whose epsilon is at most the target.

  Uses `dp_accounting.calibrate_dp_mechanism` (a bracketed root search);
  the result's epsilon is <= ``target_epsilon`` and within ``tol`` in sigma
  of the boundary. A fine PLD calibration takes seconds to a minute: use
  ``'rdp'`` or a coarse ``pld_discretization`` for quick estimates.

  Args:
    target_epsilon: > 0.
    delta: in (0, 1).
    sampling_rate: q in (0, 1].
    steps: planned steps, >= 1.
    accountant: ``'pld'`` or ``'rdp'``.
    scheme: the `SamplingScheme`.
    num_examples: data-set size (truncated Poisson, fixed size).
    batch_size: truncation size or fixed batch size.
    pld_discretization: the PLD's value discretization interval.
    tol: tolerance on the noise multiplier.

  Returns:
    The noise multiplier, a float.

  Example:
    >>> import optax_zoo
    >>> sigma = optax_zoo.calibrate_noise(target_epsilon=2.566, delta=1e-5,
    ...   sampling_rate=256/60000, steps=10_000, accountant='rdp')
    >>> round(sigma, 2)
    1.0
  """
  scheme = SamplingScheme(scheme)
  v.check_positive('target_epsilon', target_epsilon)
  v.check_positive('tol', tol)
  v.check_int('steps', steps, minimum=1)
  _check_delta(delta)
  make_event = lambda sigma: dp_event(
    noise_multiplier=sigma,
    steps=steps,
    sampling_rate=sampling_rate,
    scheme=scheme,
    num_examples=num_examples,
    batch_size=batch_size,
  )
  make_event(1.0)  # checks the arguments before the search
  return float(
    _dp_accounting().calibrate_dp_mechanism(
      lambda: _make_accountant(accountant, scheme, pld_discretization),
      make_event,
      target_epsilon,
      delta,
      bracket_interval=_dp_accounting().LowerEndpointAndGuess(0.0, 1.0),
      tol=tol,
    )
  )


def _source_fields(source: BatchSource | None, **given: Any) -> dict:
  if source is None:
    return given
  return {
    'sampling_rate': source.sampling_rate,
    'scheme': source.scheme,
    'num_examples': source.num_examples,
    'batch_size': source.batch_size,
  }


class PrivacyAccountant:
  """A running accountant: counts steps, reports epsilon, guards a budget.

  Each call to `epsilon` composes the steps taken so far afresh with
  dp-accounting (self-composition, fast for PLD), so it can be called at
  every evaluation.

  Args:
    noise_multiplier: sigma, >= 0.
    source: the `BatchSource` the run draws from (its scheme, rate, sizes);
      or give ``sampling_rate`` (and ``scheme``, ``num_examples``,
      ``batch_size``) instead.
    delta: the default delta of `epsilon` and `would_exceed`.
    accountant: ``'pld'`` or ``'rdp'``.
    sampling_rate, scheme, num_examples, batch_size: as `epsilon`'s, when
      no ``source`` is given.
    pld_discretization: as `epsilon`'s.

  Example:
    >>> import optax_zoo
    >>> acc = optax_zoo.PrivacyAccountant(noise_multiplier=1.0,
    ...   sampling_rate=0.01, delta=1e-5, accountant='rdp')
    >>> acc.step(100)
    >>> acc.steps, round(acc.epsilon(), 3)
    (100, 1.225)
    >>> acc.would_exceed(1.2)
    True
    >>> acc.report(clip_norm=1.0).epsilon['rdp'] == acc.epsilon()
    True
  """

  def __init__(
    self,
    *,
    noise_multiplier: float,
    source: BatchSource | None = None,
    delta: float | None = None,
    accountant: str = 'pld',
    sampling_rate: float | None = None,
    scheme: SamplingScheme | str = SamplingScheme.POISSON,
    num_examples: int | None = None,
    batch_size: int | None = None,
    pld_discretization: float = PLD_DISCRETIZATION,
  ):
    fields = _source_fields(
      source,
      sampling_rate=sampling_rate,
      scheme=SamplingScheme(scheme),
      num_examples=num_examples,
      batch_size=batch_size,
    )
    if delta is not None:
      _check_delta(delta)
    self._kwargs = dict(
      noise_multiplier=noise_multiplier,
      accountant=accountant,
      pld_discretization=pld_discretization,
      **fields,
    )
    # Fails now, not at the first evaluation, on an unaccountable setup.
    dp_event(
      noise_multiplier=noise_multiplier,
      steps=0,
      **{k: fields[k] for k in fields},
    )
    _make_accountant(accountant, fields['scheme'], pld_discretization)
    self.delta = delta
    self.steps = 0

  @property
  def noise_multiplier(self) -> float:
    return self._kwargs['noise_multiplier']

  def step(self, n: int = 1) -> None:
    """Records ``n`` more steps."""
    v.check_int('n', n, minimum=0)
    self.steps += int(n)

  def _delta(self, delta):
    delta = self.delta if delta is None else delta
    if delta is None:
      raise ValueError('`delta` must be given (here or to the accountant).')
    return delta

  def epsilon(self, delta: float | None = None, *, steps: int | None = None):
    """Epsilon after the steps taken (or after ``steps``) at ``delta``."""
    steps = self.steps if steps is None else steps
    return epsilon(steps=steps, delta=self._delta(delta), **self._kwargs)

  def would_exceed(
    self, target_epsilon: float, steps: int = 1, *, delta: float | None = None
  ) -> bool:
    """Whether ``steps`` more steps would take epsilon above the target.

    A loop calls it before a step and stops when it is True, so the
    budget is never exceeded.
    """
    v.check_positive('target_epsilon', target_epsilon)
    v.check_int('steps', steps, minimum=0)
    return self.epsilon(delta, steps=self.steps + steps) > target_epsilon

  def report(
    self, clip_norm: float, delta: float | None = None
  ) -> PrivacyReport:
    """The `privacy_report` of the steps taken so far."""
    kw = {k: x for k, x in self._kwargs.items() if k != 'accountant'}
    return privacy_report(
      clip_norm=clip_norm, steps=self.steps, delta=self._delta(delta), **kw
    )


@dataclasses.dataclass(frozen=True)
class PrivacyReport:
  """What a private run guarantees, as computed by dp-accounting.

  Attributes:
    epsilon: accountant name -> epsilon, or the reason it cannot account
      this scheme.
    delta: the delta of every epsilon.
    scheme: the sampling scheme.
    neighboring_relation: add-or-remove-one or replace-one.
    steps: steps taken.
    noise_multiplier: sigma.
    clip_norm: C.
    sampling_rate: q (nominal ``batch/N`` for non-Poisson schemes).
    num_examples: the data-set size used for accounting (plain Poisson
      uses it only through q = expected batch size / N), or None.
    batch_size: padded, truncation or fixed batch size, or None.
  """

  epsilon: dict[str, float | str]
  delta: float
  scheme: str
  neighboring_relation: str
  steps: int
  noise_multiplier: float
  clip_norm: float
  sampling_rate: float | None
  num_examples: int | None
  batch_size: int | None

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def __str__(self) -> str:
    lines = ['Privacy report (dp-accounting)']
    for name, eps in self.epsilon.items():
      shown = f'{eps:.4f}' if isinstance(eps, float) else f'n/a ({eps})'
      lines.append(f'  epsilon ({name}): {shown}')
    lines += [
      f'  delta: {self.delta:g}',
      f'  sampling: {self.scheme} ({self.neighboring_relation})',
      f'  sampling rate: {self.sampling_rate}',
      f'  data-set size: {self.num_examples}',
      f'  batch size: {self.batch_size}',
      f'  steps: {self.steps}',
      f'  noise multiplier: {self.noise_multiplier}',
      f'  clip norm: {self.clip_norm}',
    ]
    return '\n'.join(lines)


def privacy_report(
  *,
  noise_multiplier: float,
  clip_norm: float,
  steps: int,
  delta: float,
  source: BatchSource | None = None,
  sampling_rate: float | None = None,
  scheme: SamplingScheme | str = SamplingScheme.POISSON,
  num_examples: int | None = None,
  batch_size: int | None = None,
  pld_discretization: float = PLD_DISCRETIZATION,
) -> PrivacyReport:
  """The privacy report of a run, under both accountants.

  An accountant that cannot account the scheme gets its reason instead of a
  number; a shuffled run has no epsilon at all.

  Args:
    noise_multiplier: sigma, >= 0.
    clip_norm: C, > 0.
    steps: steps taken, >= 0.
    delta: in (0, 1).
    source: the run's `BatchSource`, or the fields below.
    sampling_rate, scheme, num_examples, batch_size: as `epsilon`'s.
    pld_discretization: as `epsilon`'s.

  Returns:
    A `PrivacyReport`; ``str(report)`` formats it.

  Example:
    >>> import optax_zoo
    >>> r = optax_zoo.privacy_report(noise_multiplier=1.0, clip_norm=1.0,
    ...   steps=10_000, delta=1e-5, sampling_rate=256/60000)
    >>> print(r)  # doctest: +ELLIPSIS
    Privacy report (dp-accounting)
      epsilon (pld): 2.3451
      epsilon (rdp): 2.5660
      delta: 1e-05
      sampling: poisson (add_or_remove_one)
    ...
  """
  v.check_positive('clip_norm', clip_norm)
  _check_delta(delta)
  fields = _source_fields(
    source,
    sampling_rate=sampling_rate,
    scheme=SamplingScheme(scheme),
    num_examples=num_examples,
    batch_size=batch_size,
  )
  scheme = SamplingScheme(fields['scheme'])
  v.check_non_negative('noise_multiplier', noise_multiplier)
  v.check_int('steps', steps, minimum=0)
  eps: dict[str, float | str] = {}
  for name in ACCOUNTANTS:
    reason = _refusal(scheme, name)
    eps[name] = reason or epsilon(
      noise_multiplier=noise_multiplier,
      steps=steps,
      delta=delta,
      accountant=name,
      pld_discretization=pld_discretization,
      **fields,
    )
  return PrivacyReport(
    epsilon=eps,
    delta=float(delta),
    scheme=scheme.value,
    neighboring_relation=_relation(scheme).name.lower(),
    steps=int(steps),
    noise_multiplier=float(noise_multiplier),
    clip_norm=float(clip_norm),
    sampling_rate=fields['sampling_rate'],
    num_examples=fields['num_examples'],
    batch_size=fields['batch_size'],
  )
