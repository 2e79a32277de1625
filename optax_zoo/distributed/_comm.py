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
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from optax_zoo._src import validation as v

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

_KINDS = {
  'all-reduce': 'all-reduce',
  'all-reduce-start': 'all-reduce',
  'all-gather': 'all-gather',
  'all-gather-start': 'all-gather',
  'collective-permute': 'collective-permute',
  'collective-permute-start': 'collective-permute',
  'all-to-all': 'all-to-all',
  'reduce-scatter': 'reduce-scatter',
}
# The second half of an asynchronous pair, and async wrappers that name the
# computation `async-start` already counted.
_SKIPPED = {
  'all-reduce-done',
  'all-gather-done',
  'collective-permute-done',
  'async-update',
  'async-done',
}
_CALLEES = ('to_apply', 'calls', 'called_computations')

_BITS = {
  'pred': 8,
  'token': 0,
  'bf16': 16,
  'c64': 64,
  'c128': 128,
  **{f'{k}{w}': w for k in 'su' for w in (2, 4, 8, 16, 32, 64)},
  **{f'f{w}': w for w in (16, 32, 64)},
}


def _dtype_bits(dtype: str) -> int:
  if dtype in _BITS:
    return _BITS[dtype]
  if dtype.startswith('f8'):
    return 8
  if dtype.startswith('f4'):
    return 4
  raise ValueError(f'unknown HLO element type {dtype!r} in a collective.')


@dataclasses.dataclass(frozen=True)
class Collective:
  """One collective of a lowered program, priced per execution.

  Attributes:
    kind: ``'all-reduce'``, ``'all-gather'``, ``'collective-permute'``,
      ``'all-to-all'`` or ``'reduce-scatter'`` (an async ``-start`` form is
      reported under its synchronous kind).
    name: the HLO instruction's name.
    path: where it sits: the chain of calls, loops (``while.5[x3]``, ``[x?]``
      when the trip count is unknown) and branches (``cond.1[1]``) from the
      entry computation.
    dtypes: HLO element type of each operand (``'f32'``, ``'bf16'``,
      ``'u8'``), one per operand of a tuple-shaped collective.
    shapes: each operand's shape on one worker.
    payload_bytes: ``B``, the operands' bytes on one worker.
    replica_groups: the groups of device ids (all devices when the program
      names none); empty for a collective-permute.
    source_target_pairs: a collective-permute's ``(source, target)`` pairs.
    group_size: workers per replica group; for a collective-permute, the
      number of distinct devices its pairs name.
    executions: times it runs per call of the program (loop trip counts
      multiplied), None inside a loop whose trip count is not static.
    branches: ``(conditional, branch index)`` for each conditional around
      it, outermost first; the conditional is named by its path.
    sent: bytes each device sends per execution, indexed by device id.
    received: bytes each device receives per execution.
  """

  kind: str
  name: str
  path: str
  dtypes: tuple[str, ...]
  shapes: tuple[tuple[int, ...], ...]
  payload_bytes: int
  replica_groups: tuple[tuple[int, ...], ...]
  source_target_pairs: tuple[tuple[int, int], ...]
  group_size: int
  executions: int | None
  branches: tuple[tuple[str, int], ...]
  sent: tuple[float, ...]
  received: tuple[float, ...]


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


@dataclasses.dataclass(frozen=True)
class _Instruction:
  name: str
  shape: str
  opcode: str
  operands: tuple[str, ...]
  attrs: str


@dataclasses.dataclass
class _Computation:
  instructions: list[_Instruction]
  by_name: dict[str, _Instruction]
  root: str | None


def _balanced(text: str, start: int, open_: str, close: str) -> int:
  """Index just past the bracket closing the one at `text[start]`."""
  depth = 0
  quoted = False
  i = start
  while i < len(text):
    ch = text[i]
    if quoted:
      if ch == '\\':
        i += 1
      elif ch == '"':
        quoted = False
    elif ch == '"':
      quoted = True
    elif ch == open_:
      depth += 1
    elif ch == close:
      depth -= 1
      if depth == 0:
        return i + 1
    i += 1
  raise ValueError(f'unbalanced {open_!r} in HLO text: {text[start:][:80]!r}')


def _split_top(text: str) -> list[str]:
  """Splits at commas outside brackets and quotes."""
  parts, depth, quoted, current = [], 0, False, []
  for ch in text:
    if quoted:
      quoted = ch != '"'
    elif ch == '"':
      quoted = True
    elif ch in '([{<':
      depth += 1
    elif ch in ')]}>':
      depth -= 1
    elif ch == ',' and depth == 0:
      parts.append(''.join(current).strip())
      current = []
      continue
    current.append(ch)
  if ''.join(current).strip():
    parts.append(''.join(current).strip())
  return parts


