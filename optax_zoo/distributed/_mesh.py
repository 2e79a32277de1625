"""A 1-D worker mesh and the placement of per-worker and replicated trees.

Per-worker values are stacked on a leading worker axis and sharded
``P(axis)`` over the mesh, one row per device; replicated values (a
state's scalar ``count``, hyperparameters) are ``P()``. The same calls work
in one process and under `jax.distributed` with several: every process
passes the same global host value and gets a global array of which it holds
its own devices' rows; `to_host` gathers it back on every process.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import jax
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from optax_zoo._src import compat

__all__ = [
  'init_on_workers',
  'place_on_mesh',
  'replicate_on_mesh',
  'shard_workers',
  'to_host',
  'worker_map',
  'worker_mesh',
  'worker_specs',
]


def _is_spec(x: Any) -> bool:
  return isinstance(x, P)


def _axis(mesh: Mesh, axis_name: Hashable | None) -> Hashable:
  if axis_name is None:
    if len(mesh.axis_names) != 1:
      raise ValueError(
        f'`axis_name` must be given for a mesh with axes {mesh.axis_names}.'
      )
    return mesh.axis_names[0]
  if axis_name not in mesh.axis_names:
    raise ValueError(
      f'`axis_name` {axis_name!r} is not an axis of the mesh {mesh.axis_names}.'
    )
  return axis_name


def worker_mesh(
  num_workers: int | None = None, axis_name: str = 'workers'
) -> Mesh:
  """A 1-D mesh of ``num_workers`` devices (all of them by default).

  Its axis has `AxisType.Auto`, so host values may also be passed to
  jitted functions over it. Under `jax.distributed` the devices are the
  global ones, every process's.

  Args:
    num_workers: devices to use, the first ones of `jax.devices()`; None
      for all.
    axis_name: the name of the worker axis.

  Returns:
    A `jax.sharding.Mesh` with the one axis ``axis_name``.
  """
  devices = jax.devices()
  n = len(devices) if num_workers is None else num_workers
  if (
    isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(devices)
  ):
    raise ValueError(
      f'`num_workers` must be an integer in [1, {len(devices)}] (the '
      f'devices there are), got {num_workers!r}.'
    )
  return compat.make_mesh((n,), (axis_name,), devices=devices[:n])


def place_on_mesh(tree: Any, mesh: Mesh, specs: Any) -> Any:
  """``tree`` as global arrays on ``mesh`` with the `PartitionSpec` tree
  (or prefix) ``specs``.

  Host values (numpy arrays, scalars, fully addressable arrays) must be
  the same global value on every process; each process places the shards
  of its own devices. Arrays already spread over processes are resharded.
  """

  def put(spec, sub):
    sharding = NamedSharding(mesh, spec)

    def one(x):
      if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.device_put(x, sharding)
      host = np.asarray(x)
      return jax.make_array_from_callback(
        host.shape, sharding, lambda index: host[index]
      )

    return jax.tree.map(one, sub)

  return jax.tree.map(put, specs, tree, is_leaf=_is_spec)


def shard_workers(
  tree: Any, mesh: Mesh, axis_name: Hashable | None = None
) -> Any:
  """Stacked per-worker values (leading axis of size ``num_workers``)
  sharded over the worker axis, ``P(axis_name)``: one row per device."""
  return place_on_mesh(tree, mesh, P(_axis(mesh, axis_name)))


def replicate_on_mesh(tree: Any, mesh: Mesh) -> Any:
  """``tree`` replicated on every device of ``mesh``, ``P()``."""
  return place_on_mesh(tree, mesh, P())


def worker_specs(tree: Any, axis_name: Hashable) -> Any:
  """Per-leaf specs of a per-worker tree: ``P()`` for scalar leaves,
  ``P(axis_name)`` for the others.

  An optimizer state's scalar leaves (``count``, injected
  hyperparameters) are the same on every worker and stay replicated; its
  array leaves (moments, ...) differ per worker and are stacked. A
  per-worker scalar that differs between workers needs an explicit spec.

  Args:
    tree: arrays or `jax.ShapeDtypeStruct` s, shaped as on one worker or
      as the global stacked tree (the scalars are the same leaves).
    axis_name: the worker axis.

  Returns:
    A tree of `PartitionSpec` s with the structure of ``tree``.
  """
  return jax.tree.map(lambda x: P() if not np.shape(x) else P(axis_name), tree)


def _is_per_worker(spec: P, axis: Hashable, which: str) -> bool:
  """Whether ``spec`` stacks its value per worker: the worker axis alone
  as its first entry (``P(axis)``, ``P(axis, None)``, ``P((axis,), 'x')``).

  The worker axis anywhere else (a later dimension, or shared with another
  mesh axis) would hand ``f`` a block that is not one worker's row.
  """
  entries = [e if isinstance(e, tuple) else (e,) for e in spec]
  stacked = bool(entries) and entries[0] == (axis,)
  if any(axis in e for e in entries[int(stacked) :]):
    raise ValueError(
      f'`{which}` must place the worker axis {axis!r} alone on the leading '
      f'dimension (P({axis!r}, ...)) or not at all, got {spec}.'
    )
  return stacked


def _map_specs(
  fn: Callable[[Any], Any], specs: Any, tree: Any, axis: Hashable, which: str
) -> Any:
  return jax.tree.map(
    lambda s, sub: (
      jax.tree.map(fn, sub) if _is_per_worker(s, axis, which) else sub
    ),
    specs,
    tree,
    is_leaf=_is_spec,
  )


def _one_row(x: jax.Array) -> jax.Array:
  if x.shape[:1] != (1,):
    raise ValueError(
      'A per-worker argument of `worker_map` must have a leading worker '
      'axis of size num_workers (one row per device), got a block of '
      f'shape {x.shape} on each device.'
    )
  return x[0]


def worker_map(
  f: Callable[..., Any],
  mesh: Mesh,
  in_specs: Any,
  out_specs: Any,
  *,
  axis_name: Hashable | None = None,
  check_vma: bool = True,
) -> Callable[..., Any]:
  """`jax.shard_map` of a per-worker ``f``, without the block axis.

  Arguments and results whose spec has the worker axis alone as its first
  entry (``P(axis_name)``, ``P(axis_name, None)``, ``P(axis_name,
  'model')``) are stacked per worker outside (leading axis
  ``num_workers``); `jax.shard_map` hands each device a block of one row,
  which this drops before calling ``f`` and restores on ``f``'s results,
  so ``f`` sees one worker's values. Specs without the worker axis pass
  through as in `jax.shard_map`; the worker axis anywhere else in a spec
  is refused.

  Args:
    f: the per-worker function.
    mesh: the worker mesh (`worker_mesh`).
    in_specs: `PartitionSpec` prefixes of the arguments, one per argument
      (a tuple), as for `jax.shard_map`; a single spec for one argument.
    out_specs: those of the results (see `worker_specs` for a state).
    axis_name: the worker axis (the mesh's only axis by default).
    check_vma: `jax.shard_map`'s varying-value checks.

  Returns:
    The mapped function (jit it).

  Raises:
    ValueError: naming ``in_specs`` or ``out_specs`` for a spec with the
      worker axis on a later dimension or shared with another mesh axis;
      at trace time, for a per-worker argument whose leading axis is not
      ``num_workers``.
  """
  axis = _axis(mesh, axis_name)
  # A PartitionSpec is itself a tuple: one spec means one argument.
  in_specs = (in_specs,) if _is_spec(in_specs) else tuple(in_specs)
  for which, specs in (('in_specs', in_specs), ('out_specs', out_specs)):
    for spec in jax.tree.leaves(specs, is_leaf=_is_spec):
      if _is_spec(spec):
        _is_per_worker(spec, axis, which)

  def local(*args):
    args = _map_specs(_one_row, in_specs, args, axis, 'in_specs')
    out = f(*args)
    return _map_specs(lambda x: x[None], out_specs, out, axis, 'out_specs')

  return jax.shard_map(
    local,
    mesh=mesh,
    in_specs=in_specs,
    out_specs=out_specs,
    check_vma=check_vma,
  )


def init_on_workers(
  tx: optax.GradientTransformation,
  params: Any,
  mesh: Mesh,
  axis_name: Hashable | None = None,
) -> Any:
  """``tx.init`` on every worker, as one global state.

  An optax state with a scalar ``count`` cannot be sharded over the worker
  axis, so the state's specs come from `worker_specs` of one worker's
  state: scalars replicated, the rest stacked like ``params``.

  Args:
    tx: the per-worker transform.
    params: stacked per-worker parameters (`shard_workers`).
    mesh: the worker mesh.
    axis_name: the worker axis (the mesh's only axis by default).

  Returns:
    The global state; its specs in a `worker_map` are
    ``worker_specs(state, axis_name)``.
  """
  axis = _axis(mesh, axis_name)
  one = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), params
  )
  specs = worker_specs(jax.eval_shape(tx.init, one), axis)
  return jax.jit(worker_map(tx.init, mesh, (P(axis),), specs, axis_name=axis))(
    params
  )


def to_host(tree: Any) -> Any:
  """``tree`` as numpy arrays, the whole global value on every process.

  Arrays spread over several processes are gathered
  (`jax.experimental.multihost_utils.process_allgather`); a collective,
  so under `jax.distributed` every process must call it.
  """

  def one(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(x)
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(one, tree)
