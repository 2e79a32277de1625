"""Sharpness-aware minimization: SAM, ASAM and GSAM, with m-sharpness.

Each is a wrapper: one ``update`` per training step takes the clean batch
gradient, asks ``grad_fn`` (``optax_zoo._src.extra_args``) for the gradient at
the ascent point, and hands the sharpness-aware gradient to ``inner``. Model
state (BatchNorm statistics) is whatever the training loop keeps from its
clean pass: ``grad_fn`` reads model state and never writes it, which is
google-research/sam's choice.

m-sharpness, the quantity the SAM paper finds predictive, perturbs each
group of m examples with its own gradient. Two ways to get it:

* under a named axis (``axis_name``, inside `jax.shard_map` or
  ``jax.vmap(..., axis_name=...)``), each device gets its local gradient and
  a local ``grad_fn``, perturbs with them, and the sharpness-aware gradients
  are ``pmean``-ed afterwards: m is the per-device batch. This is
  google-research/sam's default; ``sync_perturbation=True`` perturbs every
  device with the averaged gradient instead (one more ``pmean``);
* on one device, ``num_splits=k`` cuts the batch into k consecutive parts of
  m = B / k examples and runs the same computation on each part: two
  gradients of B / k examples per part, the clean part gradient and the one
  at that part's ascent point, so 2 B examples' worth of gradients in all,
  as plain SAM (the loop's full-batch clean gradient is then not used).

Both can be combined (k parts per device).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_zoo._src import tree_utils
from optax_zoo._src import validation as v

__all__ = ['SAMState', 'asam', 'gsam', 'sam']

# An ascent rule: ``rule(g, grad_at, params, count) -> sharpness gradient``,
# where ``g`` is the clean gradient of one part (or of the batch) and
# ``grad_at(x)`` the gradient of the same part at other parameters ``x``.
_Rule = Callable[[Any, Callable[[Any], Any], Any, jax.Array], Any]


class SAMState(NamedTuple):
  """State of `sam`, `asam` and `gsam`.

  Attributes:
    count: steps taken, int32 (GSAM reads its rho schedule at it).
    inner_state: the inner optimizer's state.
  """

  count: jax.Array
  inner_state: optax.OptState


def _wide(x: jax.Array) -> jax.Array:
  """`x` in float32 at least (bfloat16 and float16 are widened)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _f32(tree: Any) -> Any:
  return jax.tree.map(_wide, tree)


def _sq_norm(tree: Any) -> jax.Array:
  """The squared global norm, accumulated in float32 at least."""
  return sum(jnp.sum(jnp.square(_wide(x))) for x in jax.tree.leaves(tree))


def _add(params: Any, delta: Any) -> Any:
  """``params + delta`` in float32 at least, in the params' dtype."""
  return jax.tree.map(
    lambda p, d: (_wide(p) + d).astype(p.dtype), params, delta
  )


def _is_zero(x: Any) -> bool:
  """Whether `x` is a concrete zero (a traced value is not)."""
  if isinstance(x, jax.core.Tracer):
    return False
  return np.ndim(x) == 0 and float(x) == 0.0


def _check_distribution(
  axis_name: Hashable | None, sync_perturbation: bool, num_splits: int
) -> None:
  v.check_int('num_splits', num_splits, minimum=1)
  if sync_perturbation and axis_name is None:
    raise ValueError(
      '`sync_perturbation` must be False without an `axis_name` (there is '
      'nothing to synchronize), got True.'
    )


