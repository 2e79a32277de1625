"""Parsing the collectives of an HLO module and pricing them (not public API).

`optax_zoo.distributed._comm` (`collective_bytes`, `wire_bytes`) is the
public face; its module docstring states the cost conventions applied here.
Written here: a small parser of HLO text (instructions, called
computations, static loop trip counts) for the collective instructions.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import jax
import numpy as np

from optax_zoo._src import validation as v

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


def parse_collectives(
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
