"""Communication topologies for gossip, compiled to `lax.ppermute` exchanges.

A topology is a mixing matrix :math:`W` (or one per step of a period, for a
time-varying graph): worker :math:`i`'s new parameters are
:math:`\\sum_j W_{ij} x_j`. It is stored as the exchanges that realize it:
each `Exchange` is one full permutation of the workers, worker :math:`i`
receiving the parameters of worker ``sources[i]`` with weight
``weights[i]``, and :math:`W = \\mathrm{diag}(1 - \\sum_k w_k) + \\sum_k
\\mathrm{diag}(w_k) P_k`. A circulant :math:`W` (ring, exponential
graphs, complete graph) is a sum of cyclic shifts with one weight each; any
other :math:`W` (`from_mixing_matrix`) is split into the cyclic shifts
:math:`j - i \\bmod n` with per-worker weights.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np

__all__ = [
  'Exchange',
  'Topology',
  'complete',
  'exponential',
  'from_mixing_matrix',
  'one_peer_exponential',
  'ring',
  'torus',
]

# Rows and columns of a mixing matrix must sum to one within this.
_ATOL = 1e-6


@dataclasses.dataclass(frozen=True)
class Exchange:
  """One `lax.ppermute` of a gossip step.

  Attributes:
    sources: worker ``i`` receives the parameters of worker ``sources[i]``
      (a permutation of ``range(n)``).
    weights: the weight ``W[i, sources[i]]`` worker ``i`` gives what it
      receives.
  """

  sources: tuple[int, ...]
  weights: tuple[float, ...]

  @property
  def perm(self) -> tuple[tuple[int, int], ...]:
    """``(source, destination)`` pairs, the ``perm`` of `lax.ppermute`."""
    return tuple((s, d) for d, s in enumerate(self.sources))

  @property
  def shift(self) -> int | None:
    """``s`` when worker ``i`` receives from ``(i + s) % n``, else None."""
    n = len(self.sources)
    s = self.sources[0] % n
    ok = all(src == (i + s) % n for i, src in enumerate(self.sources))
    return s if ok else None

  @property
  def weight(self) -> float | None:
    """The weight every worker uses, or None where they differ."""
    return self.weights[0] if len(set(self.weights)) == 1 else None


def _check_num_workers(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f'`{name}` must be an integer >= 1, got {value!r}.')
  if value < 1:
    raise ValueError(f'`{name}` must be an integer >= 1, got {value!r}.')
  return int(value)


def _strongly_connected(adjacency: np.ndarray) -> bool:
  n = adjacency.shape[0]
  for a in (adjacency, adjacency.T):
    seen, frontier = {0}, [0]
    while frontier:
      nxt = np.flatnonzero(a[frontier].any(axis=0))
      frontier = [j for j in nxt.tolist() if j not in seen]
      seen.update(frontier)
    if len(seen) < n:
      return False
  return True


def _check_mixing(name: str, matrices: list[np.ndarray]) -> None:
  """Raises unless each matrix is doubly stochastic and their union is
  strongly connected."""
  for w in matrices:
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] == 0:
      raise ValueError(
        f'`{name}` must be a square, non-empty matrix, got shape {w.shape}.'
      )
    if not np.all(np.isfinite(w)):
      raise ValueError(f'`{name}` must be finite, got {w}.')
    if np.any(w < 0):
      raise ValueError(
        f'`{name}` must be nonnegative, got a minimum entry {w.min()}.'
      )
    rows, cols = w.sum(axis=1), w.sum(axis=0)
    sums = np.concatenate([rows, cols])
    if not np.allclose(sums, 1, rtol=0, atol=_ATOL):
      raise ValueError(
        f'`{name}` must be doubly stochastic (rows and columns summing to '
        f'1 within {_ATOL}), got row sums {rows} and column sums {cols}.'
      )
  union = np.any([w > 0 for w in matrices], axis=0)
  if not _strongly_connected(union):
    raise ValueError(
      f'`{name}` must be connected (its graph, over one period for a '
      'time-varying topology, strongly connected): some workers never hear '
      'from others, so they cannot reach consensus.'
    )


def _shift_exchanges(w: np.ndarray) -> tuple[Exchange, ...]:
  """``w``'s off-diagonal as cyclic shifts with per-worker weights."""
  n = w.shape[0]
  out = []
  for s in range(1, n):
    sources = tuple((i + s) % n for i in range(n))
    weights = tuple(float(w[i, j]) for i, j in enumerate(sources))
    if any(weights):
      out.append(Exchange(sources, weights))
  return tuple(out)


