"""Communication accounting: bytes on the wire, and an alpha-beta time model.

Two halves, both plain Python kept out of jitted code:

* `collective_bytes` reads the collectives of a *lowered* program
  (``jax.jit(f).lower(*args)``, its ``as_text(dialect='hlo')``) and prices
  each under a stated cost convention; `wire_bytes` lowers a function and
  sums them into a `WireBytes` summary. The lowered program is the logical
  one the user wrote: the compiled CPU program upcasts bfloat16 collectives
  to float32 and merges all-reduces into tuples, so its bytes would not be
  the algorithm's.
* `alpha_beta_time` and `busiest_node_bytes` model ring all-reduce, a
  parameter server and gossip with a latency (alpha) and a bandwidth (beta)
  per link. They are a model, not a measurement.

Cost conventions for one execution of a collective whose operand is ``B``
bytes on each worker (``B`` counts every element at its own dtype's width:
bfloat16 is 2 bytes, uint8 is 1), in a replica group of ``n`` workers:

=====================  ================================================
collective             bytes each worker sends (and receives)
=====================  ================================================
all-reduce (ring)      ``2 (n - 1) / n * B`` (reduce-scatter, all-gather)
all-gather (ring)      ``(n - 1) * B`` = ``(n - 1) / n * B_out``
reduce-scatter (ring)  ``(n - 1) / n * B``
all-to-all             ``(n - 1) / n * B`` (it keeps its own 1/n)
collective-permute     ``B`` per (source, target) pair with source !=
                       target: a worker that sends to ``d`` peers sends
                       ``d * B``, one that ``d`` peers send to receives it
=====================  ================================================

A tuple-shaped collective (several operands) costs the sum of its operands'
``B``. The asynchronous ``-start``/``-done`` pairs count once, at the start.
Self pairs ``(i, i)`` of a collective-permute move no bytes.

Nested computations are followed from the entry computation: a ``call``
(``shard_map``'s body, ``jax.named_call``, ``async-start``) counts once per
execution of its caller; a ``while`` loop multiplies its body by the trip
count when it is statically known, which covers ``lax.fori_loop`` with
static bounds and ``lax.scan``, recognised as the counter JAX lowers them to
(a counter starting at a constant, stepped by one and compared ``<`` with a
constant), or read from a ``known_trip_count`` annotation. A loop whose trip
count is not known (a ``lax.while_loop``) has its collectives counted once
and reported: their `Collective.executions` is ``None`` and
`WireBytes.exact` is False. A ``conditional`` (``lax.cond``,
``lax.switch``: time-varying gossip switches its shift this way) runs one
branch per execution: the totals take, for each worker, the largest of its
branches' bytes, which is exact when every branch moves the same bytes per
worker (one peer per step) and an upper bound otherwise; its collectives
carry `Collective.branches`.

The program is read as lowered, before XLA removes dead code: a collective
whose result is unused still counts.

Device ids are the ids the program names (global device ids under
``shard_map``, whose collectives use ``use_global_device_ids``). Under
``jax.vmap(..., axis_name=...)`` the workers are simulated on one device and
the program has no collectives: nothing crosses a wire.

Example:
  >>> from optax_zoo.distributed import collective_bytes
  >>> hlo = '''
  ... ENTRY main {
  ...   x = bf16[1024]{0} parameter(0)
  ...   ROOT y = bf16[1024]{0} collective-permute(x),
  ...     source_target_pairs={{0,1},{1,2},{2,3},{3,0}}
  ... }'''
  >>> [(c.kind, c.payload_bytes, c.sent) for c in collective_bytes(hlo)]
  [('collective-permute', 2048, (2048.0, 2048.0, 2048.0, 2048.0))]

References:
  Thakur, Rabenseifner and Gropp, `Optimization of Collective Communication
  Operations in MPICH <https://doi.org/10.1177/1094342005051521>`_, IJHPCA
  2005; Patarasuk and Yuan, `Bandwidth optimal all-reduce algorithms for
  clusters of workstations <https://doi.org/10.1016/j.jpdc.2008.09.002>`_,
  JPDC 2009 (the ring all-reduce cost); Lian et al., `Can Decentralized
  Algorithms Outperform Centralized Algorithms?
  <https://arxiv.org/abs/1705.09056>`_, 2017 (the busiest node's traffic,
  O(degree) for gossip against O(n) for a parameter server).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from optax_zoo._src import validation as v
from optax_zoo.distributed._hlo import Collective, parse_collectives

__all__ = [
  'Collective',
  'WireBytes',
  'alpha_beta_time',
  'busiest_node_bytes',
  'busiest_worker_bytes',
  'collective_bytes',
  'information_bits',
  'summarize_collectives',
  'wire_bytes',
  'worker_bytes',
]

PATTERNS = ('ring_allreduce', 'parameter_server', 'gossip')


@dataclasses.dataclass(frozen=True)
class WireBytes:
  """Bytes on the wire per call of a program (one training step).

  Attributes:
    collectives: the per-collective breakdown (`Collective` records).
    num_devices: devices the program spans.
    sent: bytes each device sends, by device id.
    received: bytes each device receives.
    traffic: bytes through each device's link, sent plus received.
    information_bits: the information the step must convey, when given
      (e.g. `information_bits` of a compressor's payload), for comparison.
  """

  collectives: tuple[Collective, ...]
  num_devices: int
  sent: tuple[float, ...]
  received: tuple[float, ...]
  traffic: tuple[float, ...]
  information_bits: float | None = None

  @property
  def per_worker(self) -> float:
    """Bytes one worker sends, averaged over the workers."""
    return sum(self.sent) / self.num_devices

  @property
  def busiest_sent(self) -> float:
    """Bytes the busiest sender sends."""
    return max(self.sent, default=0.0)

  @property
  def busiest_received(self) -> float:
    """Bytes the busiest receiver receives."""
    return max(self.received, default=0.0)

  @property
  def busiest(self) -> float:
    """Bytes through the busiest worker's link (sent plus received).

    The same convention as `busiest_node_bytes`.
    """
    return max(self.traffic, default=0.0)

  @property
  def total(self) -> float:
    """Bytes sent by all workers together."""
    return sum(self.sent)

  @property
  def exact(self) -> bool:
    """False when a collective sits in a loop of unknown trip count."""
    return all(c.executions is not None for c in self.collectives)

  def by_kind(self) -> dict[str, float]:
    """Bytes one worker sends per kind of collective, averaged over workers."""
    kinds = sorted({c.kind for c in self.collectives})
    return {
      k: sum(
        _combine(
          [c for c in self.collectives if c.kind == k],
          lambda c: c.sent,
          self.num_devices,
        )
      )
      / self.num_devices
      for k in kinds
    }


def collective_bytes(
  lowered_or_text: jax.stages.Lowered | str, *, num_devices: int | None = None
) -> list[Collective]:
  """The collectives of a lowered program, each priced per execution.

  Args:
    lowered_or_text: ``jax.jit(f).lower(*args)``, or its
      ``as_text(dialect='hlo')`` (or any HLO module text). A compiled
      program is refused (see the module docstring).
    num_devices: devices the program spans; read from the program (the ids
      its collectives name, its mesh) when None.

  Returns:
    One `Collective` per collective instruction reachable from the entry
    computation, in program order, with the bytes each device sends and
    receives per execution under the module's cost conventions.
  """
  return parse_collectives(lowered_or_text, num_devices)[0]


def _combine(
  collectives: Sequence[Collective],
  vector: Callable[[Collective], Sequence[float]],
  num_devices: int,
) -> list[float]:
  """Per-device totals: loops multiplied, each conditional's worst branch."""

  def total(group: Sequence[Collective], depth: int) -> np.ndarray:
    acc = np.zeros(num_devices)
    alternatives: dict[str, dict[int, list[Collective]]] = {}
    for c in group:
      if len(c.branches) == depth:
        acc += (1 if c.executions is None else c.executions) * np.asarray(
          vector(c), dtype=float
        )
      else:
        cond, b = c.branches[depth]
        alternatives.setdefault(cond, {}).setdefault(b, []).append(c)
    for arms in alternatives.values():
      acc += np.max([total(arm, depth + 1) for arm in arms.values()], axis=0)
    return acc

  return [float(x) for x in total(collectives, 0)]


def _devices_of(collectives: Sequence[Collective]) -> int:
  sizes = {len(c.sent) for c in collectives}
  if len(sizes) > 1:
    raise ValueError(
      '`collectives` must come from one program (they span '
      f'{sorted(sizes)} devices).'
    )
  return sizes.pop() if sizes else 1


_DIRECTIONS = ('sent', 'received', 'traffic')


def _vector(direction: str) -> Callable[[Collective], Sequence[float]]:
  v.check_choice('direction', direction, _DIRECTIONS)
  if direction == 'traffic':
    return lambda c: [s + r for s, r in zip(c.sent, c.received, strict=True)]
  return lambda c: getattr(c, direction)


def worker_bytes(
  collectives: Sequence[Collective], *, direction: str = 'sent'
) -> tuple[float, ...]:
  """Bytes each device moves per call of the program.

  Args:
    collectives: the records `collective_bytes` returned for one program.
    direction: ``'sent'``, ``'received'`` or ``'traffic'`` (both).

  Returns:
    Bytes per device id, loops multiplied by their trip counts and each
    conditional at its worst branch per device.
  """
  vector = _vector(direction)
  return tuple(_combine(collectives, vector, _devices_of(collectives)))


def busiest_worker_bytes(
  collectives: Sequence[Collective], *, direction: str = 'traffic'
) -> float:
  """Bytes the busiest device moves per call (see `worker_bytes`)."""
  return max(worker_bytes(collectives, direction=direction), default=0.0)


def summarize_collectives(
  collectives: Sequence[Collective],
  *,
  num_devices: int | None = None,
  information_bits: float | None = None,
) -> WireBytes:
  """A `WireBytes` summary of one program's `collective_bytes` records.

  Args:
    collectives: the records of one program.
    num_devices: devices the program spans, needed only when it has no
      collectives (then every count is zero); defaults to the records'.
    information_bits: the information the step conveys, kept for
      comparison (`information_bits`).

  Returns:
    The summary.
  """
  if information_bits is not None:
    v.check_non_negative('information_bits', information_bits)
  n = _devices_of(collectives) if collectives else num_devices or 1
  if collectives and num_devices is not None and num_devices != n:
    raise ValueError(
      f'`num_devices` must match the records ({n} devices), got {num_devices}.'
    )
  return WireBytes(
    collectives=tuple(collectives),
    num_devices=n,
    sent=tuple(_combine(collectives, _vector('sent'), n)),
    received=tuple(_combine(collectives, _vector('received'), n)),
    traffic=tuple(_combine(collectives, _vector('traffic'), n)),
    information_bits=information_bits,
  )


def wire_bytes(
  fn: Callable[..., Any] | jax.stages.Lowered | str,
  *args: Any,
  information_bits: float | None = None,
  num_devices: int | None = None,
  **kwargs: Any,
) -> WireBytes:
  """Bytes on the wire of one call of `fn`, read from its lowered program.

  Args:
    fn: a jitted function, a ``jax.shard_map``-ed one (it is wrapped in
      ``jax.jit``), any function of arrays, or an already lowered program
      or its HLO text (then `args` must be empty).
    *args: the arguments to lower `fn` with (arrays or
      ``jax.ShapeDtypeStruct``).
    information_bits: the information the step conveys, kept in the
      summary for comparison.
    num_devices: see `collective_bytes`.
    **kwargs: keyword arguments to lower `fn` with.

  Returns:
    A `WireBytes` summary: per-worker and busiest-worker bytes and the
    per-collective breakdown.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jax.sharding import AxisType, PartitionSpec as P
    >>> from optax_zoo.distributed import wire_bytes
    >>> mesh = jax.make_mesh((1,), ('i',), axis_types=(AxisType.Auto,))
    >>> mean = jax.shard_map(lambda g: jax.lax.pmean(g, 'i'), mesh=mesh,
    ...                      in_specs=P('i'), out_specs=P())
    >>> w = wire_bytes(mean, jnp.zeros(256, jnp.float32))
    >>> w.collectives[0].kind, w.collectives[0].payload_bytes
    ('all-reduce', 1024)
    >>> w.per_worker  # 2 (n - 1) / n * 1024 with n = 1: nothing to send
    0.0
  """
  if isinstance(fn, (jax.stages.Lowered, str)):
    if args or kwargs:
      raise ValueError('`args` must be empty when `fn` is already lowered.')
    lowered = fn
  elif isinstance(fn, jax.stages.Compiled):
    lowered = fn  # refused with its reason by `collective_bytes`
  else:
    lower = getattr(fn, 'lower', None) or jax.jit(fn).lower
    lowered = lower(*args, **kwargs)
  records, n = parse_collectives(lowered, num_devices)
  return summarize_collectives(
    records, num_devices=n, information_bits=information_bits
  )


def information_bits(
  num_params: int, bits_per_coordinate: float, *, overhead_bits: float = 0
) -> float:
  """Bits a message of `num_params` coordinates carries.

  Args:
    num_params: coordinates in the message.
    bits_per_coordinate: e.g. 32 for float32, 9 for natural compression
      (8-bit exponent and a sign bit).
    overhead_bits: bits per message on top (a scale, a norm, indices).

  Returns:
    ``num_params * bits_per_coordinate + overhead_bits``.
  """
  v.check_int('num_params', num_params, minimum=0)
  v.check_non_negative('bits_per_coordinate', bits_per_coordinate)
  v.check_non_negative('overhead_bits', overhead_bits)
  return float(num_params * bits_per_coordinate + overhead_bits)


def _check_model(
  pattern: str, num_workers: int, message_bytes: float, degree: int | None
) -> None:
  v.check_choice('pattern', pattern, PATTERNS)
  v.check_int('num_workers', num_workers, minimum=1)
  v.check_non_negative('message_bytes', message_bytes)
  if pattern == 'gossip':
    if degree is None:
      raise ValueError(
        "`degree` must be given for pattern 'gossip' (the number of "
        'neighbours each worker exchanges with), got None.'
      )
    v.check_int('degree', degree, minimum=0, maximum=num_workers - 1)
  elif degree is not None:
    raise ValueError(
      f"`degree` must be None for pattern {pattern!r} (only 'gossip' has "
      f'one), got {degree!r}.'
    )


def busiest_node_bytes(
  pattern: str,
  num_workers: int,
  message_bytes: float,
  degree: int | None = None,
) -> float:
  """Bytes through the busiest node's link per step (sent plus received).

  With ``n`` workers each holding an ``M``-byte message to average:

  * ``'ring_allreduce'``: every worker sends and receives
    ``2 (n - 1) / n * M``: ``4 (n - 1) / n * M``;
  * ``'parameter_server'``: the server (a separate node) receives ``n``
    messages and sends ``n`` back: ``2 n M``;
  * ``'gossip'``: a worker exchanges its message with ``degree``
    neighbours: ``2 * degree * M``.

  The busiest node's traffic is O(degree) for gossip against O(n) for a
  parameter server (Lian et al. 2017). This is a model, not a measurement;
  `WireBytes.busiest` reads the same quantity from a program.

  Args:
    pattern: ``'ring_allreduce'``, ``'parameter_server'`` or ``'gossip'``.
    num_workers: ``n >= 1``.
    message_bytes: ``M >= 0``.
    degree: neighbours per worker, in ``[0, n - 1]``; gossip only.

  Returns:
    The bytes, a float.
  """
  _check_model(pattern, num_workers, message_bytes, degree)
  n, m = num_workers, message_bytes
  if pattern == 'ring_allreduce':
    return 4 * (n - 1) * m / n
  if pattern == 'parameter_server':
    return float(2 * n * m)
  return float(2 * degree * m)


def alpha_beta_time(
  pattern: str,
  *,
  num_workers: int,
  message_bytes: float,
  latency: float,
  bandwidth: float,
  degree: int | None = None,
) -> float:
  r"""Time of one averaging step under the alpha-beta (Hockney) model.

  Sending ``k`` bytes over one link takes ``alpha + k / beta``; links are
  full duplex (a node sends and receives at once), a node has one link,
  and messages that share it serialize. With ``n`` workers and an
  ``M``-byte message:

  .. math::

    T_\text{ring} &= 2 (n - 1) \alpha + 2 \frac{n - 1}{n} \frac{M}{\beta}
    \\
    T_\text{ps} &= 2 \left(\alpha + \frac{n M}{\beta}\right)
    \\
    T_\text{gossip} &= d \left(\alpha + \frac{M}{\beta}\right)

  Ring all-reduce is a reduce-scatter and an all-gather of ``n - 1`` steps
  each, every step moving ``M / n`` bytes per link (Thakur et al. 2005;
  Patarasuk and Yuan 2009). The parameter server is a separate node: the
  push of ``n`` messages into its link (one latency, then ``n M`` bytes
  serialized on it) and the pull of ``n`` messages back out after it has
  summed them. Gossip sends one message to each of ``d`` neighbours one
  after the other on the sender's link (its receptions overlap on the
  other direction). This is a model, not a measurement: it ignores
  contention inside the network, computation, and overlap with the
  backward pass.

  Args:
    pattern: ``'ring_allreduce'``, ``'parameter_server'`` or ``'gossip'``.
    num_workers: ``n >= 1``.
    message_bytes: ``M >= 0``, each worker's message.
    latency: ``alpha >= 0``, seconds per message.
    bandwidth: ``beta > 0``, bytes per second per link.
    degree: ``d``, neighbours per worker in ``[0, n - 1]``; gossip only.

  Returns:
    Seconds per step.

  Example:
    >>> from optax_zoo.distributed import alpha_beta_time
    >>> alpha_beta_time('ring_allreduce', num_workers=4, message_bytes=4e6,
    ...                 latency=1e-5, bandwidth=1e9)  # 6e-5 + 6e-3
    0.00606
  """
  _check_model(pattern, num_workers, message_bytes, degree)
  v.check_non_negative('latency', latency)
  v.check_positive('bandwidth', bandwidth)
  n, m, a, b = num_workers, message_bytes, latency, bandwidth
  if pattern == 'ring_allreduce':
    return 2 * (n - 1) * a + 2 * (n - 1) * m / (n * b)
  if pattern == 'parameter_server':
    return 2 * (a + n * m / b)
  return degree * (a + m / b)
