r"""Distributed K-FAC: D-KFAC and DP-KFAC (layers assigned to workers).

Both run inside `jax.shard_map` (or `jax.vmap` with ``axis_name``), one
program per worker, each worker holding its local batch: ``update`` takes
the worker's local gradient and its local ``kfac_stats``
(`optax_zoo.kfac_value_and_grad` on the local batch), and every worker ends
with the same update. They compose the single-device K-FAC of
`optax_zoo.scale_by_kfac` (its public building blocks).

- **D-KFAC** (`scale_by_dkfac`): every worker builds every layer's factors
  from its local statistics; the factors and the gradient are averaged
  across workers (all-reduce); every worker inverts every layer and
  preconditions. With equal local batches this is exactly single-device
  K-FAC on the concatenated batch. Per step on the wire: the gradient
  (:math:`P` floats) and every layer's factors (:math:`\sum_l d_{A,l}^2 +
  d_{G,l}^2` floats), each all-reduced.
- **DP-KFAC** (`scale_by_dp_kfac`, Zhang et al. 2022): layer :math:`l` is
  assigned to one worker :math:`w(l)` (`kfac_assignment`). Only
  :math:`w(l)` builds the layer's factors, from its OWN local statistics
  (no factor crosses the wire), refreshes their inverses and preconditions
  the layer's all-reduced gradient; the others skip that work at run time
  (`lax.cond` on the worker index) and contribute zeros, and the
  preconditioned gradients are summed across workers. Per step on the wire:
  the gradient and the preconditioned gradient, each all-reduced
  (:math:`2P` floats), and no factors. The factors come from one worker's
  batch: DP-KFAC equals D-KFAC exactly when every worker sees the same
  data, and approximates it otherwise (the factors of a batch of ``B``
  instead of ``W B`` examples).

The assignment (`kfac_assignment`) balances a cost model by the
longest-processing-time rule: a layer costs :math:`2 n (d_A^2 + d_G^2)` to
build (``n`` rows of statistics; 1 when unknown) plus :math:`(d_A^3 +
d_G^3) / T_{inv}` to invert, and layers go, largest first, to the least
loaded worker (within 4/3 of the best balance, Graham 1969).

State: DP-KFAC's factors and inverses differ between workers (each layer's
are its owner's), so a training loop keeps the state per worker (sharded
over the axis, `optax_zoo.init_on_workers`), not replicated. Memory: each
worker's DP-KFAC state packs only its own layers' factors and inverses into
one buffer per kind (static offsets per layer), as long as the largest
worker's share, so the factor memory per worker drops from D-KFAC's sum
over all layers to that share (`kfac_worker_costs`).

Written for this package; the paper is the reference for the assignment
(its code is not public), kfac_pytorch's ``KFAC`` optimizer for the update
(KL clipping, momentum).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from optax_zoo import adaptive
from optax_zoo._src import compat
from optax_zoo._src import validation as v
from optax_zoo.adaptive import KFACState

__all__ = [
  'DPKFACState',
  'KFACWorkerCosts',
  'dkfac',
  'dp_kfac',
  'kfac_assignment',
  'kfac_wire_floats',
  'kfac_worker_costs',
  'scale_by_dkfac',
  'scale_by_dp_kfac',
]


def _bound_size(axis_name: Hashable, fn: str) -> int:
  size = compat.axis_size(axis_name)
  if size is None:
    raise ValueError(
      f'`axis_name` {axis_name!r} is not bound: call the update of {fn} '
      'inside jax.shard_map over a mesh with that axis '
      f'(optax_zoo.worker_map) or under jax.vmap(..., axis_name='
      f'{axis_name!r}).'
    )
  return size


def _check_rows(rows):
  if rows is None:
    return
  if isinstance(rows, Mapping):
    for name, r in rows.items():
      v.check_int(f'rows[{name!r}]', r, minimum=1)
  else:
    v.check_int('rows', rows, minimum=1)


def kfac_assignment(
  params: Any,
  num_workers: int,
  *,
  rows: int | Mapping[str, int] | None = None,
  inverse_every: int = 10,
) -> dict[str, int]:
  r"""Assigns each K-FAC layer to one worker, balancing the cost model.

  Layer :math:`l` costs :math:`c_l = 2 n_l (d_{A,l}^2 + d_{G,l}^2) +
  (d_{A,l}^3 + d_{G,l}^3) / T_{inv}` per step (building its factors from
  :math:`n_l` rows, inverting them every :math:`T_{inv}` steps); layers go,
  largest cost first (ties by name), to the least loaded worker (ties to
  the lowest index): Graham's longest-processing-time rule, whose largest
  load is within :math:`4/3` of the best possible. Static Python.

  Args:
    params: the parameters (their layers, `optax_zoo.kfac_layers`).
    num_workers: workers >= 1.
    rows: rows of statistics per step (local batch times output
      positions), an int for every layer or ``{layer: rows}``; None counts
      1 (the inversion term dominates).
    inverse_every: steps between inverse refreshes (amortizes inversion).

  Returns:
    ``{layer: worker}`` for every K-FAC layer.

  Raises:
    ValueError: for ``num_workers < 1``, ``inverse_every < 1`` or
      ``rows < 1``.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> params = {'a': {'kernel': jnp.zeros((100, 10))},
    ...           'b': {'kernel': jnp.zeros((10, 10))},
    ...           'c': {'kernel': jnp.zeros((90, 10))}}
    >>> optax_zoo.kfac_assignment(params, 2)
    {'a': 0, 'c': 1, 'b': 1}
  """
  v.check_int('num_workers', num_workers, minimum=1)
  v.check_int('inverse_every', inverse_every, minimum=1)
  _check_rows(rows)
  layers = adaptive.kfac_layers(params)
  costs = {
    name: _build_flops(layer.dims, _rows_of(rows, name, layers))
    + _inverse_flops(layer.dims) / inverse_every
    for name, layer in layers.items()
  }
  loads = [0.0] * num_workers
  out = {}
  for name in sorted(costs, key=lambda n: (-costs[n], n)):
    w = min(range(num_workers), key=lambda i: (loads[i], i))
    out[name] = w
    loads[w] += costs[name]
  return out


def _rows_of(rows, name, layers):
  """Rows of statistics of layer ``name`` (None: 1, the inversion term
  dominates)."""
  if isinstance(rows, Mapping):
    if name not in rows:
      raise ValueError(
        f'`rows` has no entry for the layer {name!r} (layers: '
        f'{sorted(layers)}).'
      )
    return rows[name]
  return rows or 1


# The cost model (kfac_assignment, kfac_worker_costs): building a layer's
# factors from n rows, and one inversion of them (Cholesky and triangular
# solves, constant factors dropped).
def _build_flops(dims, rows):
  return 2 * rows * sum(d * d for d in dims)


def _inverse_flops(dims):
  return sum(d**3 for d in dims)


def kfac_wire_floats(params: Any, variant: str) -> int:
  r"""Floats each worker all-reduces per step, by the docstrings' formulas.

  ``'dkfac'``: the gradient (:math:`P` floats, every leaf of ``params``)
  and every layer's factors, :math:`P + \sum_l d_{A,l}^2 + d_{G,l}^2`;
  ``'dp_kfac'``: the gradient and the preconditioned layers, :math:`P +
  \sum_l d_{A,l} d_{G,l}`. A ring all-reduce sends :math:`2 (W - 1) / W`
  times their bytes per worker; `optax_zoo.wire_bytes` reads the bytes
  from the lowered program.
  """
  v.check_choice('variant', variant, ('dkfac', 'dp_kfac'))
  grad = sum(int(jnp.size(x)) for x in jax.tree.leaves(params))
  dims = [layer.dims for layer in adaptive.kfac_layers(params).values()]
  if variant == 'dp_kfac':
    return grad + sum(a * g for a, g in dims)
  return grad + sum(a * a + g * g for a, g in dims)


def _common(
  axis_name,
  damping,
  factor_decay,
  inverse_every,
  inverse,
  kl_clip,
  learning_rate,
):
  compat.check_axis_name(axis_name)
  v.check_positive('damping', damping)
  v.check_in_range('factor_decay', factor_decay, 0.0, 1.0)
  v.check_int('inverse_every', inverse_every, minimum=1)
  v.check_choice('inverse', inverse, adaptive.INVERSE_MODES)
  if kl_clip is not None:
    v.check_positive('kl_clip', kl_clip)
  if kl_clip is not None and learning_rate is None:
    raise ValueError('`kl_clip` needs `learning_rate` (the step size).')
  v.check_learning_rate(learning_rate, allow_none=True)


def _at(learning_rate, count):
  return learning_rate(count) if callable(learning_rate) else learning_rate


def scale_by_dkfac(
  axis_name: Hashable,
  *,
  damping: jax.typing.ArrayLike = 1e-3,
  factor_decay: jax.typing.ArrayLike = 0.95,
  inverse_every: int = 10,
  inverse: str = 'pi',
  kl_clip: jax.typing.ArrayLike | None = None,
  learning_rate: optax.ScalarOrSchedule | None = None,
) -> optax.GradientTransformationExtraArgs:
  """D-KFAC: factors and gradients all-reduced, every layer everywhere.

  Args:
    axis_name: the worker axis (bound by `jax.shard_map` or `jax.vmap`).
    damping, factor_decay, inverse_every, inverse, kl_clip, learning_rate:
      as `optax_zoo.scale_by_kfac`.

  Returns:
    A transformation whose ``update`` takes the local gradient and the
    local ``kfac_stats``; on a one-worker axis it is `scale_by_kfac`.

  Example:
    >>> import jax, jax.numpy as jnp, optax_zoo
    >>> from jax.sharding import PartitionSpec as P
    >>> params = {'lin': {'kernel': jnp.ones((3, 2))}}
    >>> tx = optax_zoo.scale_by_dkfac('workers', damping=1e-2)
    >>> mesh = jax.make_mesh(
    ...   (1,), ('workers',), axis_types=(jax.sharding.AxisType.Auto,))
    >>> def step(g, a, gout):
    ...   stats = {'lin': optax_zoo.KFACLayerStats(a, gout)}
    ...   u, _ = tx.update(g, tx.init(params), params, kfac_stats=stats)
    ...   return u
    >>> u = jax.shard_map(step, mesh=mesh, in_specs=(P(), P('workers'),
    ...   P('workers')), out_specs=P())(
    ...   params, jnp.ones((4, 1, 3)), jnp.ones((4, 1, 2)))
    >>> u['lin']['kernel'].shape
    (3, 2)
  """
  _common(
    axis_name,
    damping,
    factor_decay,
    inverse_every,
    inverse,
    kl_clip,
    learning_rate,
  )

  def init_fn(params):
    return adaptive.kfac_init(params, inverse)

  def update_fn(updates, state, params=None, *, kfac_stats=None, **extra):
    del params, extra
    _bound_size(axis_name, 'scale_by_dkfac')
    updates = lax.pmean(updates, axis_name)
    layers = adaptive.kfac_layers(updates)
    if not layers:
      return updates, state._replace(count=optax.safe_increment(state.count))
    stats = adaptive.kfac_check_stats(kfac_stats, layers)
    batch = lax.pmean(adaptive.kfac_factors(stats), axis_name)
    count = state.count
    factors = adaptive.kfac_running_factors(
      state.factors, batch, count, factor_decay
    )
    covered = {n: factors[n] for n in stats}
    old = {n: state.inverses[n] for n in stats}
    new_inv = lax.cond(
      count % inverse_every == 0,
      lambda f: adaptive.kfac_inverses(f, damping, inverse),
      lambda f: old,
      covered,
    )
    out = adaptive.kfac_precondition_updates(
      updates,
      {n: layers[n] for n in stats},
      lambda name, rows: adaptive.kfac_precondition(
        rows, new_inv[name], damping, inverse
      ),
      kl_clip=kl_clip,
      learning_rate=_at(learning_rate, count),
    )
    inverses = {**state.inverses, **new_inv}
    return out, KFACState(optax.safe_increment(count), factors, inverses)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class DPKFACState(NamedTuple):
  """State of `scale_by_dp_kfac` on one worker.

  Attributes:
    count: steps taken.
    factors: this worker's owned layers' running ``(A, G)``, flattened and
      packed into one float32 buffer (static offsets per layer,
      `kfac_worker_costs`); every worker's buffer has the length of the
      largest worker's share.
    inverses: the owned layers' inverses (``'pi'``: ``(A_inv, G_inv)``;
      ``'eigen'``: ``(Q_A, e_A, Q_G, e_G)``), packed the same way.
  """

  count: jax.Array
  factors: jax.Array
  inverses: jax.Array


class _Slot(NamedTuple):
  owner: int
  factors: int  # offset in the factor buffer
  inverses: int  # offset in the inverse buffer
  dims: tuple[int, int]


def _layout(layers, owners, inverse):
  """Static offsets of each layer in its owner's buffers; buffer lengths."""
  slots, f_used, i_used = {}, {}, {}
  for name in sorted(layers):
    w, dims = owners[name], layers[name].dims
    f, i = f_used.get(w, 0), i_used.get(w, 0)
    slots[name] = _Slot(w, f, i, dims)
    f_used[w] = f + dims[0] ** 2 + dims[1] ** 2
    i_used[w] = i + sum(math.prod(s) for s in _inverse_shapes(dims, inverse))
  return (
    slots,
    max(f_used.values(), default=0),
    max(i_used.values(), default=0),
  )


