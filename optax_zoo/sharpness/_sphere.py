"""SGD on the sphere at a fixed effective learning rate (Kodryan et al.)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_zoo._src import tree_utils
from optax_zoo._src import validation as v

__all__ = ['SphereSGDState', 'sphere_equalize_filters', 'sphere_sgd']


class SphereSGDState(NamedTuple):
  r"""State of `sphere_sgd`.

  Attributes:
    count: steps taken, int32.
    norm0: :math:`\|w_0\|`, the joint L2 norm of the masked parameters at
      ``init``, float32: the radius of the sphere they stay on.
    trace: the heavy-ball buffer (PyTorch's ``momentum_buffer``), or
      `optax.EmptyState` without momentum.
  """

  count: jax.Array
  norm0: jax.Array
  trace: Any


def _flags(mask: Any, params: Any) -> list[bool]:
  """One Python bool per leaf of ``params``; raises if none is selected."""
  flags = []
  for m in jax.tree.leaves(tree_utils.full_mask(mask, params)):
    if isinstance(m, jax.core.Tracer) or np.ndim(m) != 0:
      raise ValueError(
        '`mask` must give one Python bool per parameter leaf (it selects '
        f'whole leaves, from their structure, not their values), got {m!r}.'
      )
    flags.append(bool(m))
  if not any(flags):
    raise ValueError(
      '`mask` must select at least one parameter leaf to put on the sphere, '
      'it selects none.'
    )
  return flags


def _check_static_mask(mask: Any) -> None:
  """At construction, a mask given as a tree must select something."""
  if mask is None:
    raise ValueError(
      '`mask` must select the scale-invariant parameters (a tree of bools '
      'or a function of the params), got None.'
    )
  if callable(mask):
    return
  leaves = jax.tree.leaves(mask)
  if all(isinstance(m, (bool, np.bool_)) for m in leaves) and not any(leaves):
    raise ValueError(
      '`mask` must select at least one parameter leaf to put on the sphere, '
      f'it selects none: {mask!r}.'
    )


def _sq_norm(x: jax.Array, axes=None) -> jax.Array:
  x = x.astype(jnp.float32)
  return jnp.sum(x * x, axis=axes, keepdims=axes is not None)


def _filter_axes(x: jax.Array) -> tuple[int, ...]:
  """Axes a filter spans: all but the last (the output channel in Flax)."""
  return tuple(range(x.ndim - 1))


def _num_filters(x: jax.Array) -> int:
  return x.shape[-1] if x.ndim else 1


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
  # A zero norm only comes from a zero point (whose step is zero too); NaN
  # passes through (0 < NaN is False, NaN / 1 stays NaN via num or den).
  return num / jnp.where(den > 0, den, jnp.where(jnp.isnan(den), den, 1.0))


def sphere_equalize_filters(params: Any, mask: Any) -> Any:
  r"""The parameters with every masked filter at one common norm.

  What the reference's ``--fix_all_elr`` does to the model before training
  (``fix_si_pnorms``): each filter (output channel: the last axis of a Flax
  kernel) of the masked leaves is rescaled to
  :math:`r = \|w_0\| / \sqrt{F}`, ``F`` the number of masked filters, so
  the joint norm :math:`\|w_0\|` is unchanged. ``sphere_sgd(...,
  per_filter=True)`` started from these parameters then matches the
  reference from the first step; started from others, its first update
  does this rescaling after the first gradient step.

  Args:
    params: the parameters.
    mask: the masked leaves, as in `sphere_sgd`.

  Returns:
    The rescaled parameters (unmasked leaves unchanged).
  """
  flags = _flags(mask, params)
  leaves, treedef = jax.tree.flatten(params)
  picked = [p for p, f in zip(leaves, flags, strict=True) if f]
  total = sum(_sq_norm(p) for p in picked)
  radius = jnp.sqrt(total / sum(_num_filters(p) for p in picked))

  def fix(p, f):
    if not f:
      return p
    norms = jnp.sqrt(_sq_norm(p, _filter_axes(p)))
    return (p * _safe_div(radius, norms)).astype(p.dtype)

  return jax.tree.unflatten(
    treedef, [fix(p, f) for p, f in zip(leaves, flags, strict=True)]
  )


def sphere_sgd(
  *,
  effective_lr: optax.ScalarOrSchedule,
  mask: Any,
  learning_rate: optax.ScalarOrSchedule | None = None,
  momentum: jax.typing.ArrayLike | None = None,
  weight_decay: jax.typing.ArrayLike = 0.0,
  per_filter: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""SGD on the sphere at a fixed effective learning rate (Kodryan et al.).

  For scale-invariant parameters (convolutions without bias followed by a
  normalization without affine parameters) only the direction matters, and
  the effective learning rate of a plain SGD step is
  :math:`\eta / \|w\|^2`. This method fixes it: the masked parameters
  :math:`w` (all masked leaves as one vector) take an SGD step of size
  :math:`\eta = \tilde\eta\,\|w_0\|^2` and are projected back onto the
  sphere of their initial radius :math:`\|w_0\|`, kept in the state:

  .. math::
    d_t = g_t + \lambda w_t,\quad m_t = \mu m_{t-1} + d_t,\\
    w_{t+1} = \|w_0\|\,
      \frac{w_t - \tilde\eta_t \|w_0\|^2 m_t}
           {\|w_t - \tilde\eta_t \|w_0\|^2 m_t\|},

  (:math:`m_t = d_t` without momentum), as the reference's ``--fix_elr``:
  one PyTorch SGD step with ``lr = elr * ||w0||^2``, then ``fix_si_pnorm``.
  With ``per_filter=True`` (the reference's ``--fix_all_elr``) each filter
  (output channel) is its own sphere, all of the common radius
  :math:`r = \|w_0\| / \sqrt{F}` over the :math:`F` masked filters, with
  the same :math:`\eta = \tilde\eta \|w_0\|^2`; the reference first
  rescales every filter to :math:`r` (`sphere_equalize_filters`).

  Unmasked leaves (the last layer, anything not scale-invariant) take the
  plain SGD step :math:`w - \eta' m_t` with :math:`\eta'` the
  ``learning_rate``, by default :math:`\eta` itself as in the reference
  (where every parameter group gets ``lr`` unless ``--noninvlr`` is given);
  ``learning_rate=0.0`` freezes them (``--noninvlr 0``, the paper's fully
  scale-invariant setting with a frozen last layer).

  Returns the update :math:`w_{t+1} - w_t`, so it must be the last
  transform (a later scale or clip would move the weights off the
  sphere). Norms are taken in float32. A NaN gradient in any masked leaf
  makes every masked update NaN (the joint norm is NaN); it is not hidden.

  Args:
    effective_lr: :math:`\tilde\eta > 0`, a scalar or a schedule of the step
      (a schedule may start at 0, a warm-up), multiplying :math:`\eta` like
      the reference's ``--elr`` under its learning-rate schedules.
    mask: the scale-invariant leaves: a tree of bools with the structure of
      the params (or a prefix), or a function of the params returning one,
      as `optax.masked`; it must select at least one leaf. A function is
      called with the params at ``init`` and ``update`` and must return
      Python bools (from the structure, not the values). For a Flax NNX
      model of `optax_zoo.training`,
      `optax_zoo.training.scale_invariant_mask`.
    learning_rate: :math:`\eta' \ge 0` for the unmasked leaves, a scalar or
      a schedule; None (default): :math:`\eta = \tilde\eta_t \|w_0\|^2`.
    momentum: :math:`\mu \in [0, 1)`, PyTorch heavy ball (no dampening) on
      all leaves, or None (the paper's sphere runs). The reference warns
      that a fixed ELR with momentum is ambiguous: the buffer is not
      projected.
    weight_decay: :math:`\lambda \ge 0`, coupled L2 (PyTorch SGD's
      ``weight_decay``) on all leaves; 0 in the paper's sphere runs, where
      it only shortens the step before the projection.
    per_filter: each masked filter its own sphere (the reference's
      ``--fix_all_elr``): the filter of a leaf is its last axis (a Flax
      kernel's output channel, PyTorch's dim 0); a scalar leaf is one
      filter.

  Returns:
    An `optax.GradientTransformationExtraArgs`; extra update arguments are
    ignored. It needs ``params`` in ``update``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_zoo
    >>> params = {'kernel': jnp.array([[3.0, 0.0], [0.0, 4.0]]),
    ...           'head': jnp.array([1.0])}
    >>> tx = optax_zoo.sphere_sgd(
    ...   effective_lr=0.01, mask={'kernel': True, 'head': False},
    ...   learning_rate=0.0)
    >>> state = tx.init(params)
    >>> grads = {'kernel': jnp.ones((2, 2)), 'head': jnp.ones(1)}
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)
    >>> float(jnp.linalg.norm(params['kernel'])), params['head']
    (5.0, Array([1.], dtype=float32))

  References:
    Kodryan, Lobacheva, Nakhodnov & Vetrov, `Training Scale-Invariant Neural
    Networks on the Sphere Can Happen in Three Regimes
    <https://arxiv.org/abs/2209.03695>`_, NeurIPS 2022; code:
    tipt0p/three_regimes_on_the_sphere (``train.py``, ``training_utils.py``).

  Deviations:
    The reference computes ``lr = elr * ||w0||^2`` once on the host; here
    it is :math:`\tilde\eta_t \|w_0\|^2` from the state each step (the same
    number; a schedule of ``effective_lr`` plays the reference's epoch
    schedules, counted in steps). With ``per_filter`` the reference
    equalizes the filter norms before the first gradient; a transform
    cannot change the parameters before its first update, so here the
    first update's projection does it (call `sphere_equalize_filters`
    first to match exactly). Filters are the last axis (Flax layout), not
    the first (PyTorch).
  """
  if callable(effective_lr):
    v.check_learning_rate(effective_lr, 'effective_lr')
  else:
    v.check_positive('effective_lr', effective_lr)
  v.check_learning_rate(learning_rate, allow_none=True)
  if momentum is not None:
    v.check_in_range('momentum', momentum, 0.0, 1.0)
  v.check_weight_decay(weight_decay)
  if not isinstance(per_filter, (bool, np.bool_)):
    raise ValueError(f'`per_filter` must be a bool, got {per_filter!r}.')
  _check_static_mask(mask)

  def init_fn(params: Any) -> SphereSGDState:
    flags = _flags(mask, params)
    leaves = jax.tree.leaves(params)
    sq = sum(_sq_norm(p) for p, f in zip(leaves, flags, strict=True) if f)
    trace = (
      optax.EmptyState()
      if momentum is None
      else jax.tree.map(jnp.zeros_like, params)
    )
    return SphereSGDState(
      count=jnp.zeros([], jnp.int32),
      norm0=jnp.sqrt(jnp.asarray(sq, jnp.float32)),
      trace=trace,
    )

  def update_fn(updates, state, params=None, **extra):
    del extra
    if params is None:
      raise ValueError('sphere_sgd needs `params` in update().')
    flags = _flags(mask, params)
    count = state.count
    elr = effective_lr(count) if callable(effective_lr) else effective_lr
    step = jnp.asarray(elr, jnp.float32) * state.norm0**2
    if learning_rate is None:
      other = step
    elif callable(learning_rate):
      other = jnp.asarray(learning_rate(count), jnp.float32)
    else:
      other = jnp.asarray(learning_rate, jnp.float32)

    grads = jax.tree.map(
      lambda g, p: g.astype(jnp.float32) + weight_decay * p.astype(jnp.float32),
      updates,
      params,
    )
    if momentum is None:
      directions, trace = grads, state.trace
    else:
      trace = jax.tree.map(
        lambda m, d: (momentum * m.astype(jnp.float32) + d).astype(m.dtype),
        state.trace,
        grads,
      )
      directions = jax.tree.map(lambda m: m.astype(jnp.float32), trace)

    p_leaves, treedef = jax.tree.flatten(params)
    d_leaves = treedef.flatten_up_to(directions)
    moved = [
      p.astype(jnp.float32) - (step if f else other) * d
      for p, d, f in zip(p_leaves, d_leaves, flags, strict=True)
    ]
    on = [w for w, f in zip(moved, flags, strict=True) if f]
    if per_filter:
      radius = state.norm0 / math.sqrt(sum(_num_filters(w) for w in on))

      def project(w):
        return w * _safe_div(radius, jnp.sqrt(_sq_norm(w, _filter_axes(w))))
    else:
      scale = _safe_div(state.norm0, jnp.sqrt(sum(_sq_norm(w) for w in on)))

      def project(w):
        return w * scale

    new_updates = [
      ((project(w) if f else w) - p.astype(jnp.float32)).astype(p.dtype)
      for p, w, f in zip(p_leaves, moved, flags, strict=True)
    ]
    return jax.tree.unflatten(treedef, new_updates), SphereSGDState(
      count=optax.safe_increment(count), norm0=state.norm0, trace=trace
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
