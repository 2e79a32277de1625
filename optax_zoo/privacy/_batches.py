"""Batch sources labelled with their sampling scheme, padded to fixed shapes.

What comes from where: Poisson (and truncated Poisson) sampling is
`jax_privacy.batch_selection.CyclicPoissonSampling`, fixed-size sampling
without replacement is `jax_privacy.batch_selection.FixedBatchSampling`;
the padding to one fixed size with a mask (so that a jitted step never
recompiles), the shuffling iterator, the labels and the checks are written
here. The label (`SamplingScheme`) is what `optax_zoo.privacy` accounting
reads, so a shuffled or fixed-size run is never accounted as Poisson.

Truncation: a Poisson batch holds a random number of examples; it is padded
to ``max_batch_size`` rows. When more than ``max_batch_size`` are drawn,
jax-privacy keeps a uniformly random ``max_batch_size`` of them and drops the
rest. That changes the mechanism: unless ``max_batch_size >= num_examples``
(no truncation possible) the source is labelled ``TRUNCATED_POISSON`` and
accounted with dp-accounting's ``TruncatedSubsampledGaussianDpEvent`` (PLD
only), not as plain Poisson. Choose ``max_batch_size`` a few standard
deviations above ``q N``: the truncated epsilon is then that of Poisson.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator

import numpy as np

from optax_zoo._src import validation as v

__all__ = [
  'BatchSource',
  'PaddedBatch',
  'SamplingScheme',
  'fixed_size_batches',
  'poisson_batches',
  'shuffled_batches',
]


class SamplingScheme(str, enum.Enum):
  """How a batch source picks its examples (what an accountant needs)."""

  POISSON = 'poisson'
  """Each example independently with probability q, no truncation."""
  TRUNCATED_POISSON = 'truncated_poisson'
  """Poisson, then at most ``max_batch_size`` kept uniformly at random."""
  FIXED_SIZE = 'fixed_size'
  """A uniformly random subset of a fixed size, fresh every step."""
  SHUFFLE = 'shuffle'
  """Consecutive slices of a permutation, reshuffled every epoch."""


@dataclasses.dataclass(frozen=True)
class PaddedBatch:
  """Example indices of one step, padded to a fixed size.

  Attributes:
    indices: int32 ``[batch_size]``; padding rows hold index 0.
    mask: bool ``[batch_size]``; False marks padding rows, which must
      contribute exactly zero (pass ``~mask`` as the clipping step's
      padding flag).
  """

  indices: np.ndarray
  mask: np.ndarray


@dataclasses.dataclass(frozen=True)
class BatchSource:
  """An iterable of `PaddedBatch`, labelled with its sampling scheme.

  Build it with `poisson_batches`, `shuffled_batches` or
  `fixed_size_batches`.

  Attributes:
    scheme: the `SamplingScheme`.
    num_examples: the data-set size used for accounting.
    batch_size: rows of every batch (Poisson: ``max_batch_size``).
    expected_batch_size: the mean number of real rows; the divisor of
      `optax_zoo.dp_aggregate`.
    sampling_rate: Poisson's q; for the others ``batch_size /
      num_examples`` (for the report, not an amplification claim).
    steps: batches the source yields.
    seed: the NumPy seed of the selection.
  """

  scheme: SamplingScheme
  num_examples: int
  batch_size: int
  expected_batch_size: float
  sampling_rate: float
  steps: int
  seed: int | None = None

  def __iter__(self) -> Iterator[PaddedBatch]:
    for indices in self._indices():
      n = len(indices)
      padded = np.zeros(self.batch_size, np.int32)
      padded[:n] = indices
      mask = np.arange(self.batch_size) < n
      yield PaddedBatch(padded, mask)

  def __len__(self) -> int:
    return self.steps

  def _indices(self) -> Iterator[np.ndarray]:
    from jax_privacy import batch_selection  # lazy: see _accounting

    if self.scheme == SamplingScheme.SHUFFLE:
      return _shuffled(
        self.num_examples, self.batch_size, self.steps, self.seed
      )
    if self.scheme == SamplingScheme.FIXED_SIZE:
      strategy = batch_selection.FixedBatchSampling(
        batch_size=self.batch_size, iterations=self.steps, replace=False
      )
    else:
      strategy = batch_selection.CyclicPoissonSampling(
        sampling_prob=self.sampling_rate,
        iterations=self.steps,
        truncated_batch_size=self.batch_size,
      )
    return strategy.batch_iterator(self.num_examples, rng=self.seed)


def _shuffled(num_examples, batch_size, steps, seed):
  rng = np.random.default_rng(seed)
  per_epoch = num_examples // batch_size
  order = rng.permutation(num_examples)
  for step in range(steps):
    if step and step % per_epoch == 0:
      order = rng.permutation(num_examples)
    start = (step % per_epoch) * batch_size
    yield order[start : start + batch_size]


def _check_sizes(num_examples, batch_size, steps, batch_name):
  v.check_int('num_examples', num_examples, minimum=1)
  v.check_int(batch_name, batch_size, minimum=1)
  v.check_int('steps', steps, minimum=0)
  if num_examples < batch_size:
    raise ValueError(
      f'`num_examples` must be >= `{batch_name}` ({batch_size}), got '
      f'{num_examples!r}.'
    )


def _sized_source(scheme, num_examples, batch_size, steps, seed):
  """A source of batches of exactly ``batch_size`` real rows."""
  _check_sizes(num_examples, batch_size, steps, 'batch_size')
  return BatchSource(
    scheme=scheme,
    num_examples=int(num_examples),
    batch_size=int(batch_size),
    expected_batch_size=float(batch_size),
    sampling_rate=batch_size / num_examples,
    steps=int(steps),
    seed=seed,
  )


def poisson_batches(
  num_examples: int,
  *,
  sampling_rate: float,
  max_batch_size: int,
  steps: int,
  seed: int | None = None,
) -> BatchSource:
  """Poisson-sampled batches padded to ``max_batch_size`` rows with a mask.

  Each example joins each batch independently with probability
  ``sampling_rate``; batches may be empty (all padding). More than
  ``max_batch_size`` drawn: a uniformly random ``max_batch_size`` are kept,
  and the source is labelled ``TRUNCATED_POISSON`` (see the module
  docstring) unless ``max_batch_size >= num_examples``.

  Args:
    num_examples: the data-set size N.
    sampling_rate: q in (0, 1].
    max_batch_size: rows of every padded batch, <= N.
    steps: batches to yield.
    seed: NumPy seed of the sampling.

  Returns:
    A `BatchSource` with expected batch size q N.

  Example:
    >>> import optax_zoo
    >>> src = optax_zoo.poisson_batches(
    ...   100, sampling_rate=0.05, max_batch_size=16, steps=2, seed=0)
    >>> src.scheme.value, src.expected_batch_size
    ('truncated_poisson', 5.0)
    >>> [b.indices.shape for b in src]
    [(16,), (16,)]
  """
  _check_sizes(num_examples, max_batch_size, steps, 'max_batch_size')
  v.check_in_range(
    'sampling_rate',
    sampling_rate,
    0.0,
    1.0,
    low_inclusive=False,
    high_inclusive=True,
  )
  truncates = max_batch_size < num_examples
  return BatchSource(
    scheme=(
      SamplingScheme.TRUNCATED_POISSON if truncates else SamplingScheme.POISSON
    ),
    num_examples=int(num_examples),
    batch_size=int(max_batch_size),
    expected_batch_size=float(sampling_rate) * num_examples,
    sampling_rate=float(sampling_rate),
    steps=int(steps),
    seed=seed,
  )


def shuffled_batches(
  num_examples: int, *, batch_size: int, steps: int, seed: int | None = None
) -> BatchSource:
  """Consecutive full batches of a permutation, reshuffled every epoch.

  The remainder ``num_examples % batch_size`` of each epoch is dropped. No
  accountant here accounts it (the Poisson analysis would overstate its
  privacy: Chua et al. 2024): it is for non-private runs and comparisons.

  Args:
    num_examples: the data-set size N.
    batch_size: rows of every batch, <= N.
    steps: batches to yield.
    seed: NumPy seed of the permutations.

  Returns:
    A `BatchSource` labelled ``SHUFFLE`` (every mask all True).

  Example:
    >>> import optax_zoo
    >>> src = optax_zoo.shuffled_batches(6, batch_size=3, steps=2, seed=0)
    >>> sorted(sum((b.indices.tolist() for b in src), []))
    [0, 1, 2, 3, 4, 5]
  """
  return _sized_source(
    SamplingScheme.SHUFFLE, num_examples, batch_size, steps, seed
  )


def fixed_size_batches(
  num_examples: int, *, batch_size: int, steps: int, seed: int | None = None
) -> BatchSource:
  """Fixed-size batches, each a fresh uniformly random subset.

  Accounted by dp-accounting's RDP accountant for sampling without
  replacement under the replace-one relation (PLD refuses it).

  Args:
    num_examples: the data-set size N.
    batch_size: rows of every batch, <= N.
    steps: batches to yield.
    seed: NumPy seed of the selection.

  Returns:
    A `BatchSource` labelled ``FIXED_SIZE``.

  Example:
    >>> import optax_zoo
    >>> src = optax_zoo.fixed_size_batches(10, batch_size=4, steps=1, seed=0)
    >>> [int(b.mask.sum()) for b in src]
    [4]
  """
  return _sized_source(
    SamplingScheme.FIXED_SIZE, num_examples, batch_size, steps, seed
  )
