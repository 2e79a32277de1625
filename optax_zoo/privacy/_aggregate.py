"""Gaussian aggregation of clipped per-example gradients, as optax transforms.

What comes from where: the noise is `jax_privacy.noise_addition.
gaussian_privatizer` (isotropic Gaussian, its key split every step), called
with the key this module keeps in its state; the division by the *expected*
batch size, the state layout, the argument checks and the `dp_sgd` alias are
written here. Clipping is `optax_zoo.privacy` clipping (from
`jax_privacy.clipping`); accounting is `optax_zoo.privacy` accounting (from
`dp_accounting`).

Why not `optax.contrib.differentially_private_aggregate`: it divides by the
realized batch size, which under Poisson sampling is itself private, and
returns inf on an empty batch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo import adaptive
from optax_zoo._src import validation as v

__all__ = ['DPAggregateState', 'dp_aggregate', 'dp_sgd']


class DPAggregateState(NamedTuple):
  """State of `dp_aggregate`.

  Attributes:
    count: steps taken, int32.
    rng_key: the raw data (uint32, `jax.random.key_data`) of the key of the
      next step's noise, split every step (raw so that the state serializes
      and counts its bytes like any array).
    noise_state: the state of `jax_privacy`'s Gaussian privatizer besides
      its key (empty for i.i.d. noise).
  """

  count: jax.Array
  rng_key: jax.Array
  noise_state: Any


def _as_key(key: Any) -> jax.Array:
  if key is None or isinstance(key, (str, bytes, bool, float)):
    raise ValueError(f'`key` must be a jax.random key or an int, got {key!r}.')
  if isinstance(key, int):
    return jax.random.key(key)
  if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
    return key
  # An int array: an integer traced by `optax.inject_hyperparams`, or a
  # raw `jax.random.PRNGKey` (uint32 pair).
  key = jnp.asarray(key)
  return jax.random.wrap_key_data(key) if key.ndim else jax.random.key(key)


def dp_aggregate(
  *,
  clip_norm: jax.typing.ArrayLike,
  noise_multiplier: jax.typing.ArrayLike,
  expected_batch_size: jax.typing.ArrayLike,
  key: jax.Array | int,
) -> optax.GradientTransformationExtraArgs:
  r"""Gaussian noise on the sum of clipped gradients, over the expected size.

  The incoming updates are the *sum* :math:`S_t = \sum_{i \in B_t}
  \mathrm{clip}_C(g_i)` of clipped per-example gradients (padding rows
  masked out), not their mean:

  .. math::
    \tilde g_t = \frac{S_t + \sigma C\, z_t}{\mathbb{E}|B_t|},\qquad
    z_t \sim \mathcal{N}(0, I),

  with :math:`\mathbb{E}|B_t| = qN` fixed in advance (never the realized
  :math:`|B_t|`, which under Poisson sampling is private). An empty batch
  gives the noise-only step :math:`\sigma C z_t / qN`.

  Non-finite sums stay non-finite (noise is added, nothing is replaced):
  neutralizing bad per-example gradients is the clipping step's job, before
  the sum, where it is private.

  Under ``optax.MultiSteps(tx, k)`` (which averages its inputs over ``k``
  calls and then calls ``tx`` once) the noise is added once per ``k``
  microbatches, to the *mean* of their sums: the step is
  :math:`(\sum_j S_j + k\sigma C z)/(k\,\mathbb{E}|B|)`, i.e. DP-SGD on the
  union batch of expected size :math:`k\,\mathbb{E}|B|` with noise
  multiplier :math:`k\sigma`. Account it as ``k`` steps of the
  microbatches' sampling rate with noise multiplier :math:`\sqrt{k}\,
  \sigma`: the one draw :math:`k\sigma C z` is distributed as the sum of
  ``k`` independent draws of scale :math:`\sqrt{k}\,\sigma C`, so the step
  is post-processing of ``k`` such subsampled Gaussian steps (accounting
  ``k`` steps at :math:`\sigma` is valid too, and pessimistic). Not as one
  Poisson step at ``k`` times the rate: independently sampled microbatches
  can hold one example more than once.

  Args:
    clip_norm: :math:`C`, the clipping norm the sum was clipped with, > 0.
    noise_multiplier: :math:`\sigma`, >= 0 (0 gives a non-private run).
    expected_batch_size: :math:`qN`, the expected batch size, > 0.
    key: a `jax.random.key` (or an int seed) for the noise; the state keeps
      a copy and splits it every step.

  Returns:
    An `optax.GradientTransformationExtraArgs` (extra arguments ignored).

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax.chain(
    ...   optax_zoo.dp_aggregate(
    ...     clip_norm=1.0, noise_multiplier=0.0, expected_batch_size=4,
    ...     key=jax.random.key(0)),
    ...   optax_zoo.sgd(0.1))
    >>> clipped_sum = jnp.array([2.0, -1.0])  # from the clipping step
    >>> updates, _ = tx.update(clipped_sum, tx.init(jnp.zeros(2)))
    >>> updates
    Array([-0.05 ,  0.025], dtype=float32)

  References:
    Abadi et al., Deep Learning with Differential Privacy, 2016
    (arXiv:1607.00133); jax-privacy ``noise_addition.gaussian_privatizer``.

  Deviations:
    None in the noise (jax-privacy's); the division by the expected batch
    size and the sum as input follow the paper's Poisson analysis, not
    ``optax.contrib``'s realized-size mean.
  """
  v.check_positive('clip_norm', clip_norm)
  v.check_non_negative('noise_multiplier', noise_multiplier)
  v.check_positive('expected_batch_size', expected_batch_size)
  seed = _as_key(key)
  key_impl = jax.random.key_impl(seed)
  key_data = jax.random.key_data(seed)

  def privatizer(rng_key):
    from jax_privacy import noise_addition  # lazy: see _accounting

    return noise_addition.gaussian_privatizer(
      stddev=noise_multiplier * clip_norm, prng_key=rng_key
    )

  def init_fn(params):
    _, noise_state = privatizer(seed).init(params)
    # A real copy: a donated state must not share a buffer with the closure.
    rng_key = jnp.array(key_data, copy=True)
    return DPAggregateState(jnp.zeros([], jnp.int32), rng_key, noise_state)

  def update_fn(updates, state, params=None, **extra):
    del params, extra
    rng_key = jax.random.wrap_key_data(state.rng_key, impl=key_impl)
    noisy, (rng_key, noise_state) = privatizer(rng_key).update(
      updates, (rng_key, state.noise_state)
    )
    mean = jax.tree.map(
      lambda x: (x / expected_batch_size).astype(x.dtype), noisy
    )
    count = optax.safe_increment(state.count)
    rng_key = jax.random.key_data(rng_key)
    return mean, DPAggregateState(count, rng_key, noise_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def dp_sgd(
  learning_rate: optax.ScalarOrSchedule,
  *,
  clip_norm: jax.typing.ArrayLike,
  noise_multiplier: jax.typing.ArrayLike,
  expected_batch_size: jax.typing.ArrayLike,
  key: jax.Array | int,
  momentum: jax.typing.ArrayLike | None = None,
  nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""DP-SGD: `dp_aggregate` chained before `optax_zoo.sgd`.

  .. math::
    m_t = \mu m_{t-1} + \frac{S_t + \sigma C z_t}{\mathbb{E}|B_t|},\qquad
    \Delta_t = -\eta_t m_t.

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    clip_norm: :math:`C`, > 0.
    noise_multiplier: :math:`\sigma`, >= 0.
    expected_batch_size: :math:`qN`, > 0.
    key: a `jax.random.key` or an int seed for the noise.
    momentum: :math:`\mu` in [0, 1), or None for plain SGD.
    nesterov: Nesterov momentum (needs ``momentum``).

  Returns:
    An `optax.GradientTransformationExtraArgs` whose updates take the sum
    of clipped per-example gradients.

  Example:
    >>> import jax, jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.dp_sgd(
    ...   0.5, clip_norm=1.0, noise_multiplier=1.1, expected_batch_size=64,
    ...   key=0)
    >>> params = jnp.zeros(3)
    >>> clipped_sum = jnp.ones(3)  # sum over the batch of clipped grads
    >>> updates, state = tx.update(clipped_sum, tx.init(params))
    >>> updates.shape
    (3,)

  References:
    Abadi et al., Deep Learning with Differential Privacy, 2016
    (arXiv:1607.00133).

  Deviations:
    None from the paper; noise over the expected, not realized, batch size
    (unlike ``optax.contrib.dpsgd``).
  """
  return optax.chain(
    dp_aggregate(
      clip_norm=clip_norm,
      noise_multiplier=noise_multiplier,
      expected_batch_size=expected_batch_size,
      key=key,
    ),
    adaptive.sgd(learning_rate, momentum=momentum, nesterov=nesterov),
  )
