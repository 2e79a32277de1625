"""Random augmentations of 1-D signals, and batch augmentation.

Each augmentation returns ``augment_fn(key, x) -> x`` for ONE example (no
batch axis; the signal's length is the first axis, trailing axes are
channels), deterministic given the key, same shape and dtype: to `jax.vmap`
over a batch, to chain with `compose`, to pass to
`optax_zoo.training.train_private` (``augment_fn``, with
``augmentation_multiplicity``) or to `batch_augmentation`, Hoffer et al.
(2019)'s batch augmentation as a ``batch_transform`` of the training loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from optax_zoo._src import validation as v

__all__ = [
  'AugmentFn',
  'batch_augmentation',
  'compose',
  'crop_and_resize',
  'gaussian_noise',
  'random_scale',
  'random_shift',
  'shift_and_noise',
]

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


def random_shift(max_shift: int) -> AugmentFn:
  r"""A random circular shift along the first axis.

  .. math::
    a(x)_l = x_{(l - s) \bmod L},\qquad s \sim \mathcal U\{-S, \dots, S\}.

  Circular, as MNIST-1D's generator translates its templates.

  Args:
    max_shift: :math:`S`, an integer >= 0.

  Returns:
    ``augment_fn(key, x)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.training import random_shift
    >>> random_shift(0)(jax.random.key(0), jnp.arange(4.0)).tolist()
    [0.0, 1.0, 2.0, 3.0]
  """
  v.check_int('max_shift', max_shift, minimum=0)

  def augment(key, x):
    shift = jax.random.randint(key, (), -max_shift, max_shift + 1)
    return jnp.roll(x, shift, axis=0)

  return augment


def random_scale(min_scale: float, max_scale: float) -> AugmentFn:
  r"""Multiplies the signal by one factor drawn uniformly.

  .. math::
    a(x) = c\,x,\qquad c \sim \mathcal U[c_{\min}, c_{\max}].

  Args:
    min_scale: :math:`c_{\min} > 0`.
    max_scale: :math:`c_{\max} \ge c_{\min}`.

  Returns:
    ``augment_fn(key, x)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.training import random_scale
    >>> random_scale(2.0, 2.0)(jax.random.key(0), jnp.ones(3)).tolist()
    [2.0, 2.0, 2.0]
  """
  v.check_positive('min_scale', min_scale)
  if not max_scale >= min_scale:
    raise ValueError(
      f'`max_scale` must be >= `min_scale`={min_scale}, got {max_scale!r}.'
    )

  def augment(key, x):
    c = jax.random.uniform(key, (), jnp.float32, min_scale, max_scale)
    return (x * c).astype(x.dtype)

  return augment


def gaussian_noise(std: float) -> AugmentFn:
  r"""Adds i.i.d. Gaussian noise to every entry.

  .. math::
    a(x)_l = x_l + \epsilon_l,\qquad \epsilon_l \sim \mathcal N(0, \tau^2).

  Args:
    std: :math:`\tau \ge 0`.

  Returns:
    ``augment_fn(key, x)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.training import gaussian_noise
    >>> gaussian_noise(0.0)(jax.random.key(0), jnp.ones(2)).tolist()
    [1.0, 1.0]
  """
  v.check_non_negative('std', std)

  def augment(key, x):
    noise = jax.random.normal(key, x.shape, jnp.float32) * std
    return (x + noise).astype(x.dtype)

  return augment


def crop_and_resize(min_fraction: float) -> AugmentFn:
  r"""A random contiguous crop, linearly resampled back to full length.

  A crop of :math:`c` samples (:math:`c` uniform in :math:`[\lceil f L
  \rceil, L]`) starting at a uniform offset :math:`s \in [0, L - c]` is
  stretched over the :math:`L` output samples by linear interpolation:

  .. math::
    a(x)_l = \operatorname{interp}\big(x,\ s + l\,\tfrac{c - 1}{L - 1}
    \big),\qquad l = 0, \dots, L - 1.

  A crop of the whole signal (:math:`c = L`, :math:`s = 0`) is the identity.

  Args:
    min_fraction: :math:`f \in (0, 1]`, the shortest crop as a fraction of
      the length.

  Returns:
    ``augment_fn(key, x)``, ``x`` of length :math:`L \ge 2`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.training import crop_and_resize
    >>> crop_and_resize(1.0)(jax.random.key(0), jnp.arange(4.0)).tolist()
    [0.0, 1.0, 2.0, 3.0]
  """
  v.check_in_range(
    'min_fraction',
    min_fraction,
    0.0,
    1.0,
    low_inclusive=False,
    high_inclusive=True,
  )

  def augment(key, x):
    length = x.shape[0]
    if length < 2:
      raise ValueError(f'crop_and_resize needs a length >= 2, got {length}.')
    shortest = max(2, math.ceil(min_fraction * length))
    k_len, k_start = jax.random.split(key)
    crop = jax.random.randint(k_len, (), shortest, length + 1)
    start = jax.random.randint(k_start, (), 0, length - crop + 1)
    pos = start + jnp.arange(length, dtype=jnp.float32) * (
      (crop - 1) / (length - 1)
    )
    lo = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, length - 2)
    w = (pos - lo).reshape((length,) + (1,) * (x.ndim - 1))
    out = x[lo] * (1 - w) + x[lo + 1] * w
    return out.astype(x.dtype)

  return augment


def compose(*augment_fns: AugmentFn) -> AugmentFn:
  """Applies ``augment_fns`` in order, each with its own key.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.training import compose, random_scale, random_shift
    >>> aug = compose(random_shift(0), random_scale(3.0, 3.0))
    >>> aug(jax.random.key(0), jnp.ones(2)).tolist()
    [3.0, 3.0]
  """
  if not augment_fns or not all(callable(f) for f in augment_fns):
    raise ValueError('`compose` needs one or more augment functions.')

  def augment(key, x):
    keys = jax.random.split(key, len(augment_fns))
    for k, f in zip(keys, augment_fns, strict=True):
      x = f(k, x)
    return x

  return augment


def batch_augmentation(augment_fn: AugmentFn, multiplicity: int):
  r"""Hoffer et al. (2019)'s batch augmentation, as a ``batch_transform``.

  Each example of the drawn batch :math:`B` is repeated :math:`M` times,
  each copy with its own augmentation, and the step trains on the
  :math:`M|B|` examples at once: the batch grows :math:`M`-fold, the number
  of steps (and so the learning-rate schedule) stays,

  .. math::
    g_t = \frac{1}{M|B|} \sum_{x \in B} \sum_{m=1}^{M}
    \nabla_\theta \ell\big(a_{t,x,m}(x), y; \theta\big).

  Pass it as ``batch_transform`` to `optax_zoo.training.train`,
  `train_seeds` or `make_train_fn`; it composes with any optimizer. With
  :math:`M = 1` it is plain training on augmented data. Copies are laid out
  example-major (the :math:`M` copies of an example are adjacent); the
  paper leaves the layout open, and it changes nothing but BatchNorm's
  batch statistics, which see all :math:`M|B|` examples.

  Args:
    augment_fn: ``augment_fn(key, x) -> x`` for one example (see
      `compose`).
    multiplicity: :math:`M`, an integer >= 1.

  Returns:
    ``batch_transform(ctx, x, y) -> (x_aug, y_aug)`` with ``x_aug`` of shape
    ``(M * batch, ...)``.

  Example:
    >>> import optax
    >>> from flax import nnx
    >>> from optax_zoo.training import (
    ...   MLP, batch_augmentation, digits, random_shift, train)
    >>> result = train(MLP(64, (32,), rngs=nnx.Rngs(0)), optax.adam(1e-2),
    ...   digits(), steps=50, batch_transform=batch_augmentation(
    ...     random_shift(1), multiplicity=4))
    >>> result.history.final_accuracy > 0.7
    True

  References:
    Hoffer, Ben-Nun, Hubara, Giladi, Hoefler & Soudry, *Augment your
    batch: better training with larger batches* (arXiv:1901.09335, 2019;
    CVPR 2020 as *Augment your batch: improving generalization through
    instance repetition*).
  """
  if not callable(augment_fn):
    raise ValueError(
      f'`augment_fn` must be callable, got {type(augment_fn).__name__}.'
    )
  v.check_int('multiplicity', multiplicity, minimum=1)

  def transform(ctx, x, y):
    n = x.shape[0]
    keys = jax.random.split(ctx.key, n * multiplicity)
    x_rep = jnp.repeat(x, multiplicity, axis=0)
    return jax.vmap(augment_fn)(keys, x_rep), jnp.repeat(y, multiplicity)

  return transform
