"""Statistics along a training trajectory: R_med, weight distributions."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp

from optax_zoo._src import validation as v
from optax_zoo.analysis._operators import make_operator

__all__ = ['hessian_diagonal', 'r_med', 'weight_distance']


@functools.partial(jax.jit, static_argnums=(0, 3))
def _diagonal(matvec, operands, probes, exact):
  if exact:
    # e_i^T H e_i without forming H: one product per coordinate.
    basis = probes
    return jax.lax.map(lambda e: jnp.dot(e, matvec(operands, e)), basis)
  return jnp.mean(jax.vmap(lambda z: z * matvec(operands, z))(probes), axis=0)


def hessian_diagonal(
  fun: Callable[..., jax.Array],
  params: Any,
  *,
  key: jax.Array | None = None,
  num_samples: int | None = None,
  batches: Iterable[Any] | None = None,
) -> Any:
  """The Hessian's diagonal, exact or by Hutchinson's estimator.

  Exact (``num_samples=None``): :math:`H_{ii} = e_i^\\top H e_i`, one
  Hessian-vector product per parameter. Estimated: :math:`\\operatorname{diag}
  H \\approx \\frac1n \\sum_k z_k \\odot H z_k` with Rademacher probes (Bekas et
  al., 2007).

  Args:
    fun: ``fun(params) -> scalar`` or ``fun(params, batch)`` with
      ``batches``.
    params: any pytree of arrays.
    key: a `jax.random.key`, needed with ``num_samples``.
    num_samples: probes for the estimate, >= 1; None for the exact diagonal.
    batches: as in `top_hessian_eigenvalues`.

  Returns:
    The diagonal as a pytree with the structure of ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo.analysis import hessian_diagonal
    >>> f = lambda p: p[0] ** 2 + 3 * p[0] * p[1] + 2 * p[1] ** 2
    >>> hessian_diagonal(f, jnp.zeros(2))
    Array([2., 4.], dtype=float32)
  """
  op = make_operator(fun, params, batches=batches)
  flat = op.flat_params
  if num_samples is None:
    probes = jnp.eye(op.dim, dtype=flat.dtype)
  else:
    v.check_int('num_samples', num_samples, minimum=1)
    if not isinstance(key, jax.Array):
      raise ValueError(f'`key` must be a jax.random key, got {key!r}.')
    probes = jax.random.rademacher(key, (num_samples, op.dim), flat.dtype)
  return op.unravel(
    _diagonal(op.matvec, op.operands, probes, num_samples is None)
  )


def r_med(diagonal: Any) -> Any:
  """Jiang et al.'s uniformity statistic of the Hessian diagonal.

  For each parameter array (layer) with Hessian diagonal entries
  :math:`h_1, \\dots, h_n`,

  .. math::
    R_\\text{med} = \\frac{\\max_i h_i}{\\operatorname{median}_i h_i},

  the ratio of the largest diagonal entry to the median one. Jiang et al.
  (2023) track it along the iterates :math:`w_t` and find it much smaller
  for Adam than for SGD: adaptive methods move to regions whose diagonal
  curvature is more uniform. A median at or below zero gives an infinite or
  negative ratio, reported as is.

  Args:
    diagonal: the Hessian diagonal as a pytree (see `hessian_diagonal`).

  Returns:
    A pytree of scalars, one per array.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo.analysis import r_med
    >>> r_med({'w': jnp.array([1.0, 2.0, 3.0, 10.0, 2.0])})
    {'w': Array(5., dtype=float32)}

  References:
    Jiang, Malik and Li, `How Does Adaptive Optimization Impact Local Neural
    Network Geometry? <https://arxiv.org/abs/2211.02254>`_, 2023.
  """
  return jax.tree.map(lambda h: jnp.max(h) / jnp.median(h), diagonal)


def weight_distance(
  params_a: Any, params_b: Any, *, metric: str = 'wasserstein', bins: int = 50
) -> Any:
  """Distance between the value distributions of two checkpoints' weights.

  Per array, the empirical distribution of its entries is compared, not the
  entries one by one: it can settle while individual weights keep moving,
  which Zhang et al. read as the iterates approaching an invariant measure.
  ``'wasserstein'`` is the 1-Wasserstein distance between the two empirical
  distributions, :math:`\\frac1n \\sum_i |a_{(i)} - b_{(i)}|` over sorted
  values; ``'tv'`` is the total variation distance :math:`\\frac12 \\sum_j
  |p_j - q_j|` between histograms with ``bins`` shared bins over both
  arrays' range.

  Args:
    params_a: the first checkpoint.
    params_b: the second, with the same structure and shapes.
    metric: ``'wasserstein'`` or ``'tv'``.
    bins: histogram bins for ``'tv'``, >= 1.

  Returns:
    A pytree of scalars, one per array.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo.analysis import weight_distance
    >>> a = {'w': jnp.array([0.0, 1.0, 2.0])}
    >>> weight_distance(a, {'w': jnp.array([2.0, 0.0, 1.0])})  # permuted
    {'w': Array(0., dtype=float32)}

  References:
    Zhang et al., weight distributions converge though weights do not,
    2022 (row 47 of the project's ``METHODS.md``).
  """
  v.check_choice('metric', metric, ('wasserstein', 'tv'))
  v.check_int('bins', bins, minimum=1)

  def distance(a, b):
    a, b = jnp.ravel(a), jnp.ravel(b)
    if metric == 'wasserstein':
      return jnp.mean(jnp.abs(jnp.sort(a) - jnp.sort(b)))
    lo = jnp.minimum(a.min(), b.min())
    hi = jnp.maximum(a.max(), b.max())
    p = jnp.histogram(a, bins, range=(lo, hi))[0] / a.size
    q = jnp.histogram(b, bins, range=(lo, hi))[0] / b.size
    return 0.5 * jnp.sum(jnp.abs(p - q))

  return jax.tree.map(distance, params_a, params_b)