# `name = ...`: attributes print their `=` without spaces.
_ASSIGN = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s+=\s+')
_OPCODE = re.compile(r'\s*([a-z][\w\-]*)\(')
_LEAF = re.compile(r'([a-z]\w*)\[([^\]]*)\]')


def _parse_instruction(line: str) -> _Instruction | None:
  match = _ASSIGN.match(line)
  if match is None:
    return None
  rest = line[match.end() :]
  if rest.startswith('('):
    end = _balanced(rest, 0, '(', ')')
  else:
    end = rest.find(' ')
    if end < 0:
      return None
  shape, rest = rest[:end], rest[end:]
  op = _OPCODE.match(rest)
  if op is None:
    return None
  close = _balanced(rest, op.end() - 1, '(', ')')
  operands = tuple(
    part.split()[-1].lstrip('%')
    for part in _split_top(rest[op.end() : close - 1])
  )
  return _Instruction(
    name=match.group(1),
    shape=shape,
    opcode=op.group(1),
    operands=operands,
    attrs=rest[close:],
  )


def _join_continued(text: str) -> list[str]:
  """One HLO instruction per line, joining lines an instruction wrapped."""
  lines: list[str] = []
  for raw in text.splitlines():
    line = raw.strip()
    if not line or line.startswith('//'):
      continue
    starts = (
      _ASSIGN.match(line)
      or line.endswith('{')
      or line == '}'
      or line.startswith('HloModule')
    )
    if lines and not starts and not lines[-1].endswith('{'):
      lines[-1] += ' ' + line
    else:
      lines.append(line)
  return lines


def _parse_module(text: str) -> tuple[dict[str, _Computation], str, str]:
  """Computations by name, the entry's name and the module header."""
  computations: dict[str, _Computation] = {}
  entry = None
  header = ''
  current: _Computation | None = None
  last_name = None
  for line in _join_continued(text):
    if line.startswith('HloModule'):
      header = line
      continue
    if current is None:
      if line.endswith('{') and _ASSIGN.match(line) is None:
        words = line[:-1].split()
        is_entry = words[0] == 'ENTRY'
        name = (words[1] if is_entry else words[0]).split('(')[0]
        name = name.lstrip('%')
        current = _Computation([], {}, None)
        computations[name] = current
        if is_entry:
          entry = name
        last_name = name
      continue
    if line == '}':
      current = None
      continue
    ins = _parse_instruction(line)
    if ins is None:
      continue
    current.instructions.append(ins)
    current.by_name[ins.name] = ins
    if line.startswith('ROOT'):
      current.root = ins.name
  if entry is None:
    if last_name is None:
      raise ValueError('no HLO computation found in the text.')
    # The printer puts the entry computation last.
    entry = last_name
  for comp in computations.values():
    if comp.root is None and comp.instructions:
      comp.root = comp.instructions[-1].name
  return computations, entry, header


def _attr(attrs: str, key: str) -> str | None:
  """The value of `key=...` among an instruction's attributes."""
  match = re.search(r'(?:^|[\s,])' + re.escape(key) + r'=', attrs)
  if match is None:
    return None
  start = match.end()
  if attrs.startswith('{', start):
    return attrs[start : _balanced(attrs, start, '{', '}')]
  if attrs.startswith('"', start):
    end = attrs.index('"', start + 1)
    return attrs[start + 1 : end]
  if attrs.startswith('[', start):
    iota = re.match(r'\[[\d,]*\]<=\[[\d,]*\](?:T\([\d,]*\))?', attrs[start:])
    if iota:
      return iota.group(0)
  end = re.search(r'[\s,]|$', attrs[start:]).start()
  return attrs[start : start + end].lstrip('%')


def _callee_names(value: str) -> list[str]:
  names = (n.strip().lstrip('%') for n in value.strip('{}').split(','))
  return [n for n in names if n]


def _int_lists(value: str) -> list[tuple[int, ...]]:
  inner = value.strip()
  if inner.startswith('{') and inner.endswith('}'):
    inner = inner[1:-1]
  return [
    tuple(int(x) for x in group.split(',') if x.strip())
    for group in re.findall(r'\{([\d,\s]*)\}', inner)
  ]


def _replica_groups(value: str | None) -> list[tuple[int, ...]]:
  if value is None:
    return []
  iota = re.fullmatch(
    r'\[([\d,]*)\]<=\[([\d,]*)\](?:T\(([\d,]*)\))?', value.strip()
  )
  if iota:
    groups_shape = [int(x) for x in iota.group(1).split(',')]
    dims = [int(x) for x in iota.group(2).split(',')]
    ids = np.arange(math.prod(dims)).reshape(dims)
    if iota.group(3):
      ids = ids.transpose([int(x) for x in iota.group(3).split(',')])
    return [tuple(int(i) for i in g) for g in ids.reshape(groups_shape)]
  return _int_lists(value)


