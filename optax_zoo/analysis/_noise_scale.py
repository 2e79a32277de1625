"""The gradient noise scale of McCandlish et al. (2018)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from optax_zoo._src import validation as v

__all__ = [
  'NoiseScale',
  'NoiseScaleState',
  'gradient_noise_scale',
  'noise_scale_from_norms',
  'noise_scale_init',
  'noise_scale_update',
]


class NoiseScale(NamedTuple):
  """Unbiased estimates behind the simple noise scale.

  Attributes:
    grad_sq: :math:`|G|^2`, the squared norm of the true gradient.
    trace_cov: :math:`\\operatorname{tr}\\Sigma`, the per-example gradient
      covariance's trace.
    b_simple: :math:`\\mathcal{B}_\\text{simple} = \\operatorname{tr}\\Sigma /
      |G|^2`.
  """

  grad_sq: jax.Array
  trace_cov: jax.Array
  b_simple: jax.Array


def noise_scale_from_norms(
  small_sq: jax.Array,
  big_sq: jax.Array,
  small_batch_size: int,
  big_batch_size: int,
) -> NoiseScale:
  """:math:`\\mathcal{B}_\\text{simple}` from gradient norms at two batch sizes.

  Since :math:`\\mathbb{E}|G_B|^2 = |G|^2 + \\operatorname{tr}\\Sigma / B`,
  two batch sizes :math:`b < B` give the unbiased estimates (McCandlish et
  al., 2018, appendix A.1)

  .. math::
    |G|^2 \\approx \\frac{B |G_B|^2 - b |G_b|^2}{B - b}, \\qquad
    \\operatorname{tr}\\Sigma \\approx
    \\frac{|G_b|^2 - |G_B|^2}{1/b - 1/B}.

  Their ratio is biased for one pair of norms: average each over steps (see
  `noise_scale_update`) before dividing.

  Args:
    small_sq: :math:`|G_b|^2` (or its mean over several small batches, as
      across devices).
    big_sq: :math:`|G_B|^2`.
    small_batch_size: ``b``, >= 1.
    big_batch_size: ``B`` > ``b``.

  Returns:
    A `NoiseScale`.

  Example:
    >>> from optax_zoo.analysis import noise_scale_from_norms
    >>> # |G|^2 = 1, tr(Sigma) = 32: |G_b|^2 = 1 + 32/b.
    >>> ns = noise_scale_from_norms(1 + 32 / 8, 1 + 32 / 64, 8, 64)
    >>> round(float(ns.b_simple), 4)
    32.0

  References:
    McCandlish et al., `An Empirical Model of Large-Batch Training
    <https://arxiv.org/abs/1812.06162>`_, 2018.
  """
  v.check_int('small_batch_size', small_batch_size, minimum=1)
  v.check_int('big_batch_size', big_batch_size, minimum=small_batch_size + 1)
  b, bb = small_batch_size, big_batch_size
  grad_sq = (bb * big_sq - b * small_sq) / (bb - b)
  trace_cov = (small_sq - big_sq) / (1 / b - 1 / bb)
  return NoiseScale(grad_sq, trace_cov, trace_cov / grad_sq)


def gradient_noise_scale(
  fun: Callable[[Any, Any], jax.Array],
  params: Any,
  batch: Any,
  *,
  num_splits: int,
) -> NoiseScale:
  """The simple noise scale from one batch split into equal parts.

  The batch of size ``B`` is split into ``num_splits`` parts of size
  ``b = B / num_splits``, as data-parallel workers hold it; :math:`|G_b|^2`
  is the mean of the parts' squared gradient norms and :math:`G_B` the mean
  of their gradients, as in GPT-NeoX's ``gradient_noise_scale.py``. Then
  `noise_scale_from_norms`. The parts' gradients are computed vmapped.

  Args:
    fun: ``fun(params, batch) -> scalar``, a mean over the batch.
    params: any pytree of arrays.
    batch: a pytree of arrays with a shared leading batch axis.
    num_splits: the number of parts, >= 2, dividing the batch size.

  Returns:
    A `NoiseScale` for this batch.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.analysis import gradient_noise_scale
    >>> x = jax.random.normal(jax.random.key(0), (256, 3)) + 1.0
    >>> fun = lambda p, x: jnp.mean((x - p) ** 2)
    >>> ns = gradient_noise_scale(fun, jnp.zeros(3), x, num_splits=8)
    >>> ns.b_simple.shape
    ()
  """
  v.check_int('num_splits', num_splits, minimum=2)
  size = jnp.shape(jax.tree.leaves(batch)[0])[0]
  if size % num_splits:
    raise ValueError(
      f'`num_splits` must divide the batch size {size}, got {num_splits!r}.'
    )
  parts = jax.tree.map(
    lambda x: x.reshape(num_splits, size // num_splits, *x.shape[1:]), batch
  )
  grads = jax.vmap(lambda b: ravel_pytree(jax.grad(fun)(params, b))[0])(parts)
  small_sq = jnp.mean(jnp.sum(grads**2, axis=1))
  big_sq = jnp.sum(jnp.mean(grads, axis=0) ** 2)
  return noise_scale_from_norms(small_sq, big_sq, size // num_splits, size)


class NoiseScaleState(NamedTuple):
  """Exponential averages of the noise-scale estimates.

  Attributes:
    count: updates so far.
    grad_sq: the bias-uncorrected average of :math:`|G|^2`.
    trace_cov: the bias-uncorrected average of
      :math:`\\operatorname{tr}\\Sigma`.
  """

  count: jax.Array
  grad_sq: jax.Array
  trace_cov: jax.Array


def noise_scale_init() -> NoiseScaleState:
  """An empty `NoiseScaleState` for `noise_scale_update`."""
  zero = jnp.zeros((), jnp.float32)
  return NoiseScaleState(jnp.zeros((), jnp.int32), zero, zero)


def noise_scale_update(
  state: NoiseScaleState, estimate: NoiseScale, *, decay: float = 0.95
) -> tuple[NoiseScaleState, jax.Array]:
  """Averages the estimates over steps; a monitor to call while training.

  The numerator and denominator are averaged separately, with Adam-style
  bias correction, and divided afterwards, because the ratio of two noisy
  unbiased estimates is biased (McCandlish et al., 2018, appendix A.1).
  Pure and jittable, so it can run inside a training step.

  Args:
    state: the running averages (start from `noise_scale_init`).
    estimate: this step's `NoiseScale`.
    decay: the averages' decay in [0, 1).

  Returns:
    The new state and the smoothed :math:`\\mathcal{B}_\\text{simple}`.

  Example:
    >>> from optax_zoo.analysis import (
    ...   noise_scale_from_norms, noise_scale_init, noise_scale_update)
    >>> state = noise_scale_init()
    >>> for small, big in [(5.0, 1.5), (4.0, 1.4)]:
    ...   est = noise_scale_from_norms(small, big, 8, 64)
    ...   state, b_simple = noise_scale_update(state, est, decay=0.9)
    >>> int(state.count)
    2
  """
  v.check_in_range('decay', decay, 0.0, 1.0)
  count = state.count + 1
  avg = lambda old, new: decay * old + (1 - decay) * new
  grad_sq = avg(state.grad_sq, estimate.grad_sq)
  trace_cov = avg(state.trace_cov, estimate.trace_cov)
  # The bias corrections of numerator and denominator cancel in the ratio.
  return NoiseScaleState(count, grad_sq, trace_cov), trace_cov / grad_sq