def _unpack(buf, offset, shapes):
  out = []
  for shape in shapes:
    size = math.prod(shape)
    out.append(lax.slice_in_dim(buf, offset, offset + size).reshape(shape))
    offset += size
  return tuple(out)


def _pack(buf, offset, parts):
  flat = jnp.concatenate([jnp.ravel(p) for p in parts]).astype(buf.dtype)
  return lax.dynamic_update_slice_in_dim(buf, flat, offset, axis=0)


def _inverse_shapes(dims, inverse):
  d_a, d_g = dims
  if inverse == 'pi':
    return ((d_a, d_a), (d_g, d_g))
  return ((d_a, d_a), (d_a,), (d_g, d_g), (d_g,))


def _check_assignment(assignment, layers, size):
  unknown = sorted(set(assignment) - set(layers))
  missing = sorted(set(layers) - set(assignment))
  if unknown or missing:
    raise ValueError(
      '`assignment` must name each K-FAC layer of the parameters once: '
      f'unknown {unknown}, missing {missing} (layers: {sorted(layers)}).'
    )
  if size is not None:
    bad = {n: w for n, w in assignment.items() if w >= size}
    if bad:
      raise ValueError(
        f'`assignment` names workers outside the axis of size {size} '
        f'(allowed 0..{size - 1}): {bad}.'
      )
  return dict(assignment)