def _leaves(shape: str) -> list[tuple[str, tuple[int, ...]]]:
  leaves = []
  for dtype, dims in _LEAF.findall(shape):
    dims = [d.strip().lstrip('<=') for d in dims.split(',') if d.strip()]
    leaves.append((dtype, tuple(int(d) for d in dims)))
  return leaves


def _leaf_bytes(dtype: str, dims: tuple[int, ...]) -> int:
  return math.ceil(_dtype_bits(dtype) * math.prod(dims) / 8)


def _constant_int(comp: _Computation, name: str) -> int | None:
  ins = comp.by_name.get(name)
  if ins is None or ins.opcode != 'constant' or len(ins.operands) != 1:
    return None
  try:
    return int(ins.operands[0])
  except ValueError:
    return None


def _counter_index(comp: _Computation, name: str) -> int | None:
  """The tuple index of `name` when it reads the loop state's counter."""
  ins = comp.by_name.get(name)
  if ins is None or ins.opcode != 'get-tuple-element':
    return None
  source = comp.by_name.get(ins.operands[0])
  index = _attr(ins.attrs, 'index')
  if source is None or source.opcode != 'parameter' or index is None:
    return None
  return int(index)


def _trip_count(
  computations: dict[str, _Computation], caller: _Computation, ins: _Instruction
) -> int | None:
  """A while loop's static trip count, or None when it is not static."""
  config = _attr(ins.attrs, 'backend_config') or ''
  known = re.search(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"', config)
  if known:
    return int(known.group(1))
  cond = computations.get(_attr(ins.attrs, 'condition') or '')
  body = computations.get(_attr(ins.attrs, 'body') or '')
  init = caller.by_name.get(ins.operands[0]) if ins.operands else None
  if cond is None or body is None or init is None or init.opcode != 'tuple':
    return None
  compare = cond.by_name.get(cond.root or '')
  if compare is None or compare.opcode != 'compare':
    return None
  if _attr(compare.attrs, 'direction') != 'LT' or len(compare.operands) != 2:
    return None
  index = _counter_index(cond, compare.operands[0])
  limit = _constant_int(cond, compare.operands[1])
  if index is None or limit is None or index >= len(init.operands):
    return None
  start = _constant_int(caller, init.operands[index])
  out = body.by_name.get(body.root or '')
  if start is None or out is None or out.opcode != 'tuple':
    return None
  step = body.by_name.get(out.operands[index])
  if step is None or step.opcode != 'add' or len(step.operands) != 2:
    return None
  reads = [_counter_index(body, o) for o in step.operands]
  ones = [_constant_int(body, o) for o in step.operands]
  if not (
    (reads[0] == index and ones[1] == 1) or (reads[1] == index and ones[0] == 1)
  ):
    return None
  return max(0, limit - start)


@dataclasses.dataclass(frozen=True)
class _Raw:
  kind: str
  name: str
  path: str
  leaves: tuple[tuple[str, tuple[int, ...]], ...]
  groups: tuple[tuple[int, ...], ...]
  pairs: tuple[tuple[int, int], ...]
  executions: int | None
  branches: tuple[tuple[str, int], ...]


def _walk(
  computations: dict[str, _Computation],
  name: str,
  executions: int | None,
  path: str,
  branches: tuple[tuple[str, int], ...],
  out: list[_Raw],
) -> None:
  comp = computations[name]
  for ins in comp.instructions:
    here = f'{path}/{ins.name}' if path else ins.name
    kind = _KINDS.get(ins.opcode)
    if kind is not None:
      leaves = []
      for operand in ins.operands:
        source = comp.by_name.get(operand)
        if source is None:
          raise ValueError(
            f'operand {operand!r} of {ins.name!r} is not defined in its '
            'computation.'
          )
        leaves.extend(_leaves(source.shape))
      pairs = _int_lists(_attr(ins.attrs, 'source_target_pairs') or '')
      out.append(
        _Raw(
          kind=kind,
          name=ins.name,
          path=here,
          leaves=tuple(leaves),
          groups=tuple(_replica_groups(_attr(ins.attrs, 'replica_groups'))),
          pairs=tuple((p[0], p[1]) for p in pairs),
          executions=executions,
          branches=branches,
        )
      )
      continue
    if ins.opcode in _SKIPPED:
      continue
    if ins.opcode == 'while':
      trips = _trip_count(computations, comp, ins)
      inner = (
        None if trips is None or executions is None else executions * trips
      )
      label = f'{here}[x{"?" if trips is None else trips}]'
      for key in ('condition', 'body'):
        callee = _attr(ins.attrs, key)
        if callee in computations:
          _walk(computations, callee, inner, label, branches, out)
      continue
    if ins.opcode == 'conditional':
      listed = _attr(ins.attrs, 'branch_computations')
      if listed is not None:
        callees = _callee_names(listed)
      else:
        callees = [
          _attr(ins.attrs, 'true_computation'),
          _attr(ins.attrs, 'false_computation'),
        ]
      for b, callee in enumerate(callees):
        if callee in computations:
          _walk(
            computations,
            callee,
            executions,
            f'{here}[{b}]',
            (*branches, (here, b)),
            out,
          )
      continue
    for key in _CALLEES:
      value = _attr(ins.attrs, key)
      if value is None:
        continue
      for callee in _callee_names(value):
        if callee in computations:
          _walk(computations, callee, executions, here, branches, out)


def _module_devices(header: str) -> int:
  count = 1
  for key in ('num_partitions', 'replica_count'):
    match = re.search(key + r'=(\d+)', header)
    if match:
      count = max(count, int(match.group(1)))
  for axes in re.findall(r'sdy\.mesh<\[([^\]]*)\]', header):
    sizes = [int(s) for s in re.findall(r'=\s*(\d+)', axes)]
    count = max(count, math.prod(sizes))
  return count


def _price(raw: _Raw, num_devices: int) -> Collective:
  """Bytes each device sends and receives in one execution of `raw`."""
  payload = sum(_leaf_bytes(d, s) for d, s in raw.leaves)
  sent = [0.0] * num_devices
  received = [0.0] * num_devices
  if raw.kind == 'collective-permute':
    for source, target in raw.pairs:
      if source != target:
        sent[source] += payload
        received[target] += payload
    devices = {d for pair in raw.pairs for d in pair}
    group_size = len(devices)
    groups: tuple[tuple[int, ...], ...] = ()
  else:
    groups = raw.groups or (tuple(range(num_devices)),)
    group_size = max(len(g) for g in groups)
    for group in groups:
      n = len(group)
      if raw.kind == 'all-reduce':
        each = 2 * (n - 1) * payload / n
      elif raw.kind == 'all-gather':
        each = float((n - 1) * payload)
      else:  # reduce-scatter, all-to-all
        each = (n - 1) * payload / n
      for d in group:
        sent[d] += each
        received[d] += each
  return Collective(
    kind=raw.kind,
    name=raw.name,
    path=raw.path,
    dtypes=tuple(d for d, _ in raw.leaves),
    shapes=tuple(s for _, s in raw.leaves),
    payload_bytes=payload,
    replica_groups=groups,
    source_target_pairs=raw.pairs,
    group_size=group_size,
    executions=raw.executions,
    branches=raw.branches,
    sent=tuple(sent),
    received=tuple(received),
  )


def _hlo_text(lowered_or_text: Any) -> str:
  if isinstance(lowered_or_text, str):
    return lowered_or_text
  if isinstance(lowered_or_text, jax.stages.Compiled):
    raise ValueError(
      '`lowered_or_text` must be a lowered program (`jax.jit(f).lower(...)`) '
      'or HLO text, not a compiled one: compiled CPU HLO upcasts bfloat16 '
      'collectives and merges all-reduces, so its bytes are not the '
      "program's."
    )
  if isinstance(lowered_or_text, jax.stages.Lowered):
    return lowered_or_text.as_text(dialect='hlo')
  raise ValueError(
    '`lowered_or_text` must be a `jax.stages.Lowered` or HLO text, got '
    f'{type(lowered_or_text).__name__}.'
  )


def _parse(
  lowered_or_text: Any, num_devices: int | None
) -> tuple[list[Collective], int]:
  if num_devices is not None:
    v.check_int('num_devices', num_devices, minimum=1)
  computations, entry, header = _parse_module(_hlo_text(lowered_or_text))
  raws: list[_Raw] = []
  _walk(computations, entry, 1, '', (), raws)
  named = [d for r in raws for g in r.groups for d in g]
  named += [d for r in raws for p in r.pairs for d in p]
  needed = max(named, default=-1) + 1
  if num_devices is None:
    num_devices = max(needed, _module_devices(header))
  elif num_devices < needed:
    raise ValueError(
      f'`num_devices` must be at least {needed} (the program names device '
      f'{needed - 1}), got {num_devices}.'
    )
  return [_price(r, num_devices) for r in raws], num_devices


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
  return _parse(lowered_or_text, num_devices)[0]


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
  records, n = _parse(lowered, num_devices)
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
