r"""Sums of per-example clipped gradients, the input of a DP aggregator.

What comes from where:

* `jax_privacy.clipping.clipped_fun` (the core of its ``clipped_grad``,
  called directly so that each example's gradient passes our guard and
  returns per-example flags) does the per-example work of the vmap path:
  ``jax.vmap`` of our per-example gradient, microbatching through
  `optax.microbatching.micro_vmap` (a ``lax.scan`` over microbatches that
  skips trailing all-padding microbatches), ``is_padding_example`` (a padded
  row is replaced by an exact zero with a ``select``, so even a NaN there
  contributes nothing) and the clip itself (`jax_privacy.clipping.clip_pytree`).
* Written here, because jax-privacy lacks it: a whole-gradient NaN/inf guard
  that zeroes a non-finite per-example gradient and counts it (jax-privacy's
  ``nan_safe`` zeroes the offending *entries* only and keeps the rest of the
  gradient, silently); the counts of clipped and neutralized examples;
  per-layer clipping; the Flax NNX face (`nnx.split` of the model into
  parameters and the rest, gradients shaped like ``nnx.state(model,
  nnx.Param)``); the BatchNorm guard; and ghost clipping (`_ghost.py`).

Sensitivity: the clipped sum has L2 sensitivity ``clip_norm`` under
add/remove-one (and under zeroing one example by the padding mask) and
``2 * clip_norm`` under replace-one, as `jax_privacy.clipping.clipped_grad`
states; per-layer clipping keeps the same global bound (see `per_layer`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from optax_zoo._src import validation as v

__all__ = [
  'ClipStats',
  'augmentation_multiplicity',
  'check_private_model',
  'clipped_grad_sum',
  'layer_bounds',
  'model_clipped_grad_sum',
]

# Layers that mix examples of a batch: per-example clipping would bound
# nothing, so a private model containing one is refused.
_MIXING_LAYERS = (nnx.BatchNorm,)


class ClipStats(NamedTuple):
  """Counts from one clipped sum (over real, non-padded examples).

  These counts are *not* privatized: log them, do not release them.

  Attributes:
    num_examples: real (unmasked) examples in the batch, int32.
    num_clipped: real examples whose gradient norm exceeded its bound and
      was scaled down (any layer, for per-layer clipping), int32.
    num_nonfinite: real examples whose gradient had a NaN or an inf and was
      replaced by zero, int32.
  """

  num_examples: jax.Array
  num_clipped: jax.Array
  num_nonfinite: jax.Array


def _all_finite(tree: Any) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.asarray(True)
  return jnp.stack([jnp.isfinite(x).all() for x in leaves]).all()


def layer_bounds(params: Any, clip_norm: float) -> Any:
  """The per-layer bounds of `clipped_grad_sum(..., per_layer=True)`.

  Each of the ``L`` leaves of ``params`` gets ``clip_norm / sqrt(L)``, so a
  gradient clipped leaf by leaf has global norm at most ``clip_norm`` and the
  sensitivity is that of global clipping.
  """
  n = len(jax.tree.leaves(params))
  return jax.tree.map(lambda _: clip_norm / math.sqrt(max(n, 1)), params)


def _check_common(clip_norm, microbatch_size, batch, mask):
  v.check_positive('clip_norm', clip_norm)
  sizes = {x.shape[0] for x in jax.tree.leaves(batch)}
  if len(sizes) != 1:
    raise ValueError(
      f'`batch` leaves must share one leading batch size, got {sizes}.'
    )
  (size,) = sizes
  if mask is not None and tuple(jnp.shape(mask)) != (size,):
    raise ValueError(
      f'`mask` must have shape ({size},), got {tuple(jnp.shape(mask))}.'
    )
  if microbatch_size is not None:
    v.check_int('microbatch_size', microbatch_size, minimum=1)
    if size % microbatch_size:
      raise ValueError(
        f'`microbatch_size` must divide the batch size {size}, got '
        f'{microbatch_size}.'
      )
  return size


def clipped_grad_sum(
  loss_fn: Callable[..., jax.Array],
  params: Any,
  batch: Any,
  *,
  clip_norm: float,
  mask: jax.Array | None = None,
  microbatch_size: int | None = None,
  per_layer: bool = False,
  keep_batch_dim: bool = False,
  key: jax.Array | None = None,
) -> tuple[Any, ClipStats]:
  r"""Sum over a batch of per-example gradients, each clipped to a norm.

  .. math::
    \textstyle S = \sum_i m_i\, \mathrm{clip}_C\big(\nabla_\theta
    \ell(\theta, x_i)\big), \quad
    \mathrm{clip}_C(g) = g \min\big(1, C / \|g\|_2\big),

  with :math:`m_i \in \{0, 1\}` the padding mask, and a per-example gradient
  with a NaN or an inf replaced by zero (and counted). The DP aggregator adds
  noise of scale ``noise_multiplier * clip_norm`` to ``S`` and divides by the
  expected batch size.

  Args:
    loss_fn: ``loss_fn(params, example) -> scalar``, the loss of ONE example
      (an entry of ``batch`` without its leading axis, or with a leading axis
      of size 1 if ``keep_batch_dim``); ``loss_fn(params, example, key)``
      when ``key`` is given.
    params: the parameters to differentiate (any pytree).
    batch: a pytree of arrays sharing a leading batch axis.
    clip_norm: the bound ``C > 0`` on each per-example gradient's L2 norm.
    mask: optional bool ``(batch,)``, True for real examples; False rows (the
      padding of a fixed-size Poisson batch) contribute exactly zero.
    microbatch_size: process the batch ``microbatch_size`` examples at a
      time (a ``lax.scan`` over vmapped chunks) to bound memory; must divide
      the batch size. The result equals the unbatched one.
    per_layer: clip each leaf of the gradient to its own bound
      ``C / sqrt(L)`` (``L`` leaves, `layer_bounds`) instead of the whole
      gradient to ``C``; the global norm stays ``<= C``.
    keep_batch_dim: pass each example with a leading axis of size 1 (for
      losses written for batches).
    key: optional PRNG key, split into one key per example.

  Returns:
    ``(grad_sum, stats)``: the clipped sum shaped like ``params`` and a
    `ClipStats`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.privacy import clipped_grad_sum
    >>> loss = lambda w, ex: 0.5 * jnp.sum((ex['x'] @ w - ex['y']) ** 2)
    >>> batch = {'x': jnp.eye(3), 'y': jnp.array([10.0, 0.1, 0.0])}
    >>> g, stats = jax.jit(lambda w, b: clipped_grad_sum(
    ...     loss, w, b, clip_norm=1.0))(jnp.zeros(3), batch)
    >>> g
    Array([-1. , -0.1,  0. ], dtype=float32)
    >>> int(stats.num_clipped)
    1

  References:
    Abadi et al., 2016, "Deep Learning with Differential Privacy".

  Deviations:
    jax-privacy's ``nan_safe`` zeroes only the non-finite *entries* of a
    per-example gradient; here the whole per-example gradient is zeroed and
    counted in ``stats.num_nonfinite`` (its remaining entries are as
    suspect as the broken ones), so jax-privacy's pass runs with
    ``nan_safe=False`` (the guard has already made every value finite).

  Performance: on CPU, `jax_privacy.clipping.clipped_fun` without
  microbatching is slow for wide layers (MLP 40-256-256-10, batch 256:
  ~300-500 ms a step against ~65 ms with ``microbatch_size=32``, measured
  here); pass a ``microbatch_size``, or use ghost clipping
  (`model_clipped_grad_sum(..., method='auto')`, ~2 ms on that MLP).
  """
  from jax_privacy import clipping as jp_clipping  # lazy: see _accounting

  size = _check_common(clip_norm, microbatch_size, batch, mask)
  bounds = layer_bounds(params, clip_norm) if per_layer else None

  def grad_fn(p, example, *rest):
    grad = jax.grad(loss_fn)(p, example, *rest)
    # The norm before any guard: NaN or inf exactly when an entry is.
    norm = optax.tree.norm(grad)
    # Finite norm <=> every entry finite (an overflowing norm also zeroes).
    ok = jnp.isfinite(norm)
    grad = jax.tree.map(lambda x: jnp.where(ok, x, jnp.zeros_like(x)), grad)
    if bounds is None:
      return grad, (norm, norm > clip_norm)
    norms = jax.tree.map(optax.tree.norm, grad)
    over = jnp.stack(
      [
        n > b
        for n, b in zip(
          jax.tree.leaves(norms), jax.tree.leaves(bounds), strict=True
        )
      ]
    ).any()
    grad = jax.tree.map(
      lambda g, b: jp_clipping.clip_pytree(g, b, nan_safe=False)[0],
      grad,
      bounds,
    )
    return grad, (norm, over)

  # `clipped_fun` vmaps `grad_fn` (in microbatches under a scan), clips each
  # value to `clip_norm` (a no-op up to rounding after a per-layer clip),
  # zeroes padded rows and sums; the aux comes back per example.
  fn = jp_clipping.clipped_fun(
    grad_fn,
    has_aux=True,
    batch_argnums=1,
    keep_batch_dim=keep_batch_dim,
    l2_clip_norm=clip_norm,
    microbatch_size=microbatch_size,
    # The guard above already zeroed every non-finite gradient.
    nan_safe=False,
    prng_argnum=None if key is None else 2,
  )
  args = (params, batch) if key is None else (params, batch, key)
  is_padding = (
    jnp.zeros(size, bool) if mask is None else ~jnp.asarray(mask, bool)
  )
  grad_sum, (norms, over) = fn(*args, is_padding_example=is_padding)
  real = ~is_padding
  finite = jnp.isfinite(norms)
  stats = ClipStats(
    num_examples=real.sum(dtype=jnp.int32),
    num_clipped=(real & finite & over).sum(dtype=jnp.int32),
    num_nonfinite=(real & ~finite).sum(dtype=jnp.int32),
  )
  return grad_sum, stats


def augmentation_multiplicity(
  loss_fn: Callable[[Any, Any], jax.Array],
  augment_fn: Callable[[jax.Array, Any], Any],
  multiplicity: int,
) -> Callable[[Any, Any, jax.Array], jax.Array]:
  r"""One example's loss averaged over ``multiplicity`` augmentations of it.

  De et al. (2022) average the gradients of :math:`K` augmented views of
  each example *before* clipping it:

  .. math::
    g_i = \mathrm{clip}_C\Big(\frac1K \sum_{k=1}^K \nabla_\theta
    \ell\big(\theta, a_{k}(x_i)\big)\Big),

  so each example still contributes one clipped gradient (the sensitivity,
  and so the privacy, is unchanged) while the augmentations' variance is
  averaged away. The gradient of the mean loss over the views is that mean
  gradient, so the views are stacked as a batch of :math:`K` and
  ``loss_fn`` (a batch mean) is applied once: ghost clipping then sees them
  as :math:`K` more positions of the same example.

  Args:
    loss_fn: ``loss_fn(model_or_params, example) -> scalar``, the *mean*
      loss over the example's leading axis (the example comes with a
      leading axis, as with ``keep_batch_dim=True``).
    augment_fn: ``augment_fn(key, example) -> example``: one random view,
      of the same structure and shapes.
    multiplicity: :math:`K \ge 1`, views per example.

  Returns:
    ``loss(model_or_params, example, key)`` for `clipped_grad_sum` or
    `model_clipped_grad_sum` with ``keep_batch_dim=True`` and a ``key``
    (split into one key per example there, and into ``multiplicity`` views
    here).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.privacy import (
    ...     augmentation_multiplicity, clipped_grad_sum)
    >>> loss = lambda w, ex: jnp.mean((ex @ w) ** 2)
    >>> noisy = lambda key, ex: ex + jax.random.normal(key, ex.shape)
    >>> views = augmentation_multiplicity(loss, noisy, 4)
    >>> g, _ = clipped_grad_sum(views, jnp.ones(3), jnp.ones((8, 3)),
    ...     clip_norm=1.0, keep_batch_dim=True, key=jax.random.key(0))
    >>> g.shape
    (3,)

  References:
    De et al., 2022, "Unlocking High-Accuracy Differentially Private Image
    Classification through Scale" (arXiv:2204.13650), section 3.1.
  """
  v.check_int('multiplicity', multiplicity, minimum=1)
  if not callable(augment_fn):
    raise ValueError(
      f'`augment_fn` must be callable, got {type(augment_fn).__name__}.'
    )

  def loss(model, example, key):
    keys = jax.random.split(key, multiplicity)
    views = jax.vmap(augment_fn, in_axes=(0, None))(keys, example)
    views = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), views)
    return loss_fn(model, views)

  return loss


def check_private_model(model: nnx.Module) -> None:
  """Raises `ValueError` naming a layer that mixes the examples of a batch.

  ``nnx.BatchNorm`` normalizes with batch statistics, so one example's
  gradient depends on the others and per-example clipping bounds nothing
  (use ``nnx.GroupNorm`` or ``nnx.LayerNorm``).
  """
  for path, module in nnx.iter_modules(model):
    if isinstance(module, _MIXING_LAYERS):
      name = '.'.join(map(str, path)) or '<root>'
      raise ValueError(
        f'`model` has a {type(module).__name__} at {name!r}: it mixes the '
        'examples of a batch, so per-example clipping would not bound an '
        "example's influence; use nnx.GroupNorm or nnx.LayerNorm instead."
      )


def model_clipped_grad_sum(
  model: nnx.Module,
  loss_fn: Callable[..., jax.Array],
  batch: Any,
  *,
  clip_norm: float,
  mask: jax.Array | None = None,
  microbatch_size: int | None = None,
  per_layer: bool = False,
  keep_batch_dim: bool = False,
  key: jax.Array | None = None,
  method: str = 'vmap',
  nonfinite_fallback: bool = True,
) -> tuple[nnx.State, ClipStats]:
  r"""`clipped_grad_sum` for a Flax NNX model.

  .. math::
    \textstyle S = \sum_i m_i\, \mathrm{clip}_C\big(\nabla_\theta
    \ell(\mathrm{model}_\theta, x_i)\big)

  The model is split with ``nnx.split(model, nnx.Param, ...)``; only the
  parameters are differentiated, the rest of the state (e.g. dropout RNG
  counts) is read but not updated. Call ``model.eval()`` first (dropout off):
  under vmap every example would otherwise draw the same dropout mask.

  Args:
    model: the model; refused if it holds a layer that mixes examples
      (`check_private_model`).
    loss_fn: ``loss_fn(model, example) -> scalar`` (``(model, example, key)``
      when ``key`` is given); see `clipped_grad_sum` for ``example``.
    batch, clip_norm, mask, microbatch_size, per_layer, keep_batch_dim, key:
      as in `clipped_grad_sum`.
    method: ``'vmap'`` (materialized per-example gradients, any model),
      ``'ghost'`` (ghost clipping, `ghost_clipped_grad_sum`; raises for a
      layer it does not support) or ``'auto'`` (ghost when every
      parameterized layer is supported and ``per_layer`` is False, vmap
      otherwise).
    nonfinite_fallback: for ghost clipping, redo a step whose weighted sum is
      still non-finite by the vmap path (see `ghost_clipped_grad_sum`). The
      fallback branch is compiled into every step: on the MLP benchmark it
      costs ~1.7x throughput and XLA reserves its buffers
      (``experiments/perf/private_throughput.py``). False skips it; the
      rare step it would repair then comes back non-finite (never silently
      finite).

  Returns:
    ``(grad_sum, stats)``: an ``nnx.State`` shaped like ``nnx.state(model,
    nnx.Param)`` and a `ClipStats`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from optax_zoo.privacy import model_clipped_grad_sum
    >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    >>> def loss(m, ex):
    ...   return jnp.sum((m(ex['x']) - ex['y']) ** 2)
    >>> batch = {'x': jnp.ones((4, 3)), 'y': jnp.zeros((4, 2))}
    >>> g, stats = model_clipped_grad_sum(model, loss, batch, clip_norm=0.1)
    >>> g['kernel'].shape, int(stats.num_examples)
    ((3, 2), 4)

  References:
    Abadi et al., 2016, "Deep Learning with Differential Privacy".
  """
  v.check_choice('method', method, ('vmap', 'ghost', 'auto'))
  check_private_model(model)
  if method != 'vmap':
    from optax_zoo.privacy import _ghost

    unsupported = _ghost.unsupported_layers(model)
    use_ghost = method == 'ghost' or (not unsupported and not per_layer)
    if use_ghost:
      return _ghost.ghost_clipped_grad_sum(
        model,
        loss_fn,
        batch,
        clip_norm=clip_norm,
        mask=mask,
        microbatch_size=microbatch_size,
        per_layer=per_layer,
        keep_batch_dim=keep_batch_dim,
        key=key,
        nonfinite_fallback=nonfinite_fallback,
      )
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def param_loss(p, example, *k):
    return loss_fn(nnx.merge(graphdef, p, rest), example, *k)

  return clipped_grad_sum(
    param_loss,
    params,
    batch,
    clip_norm=clip_norm,
    mask=mask,
    microbatch_size=microbatch_size,
    per_layer=per_layer,
    keep_batch_dim=keep_batch_dim,
    key=key,
  )
