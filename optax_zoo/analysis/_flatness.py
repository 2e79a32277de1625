"""Flatness measures: SAM (m-)sharpness, average sharpness, local energy.

Each measure compares the data-set loss at perturbed parameters with the loss
at the parameters themselves. ``loss_fn(params, batch)`` is a batch mean and
``batches`` a pytree whose leaves stack equal batches along a leading axis,
``(num_batches, batch_size, ...)``; the data-set loss is the mean over that
axis, taken with `jax.lax.map` (and its gradient with `jax.lax.scan`), so a
data set is traversed inside one compiled program. (The curvature tools take
an iterable of batches instead; stack one with
``jax.tree.map(lambda *xs: jnp.stack(xs), *batch_list)``.)

A non-finite gradient or loss gives a NaN measure, never a flat one.
Low-precision parameters are perturbed and measured in float32 (the model
runs in their dtype).

Every measure works on the flattened parameter vector
(`jax.flatten_util.ravel_pytree`), so any pytree (a Flax NNX ``nnx.State``
included) works, and every one is jittable: the integer options (``steps``,
``m``, ``num_samples``) are static, the rest may be traced.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from optax_zoo._src import validation as v

__all__ = [
  'Flatness',
  'average_sharpness',
  'local_energy',
  'sam_sharpness',
]


class Flatness(NamedTuple):
  """A flatness measure and everything it was measured with.

  The three measures return this one tuple; an option a measure does not
  have is None. All fields are arrays, numbers, booleans or None, so the
  tuple can leave a `jax.jit`.

  Attributes:
    value: the measure, ``perturbed_loss - base_loss``.
    base_loss: the loss at the parameters: the data-set mean, or with ``m``
      the mean over the chunks of the chunk losses (equal for a mean loss).
    perturbed_loss: the mean perturbed loss (the worst case found for
      `sam_sharpness`, the mean over noise draws otherwise).
    stderr: the standard error of ``value`` over the noise draws,
      ``std(ddof=1) / sqrt(num_samples)`` (NaN for one draw); None for
      `sam_sharpness`, which is deterministic given its start.
    rho: the radius of the perturbation ball (`sam_sharpness`).
    sigma: the noise scale (`average_sharpness`, `local_energy`).
    adaptive: whether the ball or the noise was scaled by ``|w|`` (None for
      `local_energy`, whose noise is always scaled by ``w``).
    eta: ASAM's offset in ``T_w = |w| + eta`` when adaptive.
    m: the examples per worst-case perturbation; None for one perturbation
      of the whole data set.
    steps: the ascent steps (`sam_sharpness`).
    step_size: the ascent step length in the (scaled) ball.
    num_samples: the noise draws.
    num_batches: the batches (the leading axis of ``batches``).
    batch_size: the examples per batch (their second axis).
    key_data: ``jax.random.key_data(key)`` of the key used, or None.
  """

  value: jax.Array
  base_loss: jax.Array
  perturbed_loss: jax.Array
  stderr: jax.Array | None
  rho: Any
  sigma: Any
  adaptive: bool | None
  eta: Any
  m: int | None
  steps: int | None
  step_size: Any
  num_samples: int | None
  num_batches: int
  batch_size: int
  key_data: jax.Array | None


def _batch_shape(batches: Any) -> tuple[int, int]:
  """``(num_batches, batch_size)`` of stacked batches, or ValueError."""
  leaves = jax.tree.leaves(batches)
  if not leaves:
    raise ValueError('`batches` must hold at least one array, got none.')
  shapes = [jnp.shape(x) for x in leaves]
  if any(len(s) < 2 for s in shapes):
    raise ValueError(
      '`batches` must stack batches along a leading axis: every leaf needs '
      f'shape (num_batches, batch_size, ...), got shapes {shapes}. Stack a '
      'list of batches with jax.tree.map(lambda *xs: jnp.stack(xs), *list).'
    )
  if len({s[0] for s in shapes}) != 1:
    raise ValueError(
      '`batches` must have a common leading axis (the number of batches), '
      f'got shapes {shapes}.'
    )
  if len({s[1] for s in shapes}) != 1:
    raise ValueError(
      '`batches` must have a common batch axis (the second), got shapes '
      f'{shapes}.'
    )
  if shapes[0][0] < 1 or shapes[0][1] < 1:
    raise ValueError(f'`batches` must not be empty, got shapes {shapes}.')
  return int(shapes[0][0]), int(shapes[0][1])


def _check_key(key: Any) -> jax.Array:
  if not isinstance(key, jax.Array):
    raise ValueError(f'`key` must be a jax.random key, got {key!r}.')
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key
  return jax.random.wrap_key_data(key)


def _check_m(m: Any, batch_size: int) -> None:
  if m is None:
    return
  v.check_int('m', m, minimum=1)
  if batch_size % m:
    raise ValueError(f'`m` must divide the batch size {batch_size}, got {m!r}.')


def _chunks(batches: Any, m: int) -> Any:
  """Cuts every batch into consecutive chunks of ``m`` examples."""
  return jax.tree.map(lambda x: x.reshape((-1, m, *x.shape[2:])), batches)


def _mean_loss(loss_fn, params, batches):
  return jnp.mean(jax.lax.map(lambda b: loss_fn(params, b), batches))


def _mean_value_and_grad(loss_fn, unravel, flat, batches):
  """Data-set mean loss and flat gradient, accumulated batch by batch."""
  count = jax.tree.leaves(batches)[0].shape[0]

  def body(acc, batch):
    value, grad = jax.value_and_grad(lambda x: loss_fn(unravel(x), batch))(flat)
    return (acc[0] + value, acc[1] + grad), None

  init = (jnp.zeros((), flat.dtype), jnp.zeros_like(flat))
  (value, grad), _ = jax.lax.scan(body, init, batches)
  return value / count, grad / count


def _unit(x):
  """``x / ||x||``; 0 for a zero ``x``; NaN for a non-finite one (a NaN
  gradient must not read as a flat point)."""
  norm = jnp.linalg.norm(x)
  safe = jnp.where(norm > 0, norm, 1)
  return jnp.where(jnp.isfinite(norm), x / safe, jnp.nan)


def _project(u, rho):
  norm = jnp.linalg.norm(u)
  scale = jnp.minimum(1, rho / jnp.where(norm > 0, norm, 1))
  return u * jnp.where(jnp.isfinite(norm), scale, jnp.nan)


def _ravel(params):
  """The flat parameter vector, at least float32, and its unravel.

  The measures add perturbations of size ``rho`` or ``sigma`` and sum losses
  over batches: in bfloat16 both would round away. ``unravel`` casts back
  to the parameters' dtypes, so the model runs as it trains.
  """
  flat, unravel = ravel_pytree(params)
  return flat.astype(jnp.promote_types(flat.dtype, jnp.float32)), unravel


def _ascent(value_and_grad, flat, scale, rho, step_size, u0, steps):
  """Projected normalized gradient ascent on ``u`` in the rho-ball.

  The perturbation is ``e = scale * u``, so the gradient in ``u`` is
  ``scale * g(w + e)``. Returns the largest loss over the iterates after
  the start.
  """

  def step(carry, _):
    u, grad, best = carry
    u = _project(u + step_size * _unit(scale * grad), rho)
    value, grad = value_and_grad(flat + scale * u)
    return (u, grad, jnp.maximum(best, value)), None

  grad0 = value_and_grad(flat + scale * u0)[1]
  init = (u0, grad0, jnp.array(-jnp.inf, flat.dtype))
  (_, _, best), _ = jax.lax.scan(step, init, None, length=steps)
  return best


def _random_start(key, flat, rho):
  """A Gaussian direction on the sphere of radius rho, in ``u``."""
  return rho * _unit(jax.random.normal(key, flat.shape, flat.dtype))


@functools.partial(
  jax.jit, static_argnames=('loss_fn', 'steps', 'adaptive', 'm', 'random')
)
def _sam_impl(
  loss_fn,
  params,
  batches,
  rho,
  step_size,
  eta,
  key,
  *,
  steps,
  adaptive,
  m,
  random,
):
  flat, unravel = _ravel(params)
  dtype = flat.dtype
  rho = jnp.asarray(rho, dtype)
  step_size = jnp.asarray(step_size, dtype)
  scale = jnp.abs(flat) + jnp.asarray(eta, dtype) if adaptive else 1.0

  def start(k):
    if not random:
      return jnp.zeros_like(flat)
    return _random_start(k, flat, rho)

  if m is None:
    base = _mean_loss(loss_fn, params, batches)
    vg = functools.partial(
      _mean_value_and_grad, loss_fn, unravel, batches=batches
    )
    worst = _ascent(vg, flat, scale, rho, step_size, start(key), steps)
    return base, worst
  chunks = _chunks(batches, m)
  count = jax.tree.leaves(chunks)[0].shape[0]
  keys = jax.random.split(key, count)

  def one(inputs):
    chunk, k = inputs
    loss = lambda x: loss_fn(unravel(x), chunk)
    worst = _ascent(
      jax.value_and_grad(loss), flat, scale, rho, step_size, start(k), steps
    )
    return loss(flat), worst

  base, worst = jax.lax.map(one, (chunks, keys))
  return jnp.mean(base), jnp.mean(worst)


def sam_sharpness(
  loss_fn: Callable[[Any, Any], jax.Array],
  params: Any,
  batches: Any,
  *,
  rho: float,
  steps: int = 1,
  step_size: float | None = None,
  adaptive: bool = False,
  eta: float = 0.0,
  m: int | None = None,
  key: jax.Array | None = None,
) -> Flatness:
  """SAM's worst-case sharpness in a rho-ball, and its m-sharpness.

  .. math::
    S_\\rho(w) = \\max_{\\|T_w^{-1} \\epsilon\\|_2 \\le \\rho}
    L(w + \\epsilon) - L(w),

  with :math:`T_w = I` (SAM) or :math:`T_w = \\operatorname{diag}(|w| +
  \\eta)` (``adaptive=True``, ASAM's ball). The maximum is approximated by
  ``steps`` steps of normalized projected gradient ascent on :math:`u =
  T_w^{-1} \\epsilon`, from :math:`u_0 = 0`:

  .. math::
    u_{k+1} = P_\\rho\\Big(u_k + \\alpha \\frac{T_w g_k}{\\|T_w g_k\\|}\\Big),
    \\quad g_k = \\nabla L(w + T_w u_k), \\quad
    P_\\rho(u) = u \\min\\Big(1, \\frac{\\rho}{\\|u\\|}\\Big),

  and the perturbed loss is the largest :math:`L(w + T_w u_k)` over
  :math:`k = 1, \\dots,` ``steps``. With ``step_size`` :math:`\\alpha \\ge
  \\rho` (the default is :math:`2\\rho`) the first step is exactly SAM's
  perturbation :math:`\\epsilon = \\rho g / \\|g\\|`, and ASAM's
  :math:`\\rho T_w^2 g / \\|T_w g\\|` when adaptive, so ``steps=1`` is the
  one-step sharpness. A zero gradient gives a zero perturbation (no NaN);
  at a critical point pass ``key`` to start from a random point on the
  sphere :math:`\\|u_0\\| = \\rho` instead.

  Without ``m`` the loss is the data-set mean over all batches and one
  perturbation is sought for it. With ``m`` (m-sharpness), every batch is cut
  into consecutive chunks of ``m`` examples, the worst case is sought for
  each chunk's loss separately, and the chunk sharpnesses are averaged:

  .. math::
    S^{(m)}_\\rho(w) = \\frac{1}{|\\mathcal C|} \\sum_{C \\in \\mathcal C}
    \\max_{\\|T_w^{-1}\\epsilon\\| \\le \\rho} L_C(w + \\epsilon) - L_C(w).

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar``, a mean over the batch.
    params: any pytree of arrays, for example ``nnx.split(model, nnx.Param,
      ...)[1]``.
    batches: a pytree whose leaves have shape ``(num_batches, batch_size,
      ...)``.
    rho: the ball's radius, > 0.
    steps: ascent steps, >= 1.
    step_size: the step length :math:`\\alpha` in ``u``, > 0; default
      :math:`2\\rho`, the initial step of Andriushchenko et al. (2023). On
      a quadratic it reaches the maximum over the ball to 1e-6 in 10 steps;
      :math:`\\rho / \\text{steps}`, the other common choice, makes the
      whole path at most :math:`\\rho` long and stalls about 1% below it.
    adaptive: use ASAM's scaled ball.
    eta: ASAM's :math:`\\eta`, >= 0.
    m: examples per perturbation, dividing ``batch_size``; None for the
      whole data set.
    key: a `jax.random.key` for a random start; None starts at zero.

  Returns:
    A `Flatness` tuple.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo.analysis import sam_sharpness
    >>> loss_fn = lambda w, b: jnp.mean(0.5 * jnp.sum(w ** 2) + b @ w)
    >>> batches = jnp.array([[[1.0, 0.0], [1.0, 2.0]]])  # 1 batch of 2
    >>> out = sam_sharpness(loss_fn, jnp.zeros(2), batches, rho=0.1)
    >>> round(float(out.value), 4)  # rho * ||g|| + rho ** 2 / 2
    0.1464
    >>> out.num_batches, out.batch_size, out.m
    (1, 2, None)
    >>> out = sam_sharpness(loss_fn, jnp.zeros(2), batches, rho=0.1, m=1)
    >>> round(float(out.value), 4)  # mean of 0.1 * 1 and 0.1 * sqrt(5), + 0.005
    0.1668

  References:
    Foret et al., `Sharpness-Aware Minimization for Efficiently Improving
    Generalization <https://arxiv.org/abs/2010.01412>`_, 2021.

    Kwon et al., `ASAM: Adaptive Sharpness-Aware Minimization
    <https://arxiv.org/abs/2102.11600>`_, 2021.

    Andriushchenko and Flammarion, `Towards Understanding Sharpness-Aware
    Minimization <https://arxiv.org/abs/2206.06232>`_, 2022.

    Andriushchenko et al., `A Modern Look at the Relationship between
    Sharpness and Generalization <https://arxiv.org/abs/2302.07011>`_, 2023
    (tml-epfl/sharpness-vs-generalization, ``sharpness.py``).

  Deviations:
    tml-epfl/sharpness-vs-generalization runs Auto-PGD (momentum 0.75, step
    halving at checkpoints, step ``2 rho`` at first) on each batch, adds
    ``|w|`` to the plain normalized step when adaptive and projects onto the
    ellipsoid in the Euclidean metric by bisection. Here the step is a
    fixed-length normalized step on ``u`` without momentum, which keeps
    ``steps=1`` equal to SAM's and ASAM's perturbations, and the projection
    is onto the ball in ``u`` (the :math:`T_w^{-1}`-scaled metric ASAM
    defines its ball in); like the reference it keeps the worst iterate.
    That code measures each batch separately (here ``m=batch_size``) and
    starts at a random point by default (here with ``key``).
  """
  num_batches, batch_size = _batch_shape(batches)
  v.check_positive('rho', rho)
  v.check_int('steps', steps, minimum=1)
  if step_size is None:
    step_size = 2 * rho
  else:
    v.check_positive('step_size', step_size)
  if not isinstance(adaptive, bool):
    raise ValueError(f'`adaptive` must be a bool, got {adaptive!r}.')
  v.check_non_negative('eta', eta)
  _check_m(m, batch_size)
  random = key is not None
  key = _check_key(key) if random else jax.random.key(0)
  base, worst = _sam_impl(
    loss_fn,
    params,
    batches,
    rho,
    step_size,
    eta,
    key,
    steps=int(steps),
    adaptive=adaptive,
    m=None if m is None else int(m),
    random=random,
  )
  return Flatness(
    value=worst - base,
    base_loss=base,
    perturbed_loss=worst,
    stderr=None,
    rho=rho,
    sigma=None,
    adaptive=adaptive,
    eta=eta if adaptive else None,
    m=m,
    steps=steps,
    step_size=step_size,
    num_samples=None,
    num_batches=num_batches,
    batch_size=batch_size,
    key_data=jax.random.key_data(key) if random else None,
  )


@functools.partial(jax.jit, static_argnames=('loss_fn', 'num_samples', 'noise'))
def _noise_impl(loss_fn, params, batches, sigma, key, *, num_samples, noise):
  flat, unravel = _ravel(params)
  sigma = jnp.asarray(sigma, flat.dtype)
  scale = {'plain': 1.0, 'adaptive': jnp.abs(flat), 'multiplicative': flat}[
    noise
  ]
  base = _mean_loss(loss_fn, params, batches)

  def one(k):
    z = jax.random.normal(k, flat.shape, flat.dtype)
    return _mean_loss(loss_fn, unravel(flat + sigma * scale * z), batches)

  perturbed = jax.lax.map(one, jax.random.split(key, num_samples))
  diffs = perturbed - base
  if num_samples > 1:
    stderr = jnp.std(diffs, ddof=1) / math.sqrt(num_samples)
  else:
    stderr = jnp.array(jnp.nan, flat.dtype)
  return base, jnp.mean(perturbed), jnp.mean(diffs), stderr


def _noise_measure(loss_fn, params, batches, sigma, key, num_samples, noise):
  num_batches, batch_size = _batch_shape(batches)
  v.check_positive('sigma', sigma)
  v.check_int('num_samples', num_samples, minimum=1)
  key = _check_key(key)
  base, perturbed, value, stderr = _noise_impl(
    loss_fn,
    params,
    batches,
    sigma,
    key,
    num_samples=int(num_samples),
    noise=noise,
  )
  return Flatness(
    value=value,
    base_loss=base,
    perturbed_loss=perturbed,
    stderr=stderr,
    rho=None,
    sigma=sigma,
    adaptive=None if noise == 'multiplicative' else noise == 'adaptive',
    eta=None,
    m=None,
    steps=None,
    step_size=None,
    num_samples=num_samples,
    num_batches=num_batches,
    batch_size=batch_size,
    key_data=jax.random.key_data(key),
  )


def average_sharpness(
  loss_fn: Callable[[Any, Any], jax.Array],
  params: Any,
  batches: Any,
  *,
  sigma: float,
  key: jax.Array,
  num_samples: int,
  adaptive: bool = False,
) -> Flatness:
  """Average-case sharpness under Gaussian weight noise.

  .. math::
    S^{avg}_\\sigma(w) = \\mathbb{E}_{z \\sim \\mathcal N(0, I)}
    [L(w + \\sigma z)] - L(w),
    \\qquad \\text{adaptive: } L(w + \\sigma\\, z \\odot |w|),

  estimated with ``num_samples`` draws of :math:`z`, each applied to the
  data-set loss over all batches. For a quadratic it is
  :math:`\\frac{\\sigma^2}{2} \\operatorname{tr} H` (adaptive:
  :math:`\\frac{\\sigma^2}{2} \\sum_i H_{ii} w_i^2`).

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar``, a mean over the batch.
    params: any pytree of arrays.
    batches: a pytree whose leaves have shape ``(num_batches, batch_size,
      ...)``.
    sigma: the noise's standard deviation, > 0.
    key: a `jax.random.key` for the draws.
    num_samples: noise draws, >= 1.
    adaptive: scale the noise by ``|w|`` elementwise.

  Returns:
    A `Flatness` tuple; ``stderr`` is the standard error over the draws.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.analysis import average_sharpness
    >>> loss_fn = lambda w, b: jnp.mean(0.5 * jnp.sum(w ** 2) + b @ w)
    >>> batches = jnp.zeros((2, 4, 3))  # 2 batches of 4, 3 features
    >>> out = average_sharpness(loss_fn, jnp.zeros(3), batches, sigma=0.1,
    ...                         key=jax.random.key(0), num_samples=1000)
    >>> abs(float(out.value) - 0.015) < 4 * float(out.stderr)  # sigma^2 tr/2
    True

  References:
    Keskar et al., `On Large-Batch Training for Deep Learning: Generalization
    Gap and Sharp Minima <https://arxiv.org/abs/1609.04836>`_, 2017.

    Andriushchenko et al., `A Modern Look at the Relationship between
    Sharpness and Generalization <https://arxiv.org/abs/2302.07011>`_, 2023
    (tml-epfl/sharpness-vs-generalization, ``eval_average_sharpness``).

  Deviations:
    The reference draws fresh noise for each batch; here each draw perturbs
    the whole data set, so the value is the sharpness of the data-set loss
    and its standard error is over draws.
  """
  if not isinstance(adaptive, bool):
    raise ValueError(f'`adaptive` must be a bool, got {adaptive!r}.')
  noise = 'adaptive' if adaptive else 'plain'
  return _noise_measure(
    loss_fn, params, batches, sigma, key, num_samples, noise
  )


def local_energy(
  loss_fn: Callable[[Any, Any], jax.Array],
  params: Any,
  batches: Any,
  *,
  sigma: float,
  key: jax.Array,
  num_samples: int,
) -> Flatness:
  """Pittorino et al.'s local energy under multiplicative weight noise.

  .. math::
    \\delta E_\\sigma(w) = \\mathbb{E}_{z \\sim \\mathcal N(0, I)}
    [L(w + \\sigma\\, z \\odot w)] - L(w),

  estimated with ``num_samples`` draws, each applied to the data-set loss.
  The noise is relative to each weight, so the measure does not change when
  a layer's weights are rescaled in a scale-invariant network. For a
  quadratic it is :math:`\\frac{\\sigma^2}{2} \\sum_i H_{ii} w_i^2`.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar``, a mean over the batch.
    params: any pytree of arrays.
    batches: a pytree whose leaves have shape ``(num_batches, batch_size,
      ...)``.
    sigma: the relative noise's standard deviation, > 0.
    key: a `jax.random.key` for the draws.
    num_samples: noise draws, >= 1.

  Returns:
    A `Flatness` tuple; ``stderr`` is the standard error over the draws.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.analysis import local_energy
    >>> loss_fn = lambda w, b: jnp.mean(0.5 * jnp.sum(w ** 2) + b @ w)
    >>> batches = jnp.zeros((1, 2, 3))
    >>> out = local_energy(loss_fn, jnp.array([1.0, 2.0, 0.0]), batches,
    ...                    sigma=0.1, key=jax.random.key(0), num_samples=1000)
    >>> abs(float(out.value) - 0.025) < 4 * float(out.stderr)
    True

  References:
    Pittorino et al., `Entropic gradient descent algorithms and wide flat
    minima <https://arxiv.org/abs/2006.07897>`_, 2021.

  Deviations:
    The paper reports the local energy of the training error; pass a
    ``loss_fn`` returning the error rate for that, or the loss for a smooth
    measure.
  """
  return _noise_measure(
    loss_fn, params, batches, sigma, key, num_samples, 'multiplicative'
  )
