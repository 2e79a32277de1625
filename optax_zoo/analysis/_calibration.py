"""Calibration metrics: NLL, expected calibration error, reliability plot."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optax_zoo._src import validation as v

__all__ = [
  'ReliabilityData',
  'expected_calibration_error',
  'negative_log_likelihood',
]


class ReliabilityData(NamedTuple):
  """Per-bin data of a reliability diagram.

  Attributes:
    bin_edges: ``num_bins + 1`` confidence edges in [0, 1].
    confidence: mean top-class confidence in each bin (0 where empty).
    accuracy: accuracy in each bin (0 where empty).
    count: examples in each bin.
  """

  bin_edges: jax.Array
  confidence: jax.Array
  accuracy: jax.Array
  count: jax.Array


def negative_log_likelihood(
  probs: jax.typing.ArrayLike, labels: jax.typing.ArrayLike
) -> jax.Array:
  r"""Mean negative log-likelihood of integer ``labels``.

  .. math:: \mathrm{NLL} = -\tfrac1N \textstyle\sum_i \log p_i(y_i).

  Args:
    probs: predicted probabilities, shape ``(N, C)`` (average ensemble
      members' probabilities, not their logits).
    labels: integer labels, shape ``(N,)``.

  Returns:
    A scalar; probabilities are clipped at the dtype's tiny value so a
    confident mistake costs a large finite amount.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo.analysis import negative_log_likelihood
    >>> negative_log_likelihood(jnp.array([[0.5, 0.5]]), jnp.array([0]))
    Array(0.6931..., dtype=float32)
  """
  probs = jnp.asarray(probs)
  p = jnp.take_along_axis(probs, jnp.asarray(labels)[:, None], axis=-1)
  return -jnp.mean(jnp.log(jnp.maximum(p, jnp.finfo(probs.dtype).tiny)))


def expected_calibration_error(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_bins: int = 15,
) -> tuple[jax.Array, ReliabilityData]:
  r"""Expected calibration error (Guo et al., 2017) and its diagram data.

  Examples are binned by top-class confidence into ``num_bins`` equal-width
  bins :math:`B_m` (right-closed, as the SWAG code):

  .. math::
    \mathrm{ECE} = \textstyle\sum_m \frac{|B_m|}{N}
    \big|\mathrm{acc}(B_m) - \mathrm{conf}(B_m)\big|.

  Args:
    probs: predicted probabilities, shape ``(N, C)``.
    labels: integer labels, shape ``(N,)``.
    num_bins: an integer >= 1.

  Returns:
    ``(ece, ReliabilityData)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo.analysis import expected_calibration_error
    >>> probs = jnp.array([[0.9, 0.1], [0.9, 0.1]])
    >>> ece, data = expected_calibration_error(probs, jnp.array([0, 1]))
    >>> round(float(ece), 4)
    0.4
  """
  v.check_int('num_bins', num_bins, minimum=1)
  probs = jnp.asarray(probs)
  conf = probs.max(-1)
  correct = (probs.argmax(-1) == jnp.asarray(labels)).astype(conf.dtype)
  edges = jnp.linspace(0.0, 1.0, num_bins + 1)
  idx = jnp.clip(
    jnp.searchsorted(edges, conf, side='left') - 1, 0, num_bins - 1
  )
  count = jnp.zeros(num_bins).at[idx].add(1.0)
  conf_sum = jnp.zeros(num_bins).at[idx].add(conf)
  acc_sum = jnp.zeros(num_bins).at[idx].add(correct)
  safe = jnp.maximum(count, 1.0)
  ece = jnp.sum(jnp.abs(acc_sum - conf_sum)) / conf.shape[0]
  return ece, ReliabilityData(edges, conf_sum / safe, acc_sum / safe, count)
