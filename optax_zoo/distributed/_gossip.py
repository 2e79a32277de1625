"""D-PSGD gossip (Lian et al. 2017) and the all-reduce baseline (SSGD).

Both run per worker under a named mapped axis: inside `jax.shard_map` over
a worker mesh (`optax_zoo.worker_map`), or under ``jax.vmap(...,
axis_name=...)`` to simulate the workers on one device.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from optax_zoo._src import compat
from optax_zoo._src import validation as v
from optax_zoo.averaging import eval_params as _eval_params
from optax_zoo.distributed._topology import Exchange, Topology

__all__ = [
  'GossipState',
  'all_reduce_mean',
  'consensus_distance',
  'gossip',
  'worker_mean',
]


def _wide(x: jax.Array) -> jax.Array:
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _bound_size(axis_name: Hashable, fn: str) -> int:
  """The size of ``axis_name``, or a `ValueError` saying it is unbound."""
  size = compat.axis_size(axis_name)
  if size is None:
    raise ValueError(
      f'`axis_name` {axis_name!r} is not bound: call the update of {fn} '
      'inside jax.shard_map over a mesh with that axis '
      f'(optax_zoo.worker_map) or under jax.vmap(..., axis_name='
      f'{axis_name!r}).'
    )
  return size


def _stacked_leaves(
  params: Any, num_workers: int | None, fn: str
) -> list[jax.Array]:
  """The leaves of stacked per-worker ``params``, checked to share one
  leading worker axis (of size ``num_workers`` when given)."""
  leaves = jax.tree.leaves(params)
  sizes = {np.shape(p)[0] if np.ndim(p) else None for p in leaves}
  if num_workers is None:
    ok, expected = len(sizes) <= 1 and None not in sizes, 'the same size'
  else:
    ok, expected = sizes <= {num_workers}, f'size {num_workers} (the workers)'
  if not ok:
    raise ValueError(
      f'`params` of {fn} outside the map must be stacked per worker: every '
      f'leaf needs a leading worker axis of {expected}, got leaf shapes '
      f'{[np.shape(p) for p in leaves]}. Inside the map, pass the bound '
      '`axis_name`.'
    )
  return leaves


def worker_mean(
  params: Any,
  axis_name: Hashable | None = None,
  *,
  num_workers: int | None = None,
) -> Any:
  """The average model :math:`\\bar x = \\frac1n \\sum_i x_i`.

  Inside the map (``axis_name`` bound) it is the `lax.pmean` of each
  worker's parameters; outside, ``params`` carry a leading worker axis (as
  stacked by `jax.vmap` or `optax_zoo.shard_workers`) and the mean over it
  is broadcast back to every worker, so the result is shaped like
  ``params`` either way (take row 0 for one model). Accumulated in float32
  at least, returned in the params' dtype.

  Args:
    params: one worker's parameters inside the map, or the stacked
      per-worker parameters outside it.
    axis_name: the mapped axis; None (or an axis not bound here) means
      ``params`` are stacked.
    num_workers: the number of workers :math:`n`, if known (a
      `GossipState` knows its topology's): checked against the size of the
      bound axis, or against the leading axis of every stacked leaf.

  Returns:
    The average, shaped and typed like ``params``.

  Raises:
    ValueError: outside the map, naming ``params``, if a leaf is a scalar
      or the leaves' leading axes differ from each other or from
      ``num_workers``; inside it, naming ``axis_name``, if its size is not
      ``num_workers``.
  """
  size = None if axis_name is None else compat.axis_size(axis_name)
  if size is not None:
    if num_workers is not None and size != num_workers:
      raise ValueError(
        f'`axis_name` {axis_name!r} has size {size}, but the state was '
        f'built for {num_workers} workers.'
      )
    return jax.tree.map(
      lambda p: lax.pmean(_wide(p), axis_name).astype(p.dtype), params
    )
  _stacked_leaves(params, num_workers, 'worker_mean')
  return jax.tree.map(
    lambda p: jnp.broadcast_to(
      jnp.mean(_wide(p), axis=0, keepdims=True), p.shape
    ).astype(p.dtype),
    params,
  )


def consensus_distance(
  params: Any, axis_name: Hashable | None = None
) -> jax.Array:
  """How far the workers' models are apart.

  .. math::
    \\Xi = \\frac1n \\sum_{i=1}^n \\lVert x_i - \\bar x \\rVert_2^2,
    \\qquad \\bar x = \\frac1n \\sum_i x_i,

  the squared norms summed over every leaf of the tree (Lian et al. 2017's
  :math:`\\frac1n \\sum_i \\mathbb{E} \\lVert \\bar x - x_i \\rVert^2`,
  without the expectation), in float32 at least.

  Args:
    params: one worker's parameters inside the map (``axis_name`` bound),
      or, with ``axis_name=None``, the stacked per-worker parameters
      (leading worker axis).
    axis_name: the mapped worker axis, or None for stacked parameters.

  Returns:
    The scalar :math:`\\Xi` (the same on every worker inside the map).

  Raises:
    ValueError: if ``axis_name`` is given but not bound; with
      ``axis_name=None``, naming ``params``, if a leaf is a scalar or the
      leaves' leading axes differ.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> optax_zoo.consensus_distance({'w': jnp.array([[0.0], [2.0]])})
    Array(1., dtype=float32)
  """
  if axis_name is None:
    return sum(
      jnp.sum(jnp.square(x - jnp.mean(x, axis=0))) / x.shape[0]
      for x in map(_wide, _stacked_leaves(params, None, 'consensus_distance'))
    )
  _bound_size(axis_name, 'consensus_distance')
  local = sum(
    jnp.sum(jnp.square(x - lax.pmean(x, axis_name)))
    for x in map(_wide, jax.tree.leaves(params))
  )
  return lax.pmean(local, axis_name)


class GossipState(NamedTuple):
  """State of `gossip`.

  `optax_zoo.eval_params` finds it and returns `worker_mean` of the
  parameters (the average model, which Lian et al. 2017 evaluate): the
  pmean inside the map, the mean over the leading worker axis outside it.
  Each axis name and worker count gets its own subclass
  (`type(state).axis_name`, `type(state).num_workers`, the topology's
  :math:`n`), which is how the state knows what to average over: outside
  the map every leaf of ``params`` must have a leading axis of
  ``num_workers`` (a `ValueError` naming ``params`` otherwise).

  Attributes:
    count: gossip steps taken, int32, the same on every worker: it picks
      the step of a time-varying topology.
    inner_state: the inner optimizer's state.
  """

  count: jax.Array
  inner_state: optax.OptState
  axis_name = None
  num_workers = None

  def eval_params(self, params: Any) -> Any:
    """The worker average of the inner method's evaluated weights."""
    return worker_mean(
      _eval_params(self.inner_state, params),
      self.axis_name,
      num_workers=self.num_workers,
    )

  def __reduce__(self):
    return (_rebuild_state, (self.axis_name, self.num_workers, tuple(self)))


@functools.cache
def _state_type(axis_name: Hashable, num_workers: int) -> type[GossipState]:
  return type(
    'GossipState',
    (GossipState,),
    {
      '__slots__': (),
      'axis_name': axis_name,
      'num_workers': num_workers,
      '__module__': __name__,
    },
  )


def _rebuild_state(
  axis_name: Hashable, num_workers: int, fields: tuple[Any, ...]
) -> GossipState:
  return _state_type(axis_name, num_workers)(*fields)


def _mix_delta(
  params: Any, exchanges: tuple[Exchange, ...], axis_name: Hashable
) -> Any:
  """:math:`\\sum_j W_{ij} (x_j - x_i)`, one `lax.ppermute` per exchange.

  The differences, not :math:`\\sum_j W_{ij} x_j - x_i`: no cancellation of
  large parameters, and no change at all where a worker receives nothing.
  """
  x = compat.pcast_varying(params, axis_name)
  own = jax.tree.map(_wide, x)
  delta, index = None, None
  for e in exchanges:
    received = lax.ppermute(x, axis_name, e.perm)
    w = e.weight
    if w is None:
      if index is None:
        index = lax.axis_index(axis_name)
      w = jnp.asarray(e.weights, jnp.float32)[index]
    term = jax.tree.map(lambda r, o, w=w: w * (_wide(r) - o), received, own)
    delta = term if delta is None else jax.tree.map(jnp.add, delta, term)
  return delta


def gossip(
  topology: Topology,
  axis_name: Hashable,
  *,
  inner: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""D-PSGD gossip (Lian et al. 2017, algorithm 1).

  Each worker :math:`i` mixes its parameters with its neighbours' and steps
  with its own update, computed at its own parameters:

  .. math::
    x_i \leftarrow \sum_j W_{ij} x_j + u_i(x_i), \qquad
    u_i = -\gamma g_i(x_i) \text{ for SGD.}

  Place it *last*, after the optimizer that makes :math:`u_i`
  (``optax.chain(optax.sgd(lr), gossip(ring(8), 'workers'))``), or give
  that optimizer as ``inner`` (the same); it returns :math:`\sum_j W_{ij}
  x_j - x_i + u_i`, so `optax.apply_updates` gives the D-PSGD iterate.
  `optax_zoo.eval_params` gives the average model (`worker_mean`). A
  time-varying topology (`one_peer_exponential`) is switched by the
  state's replicated ``count`` with `lax.switch`. On an axis of size one
  (``topology`` over one worker) it returns ``inner``'s update unchanged.

  What crosses the wire: each step every worker sends its full parameters
  once per exchange of the step (`Topology.messages_per_step`, equal to
  the `Topology.degree` neighbours for the circulant graphs and the torus)
  and receives as many, in the parameters' dtype: ``messages_per_step *
  sum(p.size * p.dtype.itemsize)`` bytes out and in per worker, the same on
  the busiest worker, independent of :math:`n` (an all-reduce moves
  :math:`2 (n - 1) / n` copies, through every worker). The mixing is
  computed in float32 at least. A non-finite parameter or update reaches
  the worker's neighbours through the mixing; nothing is filtered.

  Args:
    topology: the `Topology`; ``topology.num_workers`` must equal the size
      of ``axis_name`` (checked at trace time).
    axis_name: the mapped worker axis, bound by `jax.shard_map` or
      ``jax.vmap(..., axis_name=...)`` when ``update`` is traced: any name
      JAX's collectives take (a hashable other than None, an int or
      ``''``), or a tuple of mesh axes used together as one worker axis.
    inner: the optimizer whose update each worker takes (run before the
      mixing, on the worker's own gradient and parameters), or None for
      the updates given (``gossip`` last in a chain).

  Returns:
    An `optax.GradientTransformationExtraArgs`; ``update`` needs
    ``params`` and passes extra arguments to ``inner``.

  Raises:
    ValueError: at construction for a ``topology`` that is not a `Topology`
      or a missing ``axis_name``; at trace time if ``axis_name`` is not
      bound or its size differs from ``topology.num_workers``.

  Example:
    Four workers simulated with `jax.vmap`, one scalar each:

    >>> import jax, jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.gossip(optax_zoo.ring(4), 'workers',
    ...                       inner=optax.sgd(0.1))
    >>> def step(x, g):
    ...   updates, _ = tx.update(g, tx.init(x), x)
    ...   return optax.apply_updates(x, updates)
    >>> x = jnp.array([0.0, 3.0, 6.0, 9.0])
    >>> jax.vmap(step, axis_name='workers')(x, jnp.ones(4))  # W x - 0.1 g
    Array([3.9, 2.9, 5.9, 4.9], dtype=float32)

    The same on a real mesh, one worker per device, with `jax.shard_map`
    (`optax_zoo.worker_map` drops the leading worker axis inside):

    >>> from jax.sharding import PartitionSpec as P
    >>> n = jax.device_count()
    >>> mesh = optax_zoo.worker_mesh(n, 'workers')
    >>> tx = optax_zoo.gossip(optax_zoo.ring(n), 'workers',
    ...                       inner=optax.sgd(0.1))
    >>> def local(x, g):
    ...   updates, _ = tx.update(g, tx.init(x), x)
    ...   return optax.apply_updates(x, updates)
    >>> run = jax.jit(optax_zoo.worker_map(
    ...   local, mesh, in_specs=(P('workers'), P('workers')),
    ...   out_specs=P('workers')))
    >>> x = optax_zoo.shard_workers(jnp.zeros((n, 2)), mesh)
    >>> optax_zoo.to_host(run(x, x + 1.0))[0]
    array([-0.1, -0.1], dtype=float32)

  References:
    Lian et al., `Can Decentralized Algorithms Outperform Centralized
    Algorithms? A Case Study for Decentralized Parallel Stochastic Gradient
    Descent <https://arxiv.org/abs/1705.09056>`_, NeurIPS 2017.

  Deviations: none in the update; the paper takes :math:`W` symmetric, and
  the directed exponential graphs of Ying et al. 2021 (doubly stochastic,
  not symmetric) are allowed here too.
  """
  if not isinstance(topology, Topology):
    raise ValueError(
      '`topology` must be an optax_zoo Topology (ring(n), torus(r, c), '
      'exponential(n), one_peer_exponential(n), complete(n) or '
      f'from_mixing_matrix(W)), got {topology!r}.'
    )
  compat.check_axis_name(axis_name)
  if inner is None:
    inner = optax.identity()
  v.check_transform('inner', inner)
  inner = optax.with_extra_args_support(inner)
  state_type = _state_type(axis_name, topology.num_workers)
  steps = [topology.exchanges(t) for t in range(topology.period)]

  def init_fn(params):
    return state_type(
      count=jnp.zeros([], jnp.int32), inner_state=inner.init(params)
    )

  def update_fn(updates, state, params=None, **extra):
    if params is None:
      raise ValueError('gossip mixes the parameters: pass `params`.')
    size = _bound_size(axis_name, 'gossip')
    if size != topology.num_workers:
      raise ValueError(
        f'`topology.num_workers` ({topology.num_workers}) must equal the '
        f'size of the mapped axis `axis_name` {axis_name!r} ({size}).'
      )
    updates, inner_state = inner.update(
      updates, state.inner_state, params, **extra
    )
    count = optax.safe_increment(state.count)
    new_state = state_type(count=count, inner_state=inner_state)
    if not any(steps):
      return updates, new_state
    branches = [
      lambda p, ex=ex: compat.pcast_varying(
        _mix_delta(p, ex, axis_name), axis_name
      )
      for ex in steps
    ]
    if len(branches) == 1:
      delta = branches[0](params)
    else:
      delta = lax.switch(state.count % len(branches), branches, params)
    updates = jax.tree.map(
      lambda u, d: (_wide(u) + d).astype(u.dtype), updates, delta
    )
    return updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def all_reduce_mean(
  axis_name: Hashable,
  *,
  inner: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Synchronous data-parallel SGD's gradient average (SSGD), the baseline.

  .. math::
    u \leftarrow \mathrm{inner}\Big(\frac1n \sum_{i=1}^n g_i\Big),

  with `lax.pmean` over ``axis_name``: every worker then holds the same
  update (and, from equal parameters, the same model). Place it *first*,
  before the optimizer (``optax.chain(all_reduce_mean('workers'),
  optax.sgd(lr))``), or give that optimizer as ``inner`` (the same). On an
  axis of size one it is exactly ``inner``.

  Give it each worker's own gradient. Inside `jax.shard_map`, `jax.grad`
  with respect to replicated (``P()``, invariant) parameters already sums
  the gradient over the axis, and the pmean of that sum is the sum: take
  the gradient at ``lax.pcast(params, axis_name, to='varying')`` instead.

  What crosses the wire: one all-reduce of the update in its dtype, which a
  ring all-reduce carries as :math:`2 (n - 1) / n` times
  ``sum(u.size * u.dtype.itemsize)`` bytes sent (and as many received) per
  worker per step, on every worker alike. A non-finite gradient on one
  worker makes every worker's update non-finite.

  Args:
    axis_name: the mapped worker axis, bound by `jax.shard_map` or
      ``jax.vmap(..., axis_name=...)`` when ``update`` is traced: any name
      JAX's collectives take (a hashable other than None, an int or
      ``''``), or a tuple of mesh axes used together as one worker axis.
    inner: the optimizer applied to the averaged gradient, or None for the
      average itself.

  Returns:
    An `optax.GradientTransformationExtraArgs` (extra arguments go to
    ``inner``).

  Raises:
    ValueError: at construction for a missing ``axis_name`` or a bad
      ``inner``; at trace time if ``axis_name`` is not bound.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.all_reduce_mean('workers', inner=optax.sgd(0.5))
    >>> def step(x, g):
    ...   updates, _ = tx.update(g, tx.init(x), x)
    ...   return optax.apply_updates(x, updates)
    >>> grads = jnp.array([1.0, 3.0])  # one per worker; their mean is 2
    >>> jax.vmap(step, axis_name='workers')(jnp.zeros(2), grads)
    Array([-1., -1.], dtype=float32)

  References:
    Chen et al., `Revisiting Distributed Synchronous SGD
    <https://arxiv.org/abs/1604.00981>`_, 2016.
  """
  compat.check_axis_name(axis_name)
  if inner is not None:
    v.check_transform('inner', inner)

  def update_fn(updates, state, params=None, **extra):
    del params, extra
    _bound_size(axis_name, 'all_reduce_mean')
    return lax.pmean(updates, axis_name), state

  mean = optax.GradientTransformationExtraArgs(
    lambda params: optax.EmptyState(), update_fn
  )
  return mean if inner is None else optax.chain(mean, inner)