def _merge(exchanges: list[Exchange]) -> tuple[Exchange, ...]:
  """Sums the weights of equal permutations and drops the identity: a
  small torus visits one neighbour from two sides."""
  merged: dict[tuple[int, ...], np.ndarray] = {}
  for e in exchanges:
    if e.sources == tuple(range(len(e.sources))):
      continue
    merged[e.sources] = merged.get(e.sources, 0) + np.asarray(e.weights)
  return tuple(
    Exchange(src, tuple(float(x) for x in w)) for src, w in merged.items()
  )


@dataclasses.dataclass(frozen=True)
class Topology:
  """Who mixes with whom at each step: gossip's mixing matrix, compiled.

  Build one with `ring`, `torus`, `exponential`, `one_peer_exponential`,
  `complete` or `from_mixing_matrix`.

  Attributes:
    name: a short description.
    num_workers: :math:`n`, the size of the mapped axis it runs on.
    schedule: the exchanges of each step of the period (one entry for a
      static graph); step :math:`t` uses ``schedule[t % period]``.
  """

  name: str
  num_workers: int
  schedule: tuple[tuple[Exchange, ...], ...]

  def __post_init__(self):
    n = _check_num_workers('num_workers', self.num_workers)
    if not self.schedule:
      raise ValueError('`schedule` must have at least one step, got ().')
    for step in self.schedule:
      for e in step:
        if sorted(e.sources) != list(range(n)) or len(e.weights) != n:
          raise ValueError(
            f'`schedule` must hold permutations of range({n}) with {n} '
            f'weights each, got {e}.'
          )
    _check_mixing(
      'schedule', [self.mixing_matrix(t) for t in range(self.period)]
    )

  @property
  def period(self) -> int:
    """Steps before the schedule repeats (1 for a static graph)."""
    return len(self.schedule)

  @property
  def time_varying(self) -> bool:
    return self.period > 1

  def exchanges(self, step: int = 0) -> tuple[Exchange, ...]:
    """The `Exchange` s of step ``step``, each one `lax.ppermute`."""
    return self.schedule[step % self.period]

  def mixing_matrix(self, step: int = 0) -> np.ndarray:
    """:math:`W` at step ``step`` (float64): row ``i`` weighs worker
    ``i``'s inputs."""
    n = self.num_workers
    w = np.eye(n)
    for e in self.exchanges(step):
      for i, (src, wt) in enumerate(zip(e.sources, e.weights, strict=True)):
        w[i, src] += wt
        w[i, i] -= wt
    return w

  @property
  def degree(self) -> int:
    """The most workers one worker's copy reaches in one step (its
    out-degree in the graph of :math:`W`, the worst step and worker)."""
    return max(
      int(np.max(np.sum((w > 0) & ~np.eye(len(w), dtype=bool), axis=0)))
      for w in (self.mixing_matrix(t) for t in range(self.period))
    )

  @property
  def messages_per_step(self) -> int:
    """Parameter copies every worker sends per step (worst step): one per
    `Exchange`, which equals `degree` for every constructor but
    `from_mixing_matrix` with a matrix that is not circulant."""
    return max(len(step) for step in self.schedule)

  @property
  def spectral_gap(self) -> float:
    """:math:`1 - |\\lambda_2|`: one minus the largest eigenvalue modulus
    of :math:`W - \\mathbf{1}\\mathbf{1}^\\top / n` (the second largest of
    :math:`W` with the consensus eigenvalue 1 removed).

    For a time-varying topology, the per-step gap of one period:
    :math:`1 - |\\lambda_2(W_{p-1} \\cdots W_0)|^{1/p}` (1 for a
    one-peer exponential graph on a power of two workers, whose period
    averages exactly; each single step has gap 0 there). For a symmetric
    :math:`W` the consensus distance shrinks at least by
    :math:`(1 - \\text{gap})^2` per gossip step; for a non-normal one the
    eigenvalue is a rate only asymptotically.
    """
    n = self.num_workers
    product = np.eye(n)
    for t in range(self.period):
      product = self.mixing_matrix(t) @ product
    lam = np.max(np.abs(np.linalg.eigvals(product - np.full((n, n), 1 / n))))
    return float(1 - min(lam, 1.0) ** (1 / self.period))


