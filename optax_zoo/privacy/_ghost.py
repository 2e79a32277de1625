r"""Ghost clipping for Flax NNX models of `nnx.Linear` and `nnx.Conv` layers.

Per-example gradient norms from each layer's inputs and output gradients,
without materializing a per-example gradient (Li et al., 2021; Bu et al.,
2022), then ONE weighted backward pass of :math:`\sum_i c_i \ell_i`.

Activations and output gradients are captured by ``optax_zoo._src.layers``
(a tapped private copy of the model with a zero probe on each layer's output;
the gradient of the summed loss with respect to the probes is, row by row,
each example's output gradient), the capture K-FAC uses too.

Everything here is written for this package: jax-privacy and optax have no
ghost clipping.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from optax_zoo._src import layers
from optax_zoo.privacy import _clipping

__all__ = ['ghost_clipped_grad_sum', 'unsupported_layers']


def unsupported_layers(model: nnx.Module) -> list[str]:
  """The layers holding parameters that ghost clipping cannot handle.

  Each entry reads ``'path (Type): reason'``; an empty list means every
  parameter is the kernel or bias of a supported ``nnx.Linear`` or
  ``nnx.Conv`` (one feature group, no kernel mask, zero or 'SAME'/'VALID'
  padding).
  """
  return layers.unsupported_layers(model)


def _sq_norm_of_outer(a, g):
  r"""Per-example :math:`\|a_i^\top g_i\|_F^2` for a (B,T,d), g (B,T,p)."""
  hi = jax.lax.Precision.HIGHEST
  _, t, d = a.shape
  p = g.shape[-1]
  if t * t <= d * p:  # ghost norm: two T x T Gram matrices (Li et al.)
    aa = jnp.einsum('btd,bsd->bts', a, a, precision=hi)
    gg = jnp.einsum('btp,bsp->bts', g, g, precision=hi)
    return jnp.sum(aa * gg, axis=(1, 2))
  # direct: the per-example gradient, cheaper than the Gram matrices here
  w = jnp.einsum('btd,btp->bdp', a, g, precision=hi)
  return jnp.sum(w * w, axis=(1, 2))


def _per_example_sq_norms(modules, inputs, out_grads):
  """Sum over layers of squared per-example gradient norms, shape (B,)."""
  total = 0.0
  for path, calls in inputs.items():
    module = modules[path]
    grads = out_grads[path]
    a = layers.layer_rows(module, calls)
    g = [layers.flat_rows(y, y.shape[-1]) for y in grads]
    for ai, gi in zip(a, g, strict=True):
      if ai.shape[1] != gi.shape[1]:
        raise ValueError(
          f'ghost clipping: layer {path!r} has {ai.shape[1]} input patches '
          f'for {gi.shape[1]} outputs; is its convolution standard?'
        )
    # Calls of one layer share its weights: their rows stack along T.
    a = jnp.concatenate(a, axis=1).astype(jnp.float32)
    g = jnp.concatenate(g, axis=1).astype(jnp.float32)
    total = total + _sq_norm_of_outer(a, g)
    if module.bias is not None:
      total = total + jnp.sum(jnp.sum(g, axis=1) ** 2, axis=-1)
  return total


def _ghost_chunk(graphdef, params, rest, loss_fn, batch, real, keys, c):
  """Clipped sum and (norms) of one (micro)batch by ghost clipping."""
  has_key = keys is not None

  def example0():
    return jax.tree.map(lambda x: x[0], batch)

  # Shapes of every recorded layer output (per example), from a trace.
  def discover(example, *k):
    model, paths = layers.tapped_copy(graphdef, params, rest)
    with layers.taping(layers.Tape(paths, None)) as tape:
      loss_fn(model, example, *k)
    return tape.shapes

  k0 = (keys[0],) if has_key else ()
  shapes_box = {}

  def discover_shapes(example, *k):
    shapes_box['shapes'] = discover(example, *k)
    return 0.0

  jax.eval_shape(discover_shapes, example0(), *k0)
  shapes = shapes_box['shapes']
  size = real.shape[0]
  probes = {
    path: [jnp.zeros((size, *s.shape), s.dtype) for s in calls]
    for path, calls in shapes.items()
  }

  def per_example(probe, example, *k):
    model, paths = layers.tapped_copy(graphdef, params, rest)
    with layers.taping(layers.Tape(paths, probe)) as tape:
      loss = loss_fn(model, example, *k)
    return loss, tape.inputs

  def summed(probes):
    axes = (0, 0, 0) if has_key else (0, 0)
    args = (probes, batch, keys) if has_key else (probes, batch)
    losses, inputs = jax.vmap(per_example, in_axes=axes)(*args)
    return jnp.sum(losses), inputs

  out_grads, inputs = jax.grad(summed, has_aux=True)(probes)
  model, _ = layers.tapped_copy(graphdef, params, rest)
  modules = layers.layer_modules(model)
  norms = jnp.sqrt(_per_example_sq_norms(modules, inputs, out_grads))
  finite = jnp.isfinite(norms)
  keep = real & finite
  factor = jnp.where(keep, jnp.minimum(1.0, c / norms), 0.0)
  factor = jax.lax.stop_gradient(factor)

  # Rows weighted by zero are swapped for zeros, so that a NaN or an inf in
  # them cannot reach the sum as 0 * nan in the backward pass.
  def zero_rows(x):
    m = keep.reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(m, x, jnp.zeros_like(x))

  safe_batch = jax.tree.map(zero_rows, batch)

  def weighted(p):
    def one(example, *k):
      return loss_fn(nnx.merge(graphdef, p, rest), example, *k)

    args = (safe_batch, keys) if has_key else (safe_batch,)
    return jnp.sum(factor * jax.vmap(one)(*args))

  grad_sum = jax.grad(weighted)(params)
  return grad_sum, norms, factor < 1.0


def ghost_clipped_grad_sum(
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
  nonfinite_fallback: bool = True,
) -> tuple[nnx.State, _clipping.ClipStats]:
  r"""`model_clipped_grad_sum` by ghost clipping, for Linear/Conv models.

  For a layer with per-example input rows :math:`a_i` (``T x d``; for a
  convolution the im2col patches) and output gradient rows :math:`g_i`
  (``T x p``), the per-example kernel gradient is :math:`a_i^\top g_i` and

  .. math::
    \|a_i^\top g_i\|_F^2 = \textstyle\sum_{t,t'} (a_t \cdot a_{t'})
    (g_t \cdot g_{t'}), \qquad \|\nabla b\|^2 = \|\sum_t g_t\|^2,

  (the Gram form when :math:`T^2 \le dp`, else the gradient itself per
  example). With :math:`c_i = \min(1, C / \|\nabla \ell_i\|)`, one weighted
  backward pass gives :math:`\sum_i c_i \nabla \ell_i`.

  Args:
    model: a Flax NNX model whose parameters all belong to supported
      ``nnx.Linear``/``nnx.Conv`` layers (`unsupported_layers`), plus any
      parameter-free layers; refused if it mixes examples (BatchNorm). Each
      layer's parameters must act only through its ``__call__`` (no weight
      tying that reads ``layer.kernel`` elsewhere). Call ``model.eval()``.
    loss_fn, batch, clip_norm, mask, keep_batch_dim, key: as in
      `model_clipped_grad_sum`; ``loss_fn`` is vmapped over the examples.
    microbatch_size: ghost-clip ``microbatch_size`` examples at a time
      (``lax.map``) to bound the memory of the stored activations.
    per_layer: not supported by ghost clipping (``ValueError``); use
      ``method='vmap'``.
    nonfinite_fallback: if the weighted sum still has a NaN or an inf (a
      zeroed row whose loss is non-finite at an all-zero input), recompute
      that step by the vmap path (``lax.cond``: only that step pays).

  Returns:
    ``(grad_sum, stats)`` as `model_clipped_grad_sum`.

  Raises:
    ValueError: for BatchNorm, ``clip_norm <= 0``, ``per_layer=True`` or a
      layer ghost clipping does not support, naming it.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from optax_zoo.privacy import ghost_clipped_grad_sum
    >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    >>> def loss(m, ex):
    ...   return jnp.sum((m(ex['x']) - ex['y']) ** 2)
    >>> batch = {'x': jnp.ones((4, 3)), 'y': jnp.zeros((4, 2))}
    >>> g, stats = ghost_clipped_grad_sum(model, loss, batch, clip_norm=0.1)
    >>> g['kernel'].shape, int(stats.num_clipped)
    ((3, 2), 4)

  References:
    Li, Tramer, Liang & Hashimoto, 2021, "Large Language Models Can Be
    Strong Differentially Private Learners" (ghost clipping).
    Bu, Mao & Xu, 2022, "Scalable and Efficient Training of Large
    Convolutional Neural Networks with Differential Privacy" (convolutions
    by im2col; the choice between the Gram and the direct form per layer).

  Deviations:
    Li et al. and Bu et al. choose per layer between the ghost norm and the
    per-example gradient by memory (``2T^2 < pd``); here by ``T^2 <= dp``,
    both exact. The second pass is a weighted backward (Li et al.), not
    Bu et al.'s book-keeping reuse of the stored output gradients.
    A non-finite per-example norm zeroes that example (counted), as in the
    vmap path; its row is replaced by zeros in the weighted pass.
  """
  _clipping.check_private_model(model)
  size = _clipping._check_common(clip_norm, microbatch_size, batch, mask)
  if per_layer:
    raise ValueError(
      '`per_layer` clipping is not supported by ghost clipping; use '
      "method='vmap'."
    )
  problems = unsupported_layers(model)
  if problems:
    raise ValueError(
      'ghost clipping does not support these layers (use '
      f"method='vmap' or 'auto'): {'; '.join(problems)}."
    )
  if keep_batch_dim:
    inner = loss_fn
    loss_fn = lambda m, ex, *k: inner(
      m, jax.tree.map(lambda x: x[None], ex), *k
    )
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  real = jnp.ones(size, bool) if mask is None else jnp.asarray(mask, bool)
  keys = None if key is None else jax.random.split(key, size)
  mb = size if microbatch_size is None else microbatch_size
  chunk = functools.partial(_ghost_chunk, graphdef, params, rest, loss_fn)

  if mb == size:
    grad_sum, norms, clipped = chunk(batch, real, keys, clip_norm)
  else:
    n = size // mb
    split = lambda x: x.reshape(n, mb, *x.shape[1:])
    xs = jax.tree.map(split, (batch, real, keys))

    def body(carry, x):
      g, nm, cl = chunk(*x, clip_norm)
      return jax.tree.map(jnp.add, carry, g), (nm, cl)

    zero = jax.tree.map(jnp.zeros_like, params)
    grad_sum, (norms, clipped) = jax.lax.scan(body, zero, xs)
    norms, clipped = norms.reshape(size), clipped.reshape(size)

  finite = jnp.isfinite(norms)
  stats = _clipping.ClipStats(
    num_examples=real.sum(dtype=jnp.int32),
    num_clipped=(real & finite & clipped).sum(dtype=jnp.int32),
    num_nonfinite=(real & ~finite).sum(dtype=jnp.int32),
  )
  if not nonfinite_fallback:
    return grad_sum, stats

  def vmap_path(_):
    return _clipping.model_clipped_grad_sum(
      model,
      loss_fn,
      batch,
      clip_norm=clip_norm,
      mask=mask,
      microbatch_size=microbatch_size,
      key=key,
      method='vmap',
    )

  return jax.lax.cond(
    _clipping._all_finite(grad_sum),
    lambda _: (grad_sum, stats),
    vmap_path,
    None,
  )
