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
longest-processing-time rule: a layer costs :math:`n (d_A^2 + d_G^2)` to
build (``n`` rows of statistics; 1 when unknown) plus :math:`(d_A^3 +
d_G^3) / T_{inv}` to invert, and layers go, largest first, to the least
loaded worker (within 4/3 of the best balance, Graham 1969).

State: the factors and inverses differ between workers (each layer's are
its owner's), so a training loop keeps the state per worker (sharded over
the axis), not replicated. Memory: jax's SPMD state has one shape on every
worker, so each worker
stores every layer's factors and inverses; a non-owner's copies stay at
their initial values. The per-worker memory saving of the paper (only the
owned layers' factors) is therefore not realized in the state here: it
would need per-worker packing of the owned layers into one buffer, which
this version does not do. The compute (factor construction and inversion)
and the communication savings are realized.

Written for this package; the paper is the reference for the assignment
(its code is not public), kfac_pytorch's ``KFAC`` optimizer for the update
(KL clipping, momentum).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from optax_zoo import adaptive
from optax_zoo._src import compat
from optax_zoo._src import validation as v
from optax_zoo.adaptive import KFACState

__all__ = [
  'dkfac',
  'dp_kfac',
  'kfac_assignment',
  'kfac_wire_floats',
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


def kfac_assignment(
  params: Any,
  num_workers: int,
  *,
  rows: int | None = None,
  inverse_every: int = 10,
) -> dict[str, int]:
  """Assigns each K-FAC layer to one worker, balancing the cost model.

  Args:
    params: the parameters (their layers, `optax_zoo.kfac_layers`).
    num_workers: workers >= 1.
    rows: rows of statistics per step (batch times positions), or None.
    inverse_every: steps between inverse refreshes (amortizes inversion).

  Returns:
    ``{layer: worker}``; layers largest first to the least loaded worker.

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
  if rows is not None:
    v.check_int('rows', rows, minimum=1)
  costs = {
    name: _layer_cost(layer.dims, rows or 1, inverse_every)
    for name, layer in adaptive.kfac_layers(params).items()
  }
  loads = [0.0] * num_workers
  out = {}
  for name in sorted(costs, key=lambda n: (-costs[n], n)):
    w = min(range(num_workers), key=lambda i: (loads[i], i))
    out[name] = w
    loads[w] += costs[name]
  return out


def _layer_cost(dims, rows, inverse_every):
  d_a, d_g = dims
  return rows * (d_a**2 + d_g**2) + (d_a**3 + d_g**3) / inverse_every


def kfac_wire_floats(params: Any, variant: str) -> int:
  """Floats all-reduced per step: ``'dkfac'`` or ``'dp_kfac'``."""
  v.check_choice('variant', variant, ('dkfac', 'dp_kfac'))
  grad = sum(int(jnp.size(x)) for x in jax.tree.leaves(params))
  if variant == 'dp_kfac':
    return 2 * grad
  dims = [layer.dims for layer in adaptive.kfac_layers(params).values()]
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


def scale_by_dp_kfac(
  axis_name: Hashable,
  *,
  assignment: Mapping[str, int] | None = None,
  damping: jax.typing.ArrayLike = 1e-3,
  factor_decay: jax.typing.ArrayLike = 0.95,
  inverse_every: int = 10,
  inverse: str = 'pi',
  kl_clip: jax.typing.ArrayLike | None = None,
  learning_rate: optax.ScalarOrSchedule | None = None,
) -> optax.GradientTransformationExtraArgs:
  """DP-KFAC: each layer's factors built and inverted by one worker.

  Args:
    axis_name: the worker axis (bound by `jax.shard_map` or `jax.vmap`).
    assignment: ``{layer: worker}``; None assigns at the first update by
      `kfac_assignment` over the bound axis size, with the local rows of
      statistics in the cost model.
    damping, factor_decay, inverse_every, inverse, kl_clip, learning_rate:
      as `optax_zoo.scale_by_kfac`.

  Returns:
    A transformation whose ``update`` takes the local gradient and the
    local ``kfac_stats``; on a one-worker axis it is `scale_by_kfac`.

  Raises:
    ValueError: at construction for bad hyperparameters or an assignment
      to a negative worker; at ``update`` for an unbound axis, or an
      assignment naming a worker outside the axis or missing or unknown
      layers.

  References:
    Zhang, Shi, Wang, Li & Chu, 2022, "Scalable K-FAC Training for Deep
    Neural Networks with Distributed Preconditioning" (arXiv:2206.15143).
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

  def init_fn(params):
    return adaptive.kfac_init(params, inverse)

  def update_fn(updates, state, params=None, *, kfac_stats=None, **extra):
    del params, extra
    size = _bound_size(axis_name, 'scale_by_dp_kfac')
    updates = lax.pmean(updates, axis_name)
    layers = adaptive.kfac_layers(updates)
    if not layers:
      return updates, state._replace(count=optax.safe_increment(state.count))
    stats = adaptive.kfac_check_stats(kfac_stats, layers)
    owners = _owners(assignment, updates, stats, layers, size, inverse_every)
    me = lax.axis_index(axis_name)
    count = state.count
    refresh = count % inverse_every == 0
    factors, inverses = dict(state.factors), dict(state.inverses)
    for name in stats:
      mine = me == owners[name]

      def build(old, name=name):
        batch = adaptive.kfac_factors({name: stats[name]})
        return adaptive.kfac_running_factors(
          {name: old}, batch, count, factor_decay
        )[name]

      # The factors differ between workers (each owner's own): varying.
      old_f = compat.pcast_varying(state.factors[name], axis_name)
      old_i = compat.pcast_varying(state.inverses[name], axis_name)
      factors[name] = lax.cond(mine, build, lambda old: old, old_f)
      inverses[name] = lax.cond(
        mine & refresh,
        lambda f, name=name: adaptive.kfac_inverses(
          {name: f}, damping, inverse
        )[name],
        lambda f, old_i=old_i: old_i,
        factors[name],
      )

    def precondition(name, rows):
      return lax.cond(
        me == owners[name],
        lambda r: adaptive.kfac_precondition(
          r, inverses[name], damping, inverse
        ),
        jnp.zeros_like,
        compat.pcast_varying(rows, axis_name),
      )

    out = adaptive.kfac_precondition_updates(
      updates,
      {n: layers[n] for n in stats},
      precondition,
      kl_clip=kl_clip,
      learning_rate=_at(learning_rate, count),
      combine_fn=lambda pre: lax.psum(pre, axis_name),
    )
    return out, KFACState(optax.safe_increment(count), factors, inverses)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _owners(assignment, updates, stats, layers, size, inverse_every):
  if assignment is None:
    rows = max(int(s.a.shape[0] * s.a.shape[1]) for s in stats.values())
    return kfac_assignment(
      updates, size, rows=rows, inverse_every=inverse_every
    )
  unknown = sorted(set(assignment) - set(layers))
  missing = sorted(set(stats) - set(assignment))
  if unknown or missing:
    raise ValueError(
      f'`assignment` must name each layer with statistics once: unknown '
      f'{unknown}, missing {missing}.'
    )
  bad = {n: w for n, w in assignment.items() if w >= size}
  if bad:
    raise ValueError(
      f'`assignment` names workers outside the axis of size {size}: {bad}.'
    )
  return dict(assignment)


def _alias(
  scale, learning_rate, axis_name, momentum, weight_decay, kl_clip, **kw
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
    optax.add_decayed_weights(weight_decay),
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
) -> optax.GradientTransformationExtraArgs:
  """D-KFAC with `optax_zoo.kfac`'s KL clip, momentum and learning rate.

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
  momentum: jax.typing.ArrayLike = 0.9,
  damping: jax.typing.ArrayLike = 1e-3,
  factor_decay: jax.typing.ArrayLike = 0.95,
  inverse_every: int = 10,
  inverse: str = 'pi',
  kl_clip: jax.typing.ArrayLike | None = 1e-3,
  weight_decay: jax.typing.ArrayLike = 0.0,
) -> optax.GradientTransformationExtraArgs:
  """DP-KFAC with `optax_zoo.kfac`'s KL clip, momentum and learning rate.

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
    kl_clip,
    assignment=assignment,
    damping=damping,
    factor_decay=factor_decay,
    inverse_every=inverse_every,
    inverse=inverse,
  )
