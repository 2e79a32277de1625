"""The method registry: one `MethodInfo` per method, `create` and `methods`.

Every method in optax_zoo has one entry, declared next to its code in the
``ENTRIES`` tuple of its subpackage's ``_registry.py``; `SUBPACKAGES` names
the subpackages collected here, in order. The entry is all a method needs to
join the common test suite (`tests/common_test.py`), the `optax-zoo list`
table, the README's method table and `optax-zoo bench`. `register` adds a
method from outside the package (an experiment's or a test's) for the rest of
the process.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

import optax

from optax_zoo._src.method_info import CATEGORIES, MethodInfo, Paper

__all__ = [
  'CATEGORIES',
  'MethodInfo',
  'Paper',
  'create',
  'get',
  'markdown_table',
  'methods',
  'register',
  'unregister',
]

# The subpackages with methods; each has ``_registry.ENTRIES``.
SUBPACKAGES = (
  'adaptive',
  'averaging',
  'sharpness',
  'privacy',
  'sparsity',
  'quantization',
  'distributed',
)

_REGISTRY: dict[str, MethodInfo] = {}


def register(info: MethodInfo) -> MethodInfo:
  """Adds ``info`` to the registry; returns it.

  Raises:
    ValueError: if ``info`` is not a `MethodInfo` or its name is taken.
  """
  if not isinstance(info, MethodInfo):
    raise ValueError(f'`info` must be a MethodInfo, got {type(info).__name__}.')
  if info.name in _REGISTRY:
    raise ValueError(
      f'`info.name` must be new, got {info.name!r}, which is registered.'
    )
  _REGISTRY[info.name] = info
  return info


def unregister(name: str) -> MethodInfo:
  """Removes the method ``name`` and returns its entry (see `get`)."""
  info = get(name)
  del _REGISTRY[name]
  return info


for _sub in SUBPACKAGES:
  for _info in importlib.import_module(f'optax_zoo.{_sub}._registry').ENTRIES:
    register(_info)
del _sub, _info


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
    '| reference | worst parity deviation | known deviations |',
    '|---|---|---|---|---|---|---|---|',
  ]
  for m in infos:
    paper = f'{m.paper.authors} {m.paper.year}'
    if m.paper.arxiv:
      paper = f'[{paper}](https://arxiv.org/abs/{m.paper.arxiv})'
    rows.append(
      f'| `{m.name}` | {m.category} | {paper} | {m.state_copies:g} '
      f'| {"yes" if m.has_eval_params else ""} | {m.reference} '
      f'| {m.parity} | {m.deviations} |'
    )
  return '\n'.join(rows)