def _sharpness_wrapper(
  name: str,
  inner: optax.GradientTransformation,
  rule: _Rule,
  *,
  axis_name: Hashable | None,
  sync_perturbation: bool,
  num_splits: int,
  skip: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """The wrapper `sam`, `asam` and `gsam` share (see the module docstring).

  ``skip``: a hyperparameter that gives the inner optimizer's step exactly
  when it is 0 (SAM's rho), or None.
  """
  inner = optax.with_extra_args_support(inner)

  def init_fn(params: Any) -> SAMState:
    return SAMState(
      count=jnp.zeros([], jnp.int32), inner_state=inner.init(params)
    )

  def mean(tree: Any) -> Any:
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)

  def perturbation_grad(g: Any) -> Any:
    return mean(g) if sync_perturbation else g

  def update_fn(updates, state, params=None, *, grad_fn=None, **extra):
    if params is None:
      raise ValueError(f'{name} needs `params` in update().')
    if grad_fn is None:
      raise ValueError(
        f'{name} needs `grad_fn` in update(): grad_fn(params, index=0, '
        'num_splits=1) -> the batch gradient at other parameters, as '
        'optax_zoo.training.supply_extra_args builds it (the training loop '
        'passes it every step).'
      )
    if skip is not None and _is_zero(skip):
      sharp = updates
    elif num_splits == 1:
      sharp = rule(perturbation_grad(updates), grad_fn, params, state.count)
    else:

      def add_part(i, total):
        g = perturbation_grad(grad_fn(params, i, num_splits))
        part = rule(g, lambda x: grad_fn(x, i, num_splits), params, state.count)
        return jax.tree.map(lambda t, s: t + s.astype(t.dtype), total, part)

      zeros = jax.tree.map(lambda u: jnp.zeros_like(_wide(u)), updates)
      total = jax.lax.fori_loop(0, num_splits, add_part, zeros)
      sharp = jax.tree.map(lambda t: t / num_splits, total)
    if skip is not None and not _is_zero(skip):
      # A traced rho: rho == 0 still gives the inner step to the bit.
      sharp = jax.tree.map(
        lambda u, s: jnp.where(skip == 0, u, s.astype(u.dtype)), updates, sharp
      )
    sharp = mean(jax.tree.map(lambda u, s: s.astype(u.dtype), updates, sharp))
    new_updates, inner_state = inner.update(
      sharp, state.inner_state, params, grad_fn=grad_fn, **extra
    )
    return new_updates, SAMState(
      count=optax.safe_increment(state.count), inner_state=inner_state
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sam(
  inner: optax.GradientTransformation,
  *,
  rho: jax.typing.ArrayLike = 0.05,
  eps: jax.typing.ArrayLike = 1e-12,
  axis_name: Hashable | None = None,
  sync_perturbation: bool = False,
  num_splits: int = 1,
) -> optax.GradientTransformationExtraArgs:
  r"""Sharpness-aware minimization (Foret et al., 2021), with m-sharpness.

  .. math::
    \epsilon_t = \rho\, \frac{g_t}{\|g_t\|_2 + \varepsilon},\qquad
    g^{SAM}_t = \nabla L_{\mathcal{B}}(\theta_t + \epsilon_t),

  and ``inner`` steps with :math:`g^{SAM}_t`. The clean gradient
  :math:`g_t` is the one ``update`` is given; the ascent gradient comes from
  the ``grad_fn`` extra argument on the same batch (weight decay written
  into the loss is part of both, as in google-research/sam). The norm is
  global over the tree and taken in float32; the ascent point is formed in
  float32 and cast to the params' dtype, and the gradient reaches ``inner``
  in the gradient's dtype. At a stationary point (:math:`g_t = 0`) the
  perturbation is 0 and the step is the inner step of a zero gradient.
  ``rho = 0`` gives exactly the inner optimizer (``grad_fn`` is not called
  when ``rho`` is a concrete 0). A non-finite gradient makes the ascent point
  and so the update non-finite.

  m-sharpness (see `optax_zoo.sharpness`): with ``axis_name`` each device
  perturbs with its local gradient and the SAM gradients are averaged over
  the axis (``update`` must get the local, not the averaged, gradient and a
  local ``grad_fn``; it returns the averaged step on every device. Inside
  `jax.shard_map`, make the parameters device-varying first,
  ``lax.pcast(params, axis_name, to='varying')``: JAX's gradient with
  respect to replicated parameters is already summed over the axis, which
  silently gives synced perturbations); with
  ``num_splits=k`` each of k parts of the batch is perturbed with its own
  gradient and the k SAM gradients are averaged, for the cost of 2 gradients
  of B / k examples per part (the clean gradient ``update`` is given is
  then not used: a non-finite value in it does not reach the step, while one
  in a part's gradient does).

  Put it first in a chain, and clipping or weight decay inside ``inner`` or
  the loss: the step uses the ascent gradient from ``grad_fn``, so a
  transform chained before ``sam`` (``optax.chain(clip, sam(...))``) only
  changes the clean gradient and is otherwise silently lost.

  Under `optax.MultiSteps`, the perturbation uses the gradient accumulated
  over the micro-batches but ``grad_fn`` is the last micro-batch's: the
  ascent gradient is taken on that micro-batch only.

  Cost: one extra forward-backward pass per step over the inner optimizer;
  no state beyond a step counter.

  Args:
    inner: the optimizer that steps with the SAM gradient.
    rho: :math:`\rho`, the radius of the ascent step, >= 0.
    eps: :math:`\varepsilon`, added to the gradient norm, >= 0.
    axis_name: the named mapped axis of the devices, or None.
    sync_perturbation: perturb with the gradient averaged over
      ``axis_name`` rather than each device's own (needs ``axis_name``).
    num_splits: k, parts of the batch perturbed separately, an integer
      >= 1 that divides the batch size (static: pass it in
      ``inject_hyperparams``'s ``static_args``).

  Returns:
    An `optax.GradientTransformationExtraArgs` whose ``update`` needs the
    ``grad_fn`` extra argument; all extra arguments are passed on to
    ``inner``.

  Example:
    >>> import jax, jax.numpy as jnp, optax_zoo
    >>> from optax_zoo.training import supply_extra_args
    >>> loss_fn = lambda p, x: (x - p) ** 2  # per-example losses
    >>> batch = jnp.array([1.0, 3.0])
    >>> tx = optax_zoo.sam(optax_zoo.sgd(0.1), rho=0.05)
    >>> params = jnp.array(0.0)
    >>> state = tx.init(params)
    >>> extra = supply_extra_args(['grad_fn'], loss_fn, params, batch)
    >>> grads = extra['grad_fn'](params)  # the clean gradient, -4
    >>> updates, state = tx.update(grads, state, params, **extra)
    >>> updates  # -0.1 * (the gradient at 0 - 0.05, -4.1)
    Array(0.41, dtype=float32)

  References:
    Foret et al., `Sharpness-Aware Minimization for Efficiently Improving
    Generalization <https://arxiv.org/abs/2010.01412>`_, 2021;
    google-research/sam (``sam_jax/training_utils/flax_training.py``).

  Deviations:
    ``eps`` in the normalization (the reference divides by the bare norm
    and returns NaN at a stationary point); the gradient clipping and the
    weight decay of the reference's training step belong to ``inner`` and
    the loss.
  """
  v.check_transform('inner', inner)
  v.check_non_negative('rho', rho)
  v.check_non_negative('eps', eps)
  _check_distribution(axis_name, sync_perturbation, num_splits)

  def rule(g, grad_at, params, count):
    del count
    scale = rho / (jnp.sqrt(_sq_norm(g)) + eps)
    return grad_at(_add(params, jax.tree.map(lambda x: scale * x, _f32(g))))

  return _sharpness_wrapper(
    'sam',
    inner,
    rule,
    axis_name=axis_name,
    sync_perturbation=sync_perturbation,
    num_splits=num_splits,
    skip=rho,
  )


def _default_asam_mask(params: Any) -> Any:
  return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def asam(
  inner: optax.GradientTransformation,
  *,
  rho: jax.typing.ArrayLike = 0.5,
  eta: jax.typing.ArrayLike = 0.01,
  eps: jax.typing.ArrayLike = 1e-16,
  mask: Any = None,
  axis_name: Hashable | None = None,
  sync_perturbation: bool = False,
  num_splits: int = 1,
) -> optax.GradientTransformationExtraArgs:
  r"""Adaptive SAM (Kwon et al., 2021): SAM in a parameter-scaled ball.

  .. math::
    T_w = |w| + \eta \ \text{(masked leaves)},\quad T_w = 1\ \text{(others)},
    \qquad
    \epsilon_t = \rho\, \frac{T_w^2\, g_t}{\|T_w\, g_t\|_2 + \varepsilon},
    \qquad g^{ASAM}_t = \nabla L_{\mathcal{B}}(\theta_t + \epsilon_t),

  elementwise products, one global norm. As SamsungLabs/ASAM, the scaling
  applies to weights only; the other leaves (biases by default) keep the
  plain SAM perturbation :math:`\rho g / \|T_w g\|` inside the same norm.
  Everything else (dtypes, m-sharpness, ``rho = 0``, stationary points) is
  as in `sam`.

  A sibling of `sam` rather than a flag: its defaults differ (``rho = 0.5``,
  as the reference, since the scaled ball is smaller) and ``eta`` and
  ``mask`` mean nothing for SAM.

  Args:
    inner: the optimizer that steps with the ASAM gradient.
    rho: :math:`\rho`, >= 0.
    eta: :math:`\eta`, added to :math:`|w|`, >= 0.
    eps: :math:`\varepsilon`, added to the norm, >= 0 (the reference's).
    mask: the leaves scaled by :math:`T_w`: a tree of bools like the params
      (or a prefix), or a callable of the params returning one; default:
      leaves with more than one dimension (kernels). A callable needs
      ``static_args=('mask',)`` under `optax.inject_hyperparams`.
    axis_name: as in `sam`.
    sync_perturbation: as in `sam`.
    num_splits: as in `sam`.

  Returns:
    An `optax.GradientTransformationExtraArgs` needing ``grad_fn``.

  Example:
    >>> import jax, jax.numpy as jnp, optax_zoo
    >>> loss = lambda p: 0.5 * jnp.sum(p['w'] ** 2)
    >>> grad_fn = lambda p, index=0, num_splits=1: jax.grad(loss)(p)
    >>> tx = optax_zoo.asam(optax_zoo.sgd(1.0), rho=0.5, eta=0.0)
    >>> params = {'w': jnp.array([[3.0, 4.0]])}
    >>> updates, _ = tx.update(
    ...   grad_fn(params), tx.init(params), params, grad_fn=grad_fn)
    >>> updates['w']  # -(w + 0.5 * w**3 / ||w**2||), T g = w**2
    Array([[-3.7353919, -5.743151 ]], dtype=float32)

  References:
    Kwon et al., `ASAM: Adaptive Sharpness-Aware Minimization for
    Scale-Invariant Learning of Deep Neural Networks
    <https://arxiv.org/abs/2102.11600>`_, 2021; SamsungLabs/ASAM
    (``asam.py``).

  Deviations:
    The reference scales parameters whose name contains ``weight``, which
    includes BatchNorm and LayerNorm scales; the default mask here takes
    leaves with ``ndim > 1`` (pass a mask to include the scales).
  """
  v.check_transform('inner', inner)
  v.check_non_negative('rho', rho)
  v.check_non_negative('eta', eta)
  v.check_non_negative('eps', eps)
  _check_distribution(axis_name, sync_perturbation, num_splits)
  if (
    mask is not None
    and not callable(mask)
    and not any(bool(m) for m in jax.tree.leaves(mask))
  ):
    raise ValueError('`mask` must select at least one leaf, got none.')

  def rule(g, grad_at, params, count):
    del count
    chosen = tree_utils.full_mask(
      _default_asam_mask if mask is None else mask, params
    )
    t_w = jax.tree.map(
      lambda p, m: jnp.abs(_wide(p)) + eta if m else None,
      params,
      chosen,
    )
    scale = lambda t, x: x if t is None else t * x
    tg = jax.tree.map(scale, t_w, _f32(g), is_leaf=lambda x: x is None)
    factor = rho / (jnp.sqrt(_sq_norm(tg)) + eps)
    e = jax.tree.map(
      lambda t, x: factor * scale(t, x), t_w, tg, is_leaf=lambda x: x is None
    )
    return grad_at(_add(params, e))

  return _sharpness_wrapper(
    'asam',
    inner,
    rule,
    axis_name=axis_name,
    sync_perturbation=sync_perturbation,
    num_splits=num_splits,
    skip=rho,
  )


def gsam(
  inner: optax.GradientTransformation,
  *,
  rho_max: jax.typing.ArrayLike = 0.05,
  rho_min: jax.typing.ArrayLike = 0.05,
  alpha: jax.typing.ArrayLike = 0.1,
  lr_schedule: optax.ScalarOrSchedule | None = None,
  lr_max: jax.typing.ArrayLike | None = None,
  lr_min: jax.typing.ArrayLike = 0.0,
  eps: jax.typing.ArrayLike = 1e-12,
  adaptive_perturbation: bool = False,
  minimize_fp: bool = True,
  axis_name: Hashable | None = None,
  sync_perturbation: bool = False,
  num_splits: int = 1,
) -> optax.GradientTransformationExtraArgs:
  r"""Surrogate-gap guided SAM (Zhuang et al., 2022), as big_vision's.

  .. math::
    \rho_t = \rho_{min} + (\rho_{max} - \rho_{min})
      \frac{\eta_t - \eta_{min}}{\eta_{max} - \eta_{min}},\quad
    g^{r}_t = \nabla L(\theta_t + \rho_t g_t / (\|g_t\| + \varepsilon)),

  then, with ``minimize_fp`` (the paper's GSAM), :math:`g_t` is split into
  its parts parallel and orthogonal to :math:`g^r_t`,
  :math:`g^\perp_t = g_t - \langle g_t, \hat g^r_t\rangle \hat g^r_t`, and
  the step direction is :math:`g^r_t - \alpha g^\perp_t`; without it,
  :math:`g^r_t` is split against :math:`g_t` and the direction is
  :math:`g_t + \alpha g^{r\perp}_t`. This is big_vision's ``gsam_gradient``
  step by step; ``rho_max = rho_min`` and ``alpha = 0`` is SAM. Under
  ``axis_name`` the whole computation is per device and the GSAM gradients
  are averaged afterwards, as big_vision's training step does.

  Args:
    inner: the optimizer that steps with the GSAM gradient.
    rho_max: :math:`\rho_{max}`, >= 0.
    rho_min: :math:`\rho_{min}`, in [0, rho_max].
    alpha: :math:`\alpha`, the weight of the surrogate-gap term, >= 0.
    lr_schedule: :math:`\eta_t`, the inner optimizer's learning rate (a
      schedule read at the step count, or a constant) that rho follows; None
      keeps :math:`\rho_t = \rho_{max}`.
    lr_max: :math:`\eta_{max}`, needed with ``lr_schedule`` (big_vision:
      the peak rate); ``lr_max == lr_min`` gives :math:`\rho_{max}`.
    lr_min: :math:`\eta_{min}`, in [0, lr_max].
    eps: :math:`\varepsilon`, >= 0.
    adaptive_perturbation: scale each coordinate of the perturbation by
      :math:`|\theta|`, as big_vision's flag.
    minimize_fp: the paper's decomposition (above).
    axis_name: as in `sam`.
    sync_perturbation: as in `sam`.
    num_splits: as in `sam` (the decomposition is per part).

  Returns:
    An `optax.GradientTransformationExtraArgs` needing ``grad_fn``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_zoo
    >>> loss = lambda p: jnp.sum(p ** 4)
    >>> grad_fn = lambda p, index=0, num_splits=1: jax.grad(loss)(p)
    >>> schedule = optax.linear_schedule(0.1, 0.0, 100)
    >>> tx = optax_zoo.gsam(
    ...   optax_zoo.sgd(schedule), rho_max=0.1, rho_min=0.01, alpha=0.3,
    ...   lr_schedule=schedule, lr_max=0.1)
    >>> params = jnp.array([1.0, 0.5])
    >>> updates, _ = tx.update(
    ...   grad_fn(params), tx.init(params), params, grad_fn=grad_fn)
    >>> updates.shape
    (2,)

  References:
    Zhuang et al., `Surrogate Gap Minimization Improves Sharpness-Aware
    Training <https://arxiv.org/abs/2203.08065>`_, 2022;
    google-research/big_vision
    (``big_vision/trainers/proj/gsam/gsam.py``).

  Deviations:
    ``eps`` is also added to :math:`\|g^r_t\|` (resp. :math:`\|g_t\|`) in
    the decomposition, where big_vision divides by the bare norm and
    returns NaN at a stationary point.
  """
  v.check_transform('inner', inner)
  v.check_non_negative('rho_max', rho_max)
  v.check_non_negative('rho_min', rho_min)
  v.check_non_negative('alpha', alpha)
  v.check_non_negative('eps', eps)
  v.check_learning_rate(lr_schedule, 'lr_schedule', allow_none=True)
  v.check_non_negative('lr_min', lr_min)
  _check_distribution(axis_name, sync_perturbation, num_splits)
  concrete = lambda x: x is not None and not isinstance(x, jax.core.Tracer)
  if concrete(rho_min) and concrete(rho_max) and rho_min > rho_max:
    raise ValueError(
      f'`rho_min` must be in [0, rho_max={rho_max}], got {rho_min!r}.'
    )
  if lr_schedule is not None:
    if lr_max is None:
      raise ValueError(
        '`lr_max` must be given with `lr_schedule` (the peak learning rate), '
        'got None.'
      )
    v.check_non_negative('lr_max', lr_max)
    if concrete(lr_max) and concrete(lr_min) and lr_min > lr_max:
      raise ValueError(
        f'`lr_min` must be in [0, lr_max={lr_max}], got {lr_min!r}.'
      )

  def rho_at(count):
    if lr_schedule is None:
      return jnp.asarray(rho_max, jnp.float32)
    lr = lr_schedule(count) if callable(lr_schedule) else lr_schedule
    span = jnp.asarray(lr_max, jnp.float32) - lr_min
    flat = span == 0
    frac = (lr - lr_min) / jnp.where(flat, 1.0, span)
    return jnp.where(flat, rho_max, rho_min + (rho_max - rho_min) * frac)

  def unit(tree):
    n = jnp.sqrt(_sq_norm(tree))
    return jax.tree.map(lambda x: x / (n + eps), tree)

  def rule(g, grad_at, params, count):
    g = _f32(g)
    step = rho_at(count) / (jnp.sqrt(_sq_norm(g)) + eps)
    e = jax.tree.map(
      lambda p, x: (
        jnp.abs(_wide(p)) * step * x if adaptive_perturbation else step * x
      ),
      params,
      g,
    )
    g_robust = _f32(grad_at(_add(params, e)))
    if minimize_fp:
      base, other, sign = g_robust, g, -1.0
    else:
      base, other, sign = g, g_robust, 1.0
    # The part of `other` orthogonal to `base`.
    u = unit(base)
    proj = sum(
      jnp.vdot(a, b)
      for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(other), strict=True)
    )
    return jax.tree.map(
      lambda b, o, uu: b + sign * alpha * (o - proj * uu), base, other, u
    )

  return _sharpness_wrapper(
    'gsam',
    inner,
    rule,
    axis_name=axis_name,
    sync_perturbation=sync_perturbation,
    num_splits=num_splits,
  )
