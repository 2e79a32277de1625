"""Version drift of the JAX APIs the package depends on, kept in one place.

jax >= 0.8.2: `jax.make_mesh` defaults to explicit axis types, `lax.pvary`
became ``lax.pcast(..., to='varying')``, and ``jax.vmap(..., axis_name=...)``
binds a named axis that collectives accept but `lax.pcast` refuses.
"""

from __future__ import annotations

import numbers
from collections.abc import Hashable, Sequence
from typing import Any

import jax
from jax import lax
from jax.sharding import AxisType, Mesh


def make_mesh(
  axis_shapes: Sequence[int],
  axis_names: Sequence[str],
  *,
  devices: Sequence[Any] | None = None,
) -> Mesh:
  """`jax.make_mesh` with `AxisType.Auto` axes (host inputs stay allowed)."""
  return jax.make_mesh(
    tuple(axis_shapes),
    tuple(axis_names),
    axis_types=(AxisType.Auto,) * len(axis_shapes),
    devices=devices,
  )


def _varying_axes(x: Any) -> frozenset:
  aval = jax.typeof(x)
  manual = getattr(aval, 'manual_axis_type', None)  # jax >= 0.10
  if manual is not None:
    return manual.varying
  return frozenset(getattr(aval, 'vma', ()))


def pcast_varying(tree: Any, axis_name: Hashable) -> Any:
  """Marks ``tree`` as varying over ``axis_name`` inside `jax.shard_map`.

  Only a manual mesh axis (`jax.shard_map`'s) tracks varying-ness: under
  ``jax.vmap(..., axis_name=...)`` `lax.pcast` is refused, so the tree
  comes back unchanged there, as do values already varying over the axis.
  """
  if axis_name not in jax.sharding.get_abstract_mesh().manual_axes:
    return tree
  return jax.tree.map(
    lambda x: (
      x
      if axis_name in _varying_axes(x)
      else lax.pcast(x, axis_name, to='varying')
    ),
    tree,
  )


def axis_size(axis_name: Hashable) -> int | None:
  """The size of the bound mapped axis ``axis_name``, or None if unbound."""
  try:
    return lax.axis_size(axis_name)
  except NameError:
    return None


def _is_axis_name(name: Any) -> bool:
  # JAX collectives read an int as a positional axis, not a name.
  if name is None or isinstance(name, (numbers.Integral, tuple)):
    return False
  try:
    hash(name)
  except TypeError:
    return False
  return name != ''


def check_axis_name(axis_name: Any) -> None:
  """Raises a `ValueError` unless ``axis_name`` names a mapped axis.

  Accepted is what JAX's collectives (`lax.psum`, `lax.ppermute`,
  `lax.axis_index`) take as a name: one hashable other than None, an
  integer (an int is a positional axis there) or the empty string, such as
  a mesh axis ``'workers'`` or any ``jax.vmap(..., axis_name=...)`` name;
  or a non-empty tuple of such names for several mesh axes at once.
  Whether the axis is bound is checked where the collective is traced.
  """
  names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
  if not names or not all(map(_is_axis_name, names)):
    raise ValueError(
      '`axis_name` must name the mapped worker axis: a hashable other than '
      "None, an int or '' (such as 'workers'), or a non-empty tuple of "
      f'them, got {axis_name!r}.'
    )
