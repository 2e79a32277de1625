"""Random augmentations of one example, for training and private training.

Each returns ``augment_fn(key, x) -> x`` for ONE example (no batch axis),
to `jax.vmap` over a batch or to pass to `optax_zoo.training.train_private`
(``augment_fn``, with ``augmentation_multiplicity``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from optax_zoo._src import validation as v

__all__ = ['AugmentFn', 'shift_and_noise']

AugmentFn = Callable[[jax.Array, jax.Array], jax.Array]


def shift_and_noise(*, max_shift: int, noise_std: float) -> AugmentFn:
  r"""A random circular shift and Gaussian noise of a 1-D signal.

  .. math::
    a(x)_l = x_{(l - s) \bmod L} + \epsilon_l,\qquad
    s \sim \mathcal U\{-S, \dots, S\},\ \epsilon_l \sim \mathcal N(0,
    \tau^2),

  along the first axis of ``x`` (length :math:`L`; trailing axes are
  channels). The shift is circular because MNIST-1D's own generator
  translates its templates circularly, so a shifted example stays in the
  data's distribution; the noise is i.i.d. per entry.

  Args:
    max_shift: :math:`S`, an integer >= 0.
    noise_std: :math:`\tau \ge 0`.

  Returns:
    ``augment_fn(key, x)``, ``x`` of shape ``(L, ...)``; same shape and dtype.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.training import shift_and_noise
    >>> aug = shift_and_noise(max_shift=2, noise_std=0.0)
    >>> sorted(aug(jax.random.key(0), jnp.arange(5.0)).tolist())
    [0.0, 1.0, 2.0, 3.0, 4.0]
  """
  v.check_int('max_shift', max_shift, minimum=0)
  v.check_non_negative('noise_std', noise_std)

  def augment(key, x):
    k_shift, k_noise = jax.random.split(key)
    shift = jax.random.randint(k_shift, (), -max_shift, max_shift + 1)
    x = jnp.roll(x, shift, axis=0)
    noise = jax.random.normal(k_noise, x.shape, jnp.float32) * noise_std
    return (x + noise).astype(x.dtype)

  return augment