def scale_by_dp_kfac(
  axis_name: Hashable,
  *,
  assignment: Mapping[str, int] | None = None,
  rows: int | Mapping[str, int] | None = None,
  damping: jax.typing.ArrayLike = 1e-3,
  factor_decay: jax.typing.ArrayLike = 0.95,
  inverse_every: int = 10,
  inverse: str = 'pi',
  kl_clip: jax.typing.ArrayLike | None = None,
  learning_rate: optax.ScalarOrSchedule | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""DP-KFAC: each layer's factors built, inverted and applied by one worker.

  Per step, on worker :math:`w` with local gradient :math:`g_w` and local
  statistics: the gradient is averaged, :math:`\bar g = \frac1W \sum_w g_w`
  (all-reduce); for each layer :math:`l` owned by :math:`w`
  (:math:`w(l) = w`), the worker folds its OWN batch's factors into the
  layer's running :math:`A_l, G_l`, refreshes their inverses every
  ``inverse_every`` steps and preconditions :math:`\bar g_l`; it contributes
  zeros for the layers it does not own, and the preconditioned gradients
  are summed across workers (all-reduce; KL clipping, when asked, applies
  to the sum, the same on every worker). A non-owner really skips the
  work: it is a `jax.lax.cond` on ``lax.axis_index(axis_name) == w(l)``,
  which inside `jax.shard_map` runs one branch per device (under
  `jax.vmap` the branches become a select and both run: a simulation).

  Memory: each worker's state holds only its own layers' factors and
  inverses, packed into one buffer per kind at static per-layer offsets
  (SPMD state has one shape on every worker, so the buffers have the
  length of the largest worker's share): factor memory per worker is
  :math:`\max_w \sum_{l: w(l) = w} 2 (d_{A,l}^2 + d_{G,l}^2)` floats for
  ``'pi'`` against D-KFAC's sum over all layers (`kfac_worker_costs`).
  The state differs between workers: keep it per worker (sharded over the
  axis, as `optax_zoo.init_on_workers` does).

  On the wire per step (read from the lowered program with
  `optax_zoo.wire_bytes`; `kfac_wire_floats`): the gradient all-reduce
  (:math:`P` floats) and the preconditioned-gradient all-reduce
  (:math:`\sum_l d_{A,l} d_{G,l}` floats, the layers' parameters), no
  factor; with 4-byte floats and a ring all-reduce, :math:`2 (W - 1) / W
  \cdot 4 (P + \sum_l d_{A,l} d_{G,l})` bytes sent per worker.

  The assignment (`kfac_assignment`, when ``assignment`` is None) is fixed
  at ``init`` from the parameters and the size of the bound axis: the
  longest-processing-time rule on the cost model :math:`2 n_l (d_{A,l}^2
  + d_{G,l}^2) + (d_{A,l}^3 + d_{G,l}^3) / T_{inv}` (``rows`` gives
  :math:`n_l`).

  Args:
    axis_name: the worker axis (bound by `jax.shard_map` or `jax.vmap`).
    assignment: ``{layer: worker}`` naming every K-FAC layer of the
      parameters once (`optax_zoo.kfac_layers`), or None for
      `kfac_assignment` over the axis bound at ``init``.
    rows: rows of statistics per step per layer (local batch times output
      positions), an int or ``{layer: rows}``, for the cost model when
      ``assignment`` is None; None counts 1 (inversion-dominated).
    damping, factor_decay, inverse_every, inverse, kl_clip, learning_rate:
      as `optax_zoo.scale_by_kfac`.

  Returns:
    A transformation whose ``update`` takes the local gradient and the
    local ``kfac_stats``, with a `DPKFACState`; on a one-worker axis its
    updates are `optax_zoo.scale_by_kfac`'s.

  Raises:
    ValueError: at construction for bad hyperparameters or an assignment
      to a negative worker; at ``init`` for an unbound axis without an
      ``assignment``, or an assignment naming an unknown layer, missing a
      layer or naming a worker outside the axis; at ``update`` for an
      unbound axis or a state built for another assignment.

  Example:
    >>> import jax, jax.numpy as jnp, optax_zoo
    >>> from jax.sharding import PartitionSpec as P
    >>> params = {'a': {'kernel': jnp.ones((3, 2))},
    ...           'b': {'kernel': jnp.ones((2, 2))}}
    >>> tx = optax_zoo.scale_by_dp_kfac('workers', damping=1e-2)
    >>> mesh = jax.make_mesh(
    ...   (1,), ('workers',), axis_types=(jax.sharding.AxisType.Auto,))
    >>> S = optax_zoo.KFACLayerStats
    >>> def step(g, x):
    ...   stats = {'a': S(x, x[..., :2]), 'b': S(x[..., :2], x[..., :2])}
    ...   return tx.update(g, tx.init(g), g, kfac_stats=stats)[0]
    >>> u = jax.shard_map(step, mesh=mesh, in_specs=(P(), P('workers')),
    ...   out_specs=P())(params, jnp.ones((4, 1, 3)))
    >>> u['a']['kernel'].shape
    (3, 2)

  References:
    Zhang, Shi, Wang, Li & Chu, 2022, "Scalable K-FAC Training for Deep
    Neural Networks with Distributed Preconditioning" (arXiv:2206.15143).

  Deviations:
    The factors of layer :math:`l` come from its owner's local batch only
    (the paper's design: no factor communication), so DP-KFAC equals
    D-KFAC exactly when every worker sees the same data and approximates
    it otherwise. The preconditioned gradients are exchanged by an
    all-reduce of the owners' rows and zeros elsewhere, where the paper
    broadcasts each layer from its owner (an all-reduce moves up to twice
    the bytes of the broadcasts in the ring convention).
  """
  _common(
    axis_name,
    damping,
    factor_decay,
    inverse_every,
    inverse,
    kl_clip,
    learning_rate,
  )
  if assignment is not None:
    for name, w in assignment.items():
      v.check_int(f'assignment[{name!r}]', w, minimum=0)
  _check_rows(rows)

  def plan(params, fn):
    layers = adaptive.kfac_layers(params)
    size = compat.axis_size(axis_name)
    if assignment is None:
      if size is None:
        raise ValueError(
          f'`axis_name` {axis_name!r} is not bound: call {fn} of '
          'scale_by_dp_kfac inside jax.shard_map (optax_zoo.worker_map, '
          'optax_zoo.init_on_workers) or jax.vmap(..., axis_name='
          f'{axis_name!r}), or give `assignment`.'
        )
      owners = kfac_assignment(
        params, size, rows=rows, inverse_every=inverse_every
      )
    else:
      owners = _check_assignment(assignment, layers, size)
    return layers, _layout(layers, owners, inverse)

  def init_fn(params):
    _, (_, f_len, i_len) = plan(params, 'init')
    # The inverses are first computed at step 0 (0 % inverse_every == 0).
    return DPKFACState(
      jnp.zeros([], jnp.int32),
      jnp.zeros((f_len,), jnp.float32),
      jnp.zeros((i_len,), jnp.float32),
    )

  def update_fn(updates, state, params=None, *, kfac_stats=None, **extra):
    del params, extra
    _bound_size(axis_name, 'scale_by_dp_kfac')
    updates = lax.pmean(updates, axis_name)
    layers, (slots, f_len, i_len) = plan(updates, 'update')
    if not layers:
      return updates, state._replace(count=optax.safe_increment(state.count))
    if state.factors.shape != (f_len,) or state.inverses.shape != (i_len,):
      raise ValueError(
        'The DP-KFAC state does not match the assignment: buffers of '
        f'{state.factors.shape} and {state.inverses.shape}, the layout '
        f'needs ({f_len},) and ({i_len},); was it built for another '
        'axis size or assignment?'
      )
    stats = adaptive.kfac_check_stats(kfac_stats, layers)
    me = lax.axis_index(axis_name)
    count = state.count
    refresh = count % inverse_every == 0
    # This worker's buffers differ from the others' (its own layers).
    bufs = list(
      compat.pcast_varying((state.factors, state.inverses), axis_name)
    )

    def precondition(name, grad_rows):
      slot = slots[name]
      d_a, d_g = slot.dims
      shapes = _inverse_shapes(slot.dims, inverse)

      def own(operands):
        fbuf, ibuf, m = operands
        old = _unpack(fbuf, slot.factors, ((d_a, d_a), (d_g, d_g)))
        batch = adaptive.kfac_factors({name: stats[name]})
        new = adaptive.kfac_running_factors(
          {name: old}, batch, count, factor_decay
        )[name]
        old_inv = _unpack(ibuf, slot.inverses, shapes)
        inv = lax.cond(
          refresh,
          lambda f: adaptive.kfac_inverses({name: f}, damping, inverse)[name],
          lambda f: old_inv,
          new,
        )
        pre = adaptive.kfac_precondition(m, inv, damping, inverse)
        return (
          _pack(fbuf, slot.factors, new),
          _pack(ibuf, slot.inverses, inv),
          pre,
        )

      def skip(operands):
        fbuf, ibuf, m = operands
        return fbuf, ibuf, jnp.zeros_like(m, jnp.float32)

      m = compat.pcast_varying(grad_rows.astype(jnp.float32), axis_name)
      bufs[0], bufs[1], pre = lax.cond(
        me == slot.owner, own, skip, (bufs[0], bufs[1], m)
      )
      return pre

    out = adaptive.kfac_precondition_updates(
      updates,
      {n: layers[n] for n in sorted(stats)},
      precondition,
      kl_clip=kl_clip,
      learning_rate=_at(learning_rate, count),
      combine_fn=lambda pre: lax.psum(pre, axis_name),
    )
    return out, DPKFACState(optax.safe_increment(count), bufs[0], bufs[1])

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class KFACWorkerCosts(NamedTuple):
  """Per-worker K-FAC costs of one step (`kfac_worker_costs`).

  Attributes:
    build_flops: per worker, FLOPs to build its factors from its rows of
      statistics, :math:`\\sum_l 2 n_l (d_{A,l}^2 + d_{G,l}^2)`.
    inverse_flops: per worker, FLOPs of one inverse refresh of its
      factors, :math:`\\sum_l d_{A,l}^3 + d_{G,l}^3` (Cholesky and the
      triangular solves, constant factors dropped).
    factor_floats: per worker, float32 entries its state holds for the
      factors and their inverses (DP-KFAC: the padded buffer length).
    assignment: ``{layer: worker}`` (DP-KFAC) or None (D-KFAC).
  """

  build_flops: tuple[float, ...]
  inverse_flops: tuple[float, ...]
  factor_floats: tuple[int, ...]
  assignment: dict[str, int] | None

  def flops(self, inverse_every: int = 1) -> tuple[float, ...]:
    """Per worker, build plus inversion amortized over ``inverse_every``."""
    return tuple(
      b + i / inverse_every
      for b, i in zip(self.build_flops, self.inverse_flops, strict=True)
    )


def kfac_worker_costs(
  params: Any,
  variant: str,
  num_workers: int,
  *,
  rows: int | Mapping[str, int],
  inverse_every: int = 10,
  inverse: str = 'pi',
  assignment: Mapping[str, int] | None = None,
) -> KFACWorkerCosts:
  """Each worker's factor compute and factor memory, D-KFAC or DP-KFAC.

  Computed from the layer dimensions (`optax_zoo.kfac_layers`) and the rows
  of statistics; the wire bytes are read from the program instead
  (`optax_zoo.wire_bytes`; `kfac_wire_floats` states them).

  Args:
    params: the parameters.
    variant: ``'dkfac'`` (every worker builds and inverts every layer) or
      ``'dp_kfac'`` (each worker its assigned layers).
    num_workers: workers >= 1.
    rows: rows of statistics per worker per step (local batch times output
      positions), an int or ``{layer: rows}``.
    inverse_every: for the assignment's cost model.
    inverse: ``'pi'`` or ``'eigen'`` (what the inverses store).
    assignment: DP-KFAC's ``{layer: worker}``; None for `kfac_assignment`.

  Returns:
    A `KFACWorkerCosts`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> params = {'a': {'kernel': jnp.zeros((100, 10))},
    ...           'b': {'kernel': jnp.zeros((10, 10))}}
    >>> c = optax_zoo.kfac_worker_costs(params, 'dp_kfac', 2, rows=32)
    >>> c.factor_floats  # worker 0 holds a, worker 1 b (padded to a's)
    (20200, 20200)
    >>> c.build_flops
    (646400.0, 12800.0)
  """
  v.check_choice('variant', variant, ('dkfac', 'dp_kfac'))
  v.check_int('num_workers', num_workers, minimum=1)
  v.check_choice('inverse', inverse, adaptive.INVERSE_MODES)
  _check_rows(rows)
  layers = adaptive.kfac_layers(params)
  if variant == 'dkfac':
    owners = None
    mine = {w: sorted(layers) for w in range(num_workers)}
    # Every layer on every worker: the layout of one worker owning all.
    _, f_len, i_len = _layout(layers, dict.fromkeys(layers, 0), inverse)
    factor_floats = (f_len + i_len,) * num_workers
  else:
    if assignment is None:
      owners = kfac_assignment(
        params, num_workers, rows=rows, inverse_every=inverse_every
      )
    else:
      owners = _check_assignment(assignment, layers, num_workers)
    mine = {
      w: sorted(n for n in owners if owners[n] == w) for w in range(num_workers)
    }
    _, f_len, i_len = _layout(layers, owners, inverse)
    factor_floats = (f_len + i_len,) * num_workers

  build = tuple(
    float(
      sum(
        _build_flops(layers[n].dims, _rows_of(rows, n, layers)) for n in mine[w]
      )
    )
    for w in range(num_workers)
  )
  inv = tuple(
    float(sum(_inverse_flops(layers[n].dims) for n in mine[w]))
    for w in range(num_workers)
  )
  return KFACWorkerCosts(build, inv, factor_floats, owners)


def _alias(
  scale, learning_rate, axis_name, momentum, weight_decay, mask, kl_clip, **kw
):
  v.check_learning_rate(learning_rate)
  v.check_in_range('momentum', momentum, 0.0, 1.0)
  v.check_weight_decay(weight_decay)
  return optax.chain(
    scale(
      axis_name,
      kl_clip=kl_clip,
      learning_rate=learning_rate if kl_clip is not None else None,
      **kw,
    ),
    optax.add_decayed_weights(weight_decay, mask),
    optax.trace(decay=momentum),
    optax.scale_by_learning_rate(learning_rate),
  )


def dkfac(
  learning_rate: optax.ScalarOrSchedule,
  axis_name: Hashable,
  *,
  momentum: jax.typing.ArrayLike = 0.9,
  damping: jax.typing.ArrayLike = 1e-3,
  factor_decay: jax.typing.ArrayLike = 0.95,
  inverse_every: int = 10,
  inverse: str = 'pi',
  kl_clip: jax.typing.ArrayLike | None = 1e-3,
  weight_decay: jax.typing.ArrayLike = 0.0,
  mask: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  """D-KFAC with `optax_zoo.kfac`'s KL clip, momentum and learning rate.

  ``mask`` selects the parameters ``weight_decay`` applies to, as in
  `optax_zoo.kfac`.

  Example:
    >>> import jax, jax.numpy as jnp, optax_zoo
    >>> params = {'lin': {'kernel': jnp.ones((3, 2))}}
    >>> tx = optax_zoo.dkfac(0.1, 'workers')
    >>> def step(g, a, gout):
    ...   stats = {'lin': optax_zoo.KFACLayerStats(a, gout)}
    ...   return tx.update(g, tx.init(params), params, kfac_stats=stats)[0]
    >>> g = {'lin': {'kernel': jnp.ones((2, 3, 2))}}  # two workers
    >>> u = jax.vmap(step, axis_name='workers')(
    ...   g, jnp.ones((2, 4, 1, 3)), jnp.ones((2, 4, 1, 2)))
    >>> u['lin']['kernel'].shape
    (2, 3, 2)
  """
  return _alias(
    scale_by_dkfac,
    learning_rate,
    axis_name,
    momentum,
    weight_decay,
    mask,
    kl_clip,
    damping=damping,
    factor_decay=factor_decay,
    inverse_every=inverse_every,
    inverse=inverse,
  )


def dp_kfac(
  learning_rate: optax.ScalarOrSchedule,
  axis_name: Hashable,
  *,
  assignment: Mapping[str, int] | None = None,
  rows: int | Mapping[str, int] | None = None,
  momentum: jax.typing.ArrayLike = 0.9,
  damping: jax.typing.ArrayLike = 1e-3,
  factor_decay: jax.typing.ArrayLike = 0.95,
  inverse_every: int = 10,
  inverse: str = 'pi',
  kl_clip: jax.typing.ArrayLike | None = 1e-3,
  weight_decay: jax.typing.ArrayLike = 0.0,
  mask: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  """DP-KFAC with `optax_zoo.kfac`'s KL clip, momentum and learning rate.

  ``mask`` selects the parameters ``weight_decay`` applies to, as in
  `optax_zoo.kfac`.

  Example:
    >>> import jax, jax.numpy as jnp, optax_zoo
    >>> params = {'a': {'kernel': jnp.ones((3, 2))},
    ...           'b': {'kernel': jnp.ones((2, 2))}}
    >>> tx = optax_zoo.dp_kfac(0.1, 'workers')
    >>> def step(g, stats):
    ...   return tx.update(g, tx.init(params), params, kfac_stats=stats)[0]
    >>> S = optax_zoo.KFACLayerStats
    >>> stats = {'a': S(jnp.ones((2, 4, 1, 3)), jnp.ones((2, 4, 1, 2))),
    ...          'b': S(jnp.ones((2, 4, 1, 2)), jnp.ones((2, 4, 1, 2)))}
    >>> g = jax.tree.map(lambda p: jnp.stack([p, p]), params)
    >>> u = jax.vmap(step, axis_name='workers')(g, stats)
    >>> bool(jnp.allclose(u['a']['kernel'][0], u['a']['kernel'][1]))
    True
  """
  return _alias(
    scale_by_dp_kfac,
    learning_rate,
    axis_name,
    momentum,
    weight_decay,
    mask,
    kl_clip,
    assignment=assignment,
    rows=rows,
    damping=damping,
    factor_decay=factor_decay,
    inverse_every=inverse_every,
    inverse=inverse,
  )