def ring(num_workers: int) -> Topology:
  """A ring: each worker averages itself and its two neighbours.

  :math:`W_{ii} = W_{i,i\\pm1} = 1/3` (Lian et al. 2017's ring); with two
  workers the one neighbour gets both :math:`1/3`, with one the worker keeps
  its own parameters. Symmetric, degree 2.

  Args:
    num_workers: :math:`n \\ge 1`.

  Returns:
    A static `Topology`.

  Example:
    >>> import optax_zoo
    >>> optax_zoo.ring(4).mixing_matrix()[0]
    array([0.333, 0.333, 0.   , 0.333])
  """
  n = _check_num_workers('num_workers', num_workers)
  shift = np.roll(np.eye(n), 1, axis=1)
  w = (np.eye(n) + shift + shift.T) / 3
  return Topology(f'ring({n})', n, (_shift_exchanges(w),))


def torus(rows: int, cols: int) -> Topology:
  """A 2-D torus: worker ``r * cols + c`` averages itself and its four
  grid neighbours (wrapping), 1/5 each.

  On a side of length 1 or 2 the neighbours coincide and their weights
  add up. Symmetric, degree up to 4.

  Args:
    rows: grid rows, >= 1.
    cols: grid columns, >= 1.

  Returns:
    A static `Topology` over ``rows * cols`` workers.

  Example:
    >>> import optax_zoo
    >>> t = optax_zoo.torus(3, 3)
    >>> t.num_workers, t.degree
    (9, 4)
  """
  r = _check_num_workers('rows', rows)
  c = _check_num_workers('cols', cols)
  n = r * c
  grid = np.arange(n).reshape(r, c)
  exchanges = [
    Exchange(tuple(np.roll(grid, shift, axis).ravel().tolist()), (0.2,) * n)
    for axis in (0, 1)
    for shift in (1, -1)
  ]
  return Topology(f'torus({r}, {c})', n, (_merge(exchanges),))


def _log2_ceil(n: int) -> int:
  return math.ceil(math.log2(n)) if n > 1 else 0


def exponential(num_workers: int) -> Topology:
  """The static exponential graph (Ying et al. 2021, eq. 3).

  Worker :math:`i` hears from :math:`i + 2^k \\bmod n` for
  :math:`k = 0, \\ldots, \\tau - 1`, :math:`\\tau = \\lceil \\log_2 n
  \\rceil`, all :math:`\\tau + 1` weights (itself included) equal to
  :math:`1 / (\\tau + 1)`. Directed (not symmetric) but circulant, so
  doubly stochastic, for any :math:`n`; degree :math:`\\tau`.

  Args:
    num_workers: :math:`n \\ge 1` (not necessarily a power of two).

  Returns:
    A static `Topology`.

  Example:
    >>> import optax_zoo
    >>> optax_zoo.exponential(8).degree
    3
  """
  n = _check_num_workers('num_workers', num_workers)
  tau = _log2_ceil(n)
  w = np.eye(n) / (tau + 1)
  for k in range(tau):
    w += np.roll(np.eye(n), 2**k, axis=1) / (tau + 1)
  return Topology(f'exponential({n})', n, (_shift_exchanges(w),))


def one_peer_exponential(num_workers: int) -> Topology:
  """The one-peer exponential graph (Ying et al. 2021, eq. 4).

  At step :math:`t` worker :math:`i` averages itself with worker
  :math:`i + 2^{t \\bmod \\tau} \\bmod n` (1/2 each), :math:`\\tau =
  \\lceil \\log_2 n \\rceil`: one copy on the wire per step. Time-varying
  with period :math:`\\tau`, switched inside `gossip` by its replicated
  step counter with `lax.switch`. Every step is doubly stochastic and the
  union over a period is connected for any :math:`n`; for :math:`n` a
  power of two the product over one period is the exact average (the
  paper's Lemma 1), so `Topology.spectral_gap` is 1, while for other
  :math:`n` it is not.

  Args:
    num_workers: :math:`n \\ge 1`.

  Returns:
    A time-varying `Topology` with period :math:`\\max(\\tau, 1)`.

  Example:
    >>> import optax_zoo
    >>> t = optax_zoo.one_peer_exponential(8)
    >>> t.period, t.degree, t.spectral_gap
    (3, 1, 1.0)
  """
  n = _check_num_workers('num_workers', num_workers)
  tau = _log2_ceil(n)
  steps = []
  for k in range(tau):
    w = (np.eye(n) + np.roll(np.eye(n), 2**k, axis=1)) / 2
    steps.append(_shift_exchanges(w))
  return Topology(f'one_peer_exponential({n})', n, tuple(steps) or ((),))


def complete(num_workers: int) -> Topology:
  """The complete graph: every worker averages all :math:`n` (exact
  consensus in one step, spectral gap 1), at :math:`n - 1` copies sent per
  worker per step; `all_reduce_mean` reaches the same average more cheaply.

  Args:
    num_workers: :math:`n \\ge 1`.

  Returns:
    A static `Topology`.

  Example:
    >>> import optax_zoo
    >>> optax_zoo.complete(4).spectral_gap
    1.0
  """
  n = _check_num_workers('num_workers', num_workers)
  return Topology(
    f'complete({n})', n, (_shift_exchanges(np.full((n, n), 1 / n)),)
  )


def from_mixing_matrix(mixing_matrix: Any) -> Topology:
  """A static topology from any doubly stochastic, connected :math:`W`.

  Its off-diagonal is sent as the cyclic shifts :math:`j - i \\bmod n` that
  have a nonzero entry, each one `lax.ppermute` of a full copy from every
  worker, with per-worker weights (indexed by `lax.axis_index`): a sparse
  non-circulant :math:`W` can cost more copies on the wire
  (`Topology.messages_per_step`) than its `Topology.degree`.

  The matrix is validated as given. Gossip mixes with the off-diagonal
  entries as given and the diagonal they imply, :math:`1 - \\sum_{j \\ne
  i} W_{ij}`, which equals the given :math:`W_{ii}` within the row-sum
  tolerance (1e-6): `Topology.mixing_matrix` returns that matrix. A matrix
  that is doubly stochastic only within the tolerance, and not with the
  implied diagonal, is refused.

  Args:
    mixing_matrix: an :math:`n \\times n` array, nonnegative, rows and
      columns summing to 1 (within 1e-6), strongly connected.

  Returns:
    A static `Topology`.

  Raises:
    ValueError: naming ``mixing_matrix`` if it is not square, finite,
      nonnegative, doubly stochastic and connected, as given or with the
      implied diagonal.

  Example:
    >>> import numpy as np, optax_zoo
    >>> t = optax_zoo.from_mixing_matrix(np.array([[0.5, 0.5], [0.5, 0.5]]))
    >>> t.num_workers, t.spectral_gap
    (2, 1.0)
  """
  try:
    w = np.asarray(mixing_matrix, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(
      f'`mixing_matrix` must be a numeric matrix, got {mixing_matrix!r}.'
    ) from e
  _check_mixing('mixing_matrix', [w])
  n = w.shape[0]
  try:
    return Topology(f'from_mixing_matrix({n})', n, (_shift_exchanges(w),))
  except ValueError as e:
    # Rows and columns each off by up to the tolerance can add up to more
    # once the diagonal is the one the exchanges imply.
    raise ValueError(
      '`mixing_matrix` passes the doubly stochastic check only within its '
      f'{_ATOL} tolerance: with the diagonal gossip mixes with, 1 minus '
      f"each row's off-diagonal sum, it fails ({e}). Make its rows and "
      'columns sum to 1 more exactly.'
    ) from e
