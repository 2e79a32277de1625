"""KOALA: Kalman filtering of the parameters with the loss as measurement.

Both variants need the minibatch loss and an estimate of its noise at every
step, passed as extra update arguments::

  updates, state = tx.update(
    grads, state, params, value=jnp.mean(losses),
    value_sq_mean=jnp.mean(losses**2),
  )

where ``losses`` are the per-example losses of the batch. ``value`` is their
mean, a scalar. ``value_sq_mean`` is the mean of their *squares*: the spread
of the per-example losses about the target loss 0, which is how the official
training loop feeds the filter's measurement noise (``loss_var =
mean(loss ** 2)``). It is not the variance about their mean
(``jnp.var(losses)`` gives another, wrong filter), and it is not needed when
the noise ``r`` is fixed. ``value_variance``, its former name, still works
with a `DeprecationWarning`.

Non-finite gradients or losses are not sanitized: they give NaN updates and a
NaN state (the scalar covariance is shared by all leaves).
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import tree_utils
from optax_zoo._src import validation as v

__all__ = [
  'KoalaMState',
  'KoalaVState',
  'koala_m',
  'koala_v',
  'scale_by_koala_m',
  'scale_by_koala_v',
]

# The reference skips leaves whose gradient norm is below this.
_MIN_GRAD_NORM = 1e-9
# Decay of the parameter average and of the state-noise estimate in KOALA-M's
# reference; fixed there, not hyperparameters.
_EMA_DECAY = 0.9


class KoalaVState(NamedTuple):
  """State of `scale_by_koala_v`.

  Attributes:
    count: steps taken, int32.
    sigma: the posterior state variance :math:`P_k` (a float32 scalar).
    r: the measurement noise :math:`R` used last (a float32 scalar).
  """

  count: jax.Array
  sigma: jax.Array
  r: jax.Array


class KoalaMState(NamedTuple):
  """State of `scale_by_koala_m`.

  Attributes:
    count: steps taken, int32.
    velocity: the velocities, predicted for the next step, in ``mu_dtype``.
    params_ema: moving average of the updated parameters, which measures
      the state noise.
    cov: the predicted 2x2 covariance of (weight, velocity), float32.
    q_w: the state-noise estimate of the weights (a float32 scalar).
    r: the measurement noise :math:`R` used last (a float32 scalar).
  """

  count: jax.Array
  velocity: optax.Updates
  params_ema: optax.Updates
  cov: jax.Array
  q_w: jax.Array
  r: jax.Array


def _sq_norm(x: jax.Array) -> jax.Array:
  return jnp.sum(jnp.square(x.astype(jnp.float32)))


def _loss_arguments(method, value, value_sq_mean, value_variance):
  """Checks the extra update arguments; resolves the deprecated name."""
  call = (
    'tx.update(grads, state, params, value=jnp.mean(losses), '
    'value_sq_mean=jnp.mean(losses**2))'
  )
  if value is None:
    raise ValueError(
      f'{method} needs the extra update argument `value`, the batch loss '
      f'(the mean of the per-example losses): {call}.'
    )
  if value_sq_mean is None and value_variance is not None:
    warnings.warn(
      f'{method}: `value_variance` is deprecated, pass `value_sq_mean`: the '
      'mean of the squared per-example losses (not their variance).',
      DeprecationWarning,
      stacklevel=3,
    )
    value_sq_mean = value_variance
  for name, x in (('value', value), ('value_sq_mean', value_sq_mean)):
    if x is not None and jnp.ndim(x) != 0:
      raise ValueError(
        f'{method}: `{name}` must be a scalar, the mean over the batch, got '
        f'shape {jnp.shape(x)}: {call}.'
      )
  return value, value_sq_mean


def _measurement_noise(method, state_r, r, alpha_r, value_sq_mean):
  """The filter's R: fixed, or a moving average of ``value_sq_mean``."""
  if r is not None:
    return jnp.asarray(r, jnp.float32)
  if value_sq_mean is None:
    raise ValueError(
      f'{method} with r=None needs the extra update argument '
      '`value_sq_mean` in update(): the mean of the squared per-example '
      'losses, jnp.mean(losses**2).'
    )
  sq_mean = jnp.asarray(value_sq_mean, jnp.float32)
  return alpha_r * state_r + (1 - alpha_r) * sq_mean


def _observe(grads, params, value, weight_decay, mask):
  """Per leaf: decayed gradient, its squared norm, loss, and participation.

  The loss includes the leaf's L2 term (leaves outside ``mask`` have none);
  a leaf takes part unless its raw gradient is near zero (the reference
  skips those).
  """
  value = jnp.asarray(value, jnp.float32)
  decay = jax.tree.map(
    lambda m: weight_decay * float(m), tree_utils.full_mask(mask, params)
  )
  decayed = jax.tree.map(lambda g, p, d: g + d * p, grads, params, decay)
  sq_norms = jax.tree.map(_sq_norm, decayed)
  losses = jax.tree.map(
    lambda p, d: value + 0.5 * d * _sq_norm(p), params, decay
  )
  # `not <` rather than `>=`, so that a NaN gradient takes part.
  active = jax.tree.map(
    lambda g: jnp.logical_not(jnp.sqrt(_sq_norm(g)) < _MIN_GRAD_NORM), grads
  )
  return decayed, sq_norms, losses, active


def _innovations(sq_norms, active, prior_var, r_k):
  """Per leaf ``S = P |g|^2 + R``; the largest ``|g|^2 / S`` taking part.

  ``g`` is the decayed gradient; with no leaf taking part the largest is 0.
  """
  s = jax.tree.map(lambda n: prior_var * n + r_k, sq_norms)
  ratios = jax.tree.map(
    lambda n, s, a: jnp.where(a, n / s, 0.0), sq_norms, s, active
  )
  return s, jnp.max(jnp.stack(jax.tree.leaves(ratios)))


def _check_common(r, alpha_r, weight_decay):
  if r is not None:
    v.check_non_negative('r', r)
  v.check_betas(alpha_r=alpha_r)
  v.check_weight_decay(weight_decay)


def scale_by_koala_v(
  sigma: jax.typing.ArrayLike = 1.0,
  q: jax.typing.ArrayLike = 1.0,
  r: jax.typing.ArrayLike | None = None,
  alpha_r: jax.typing.ArrayLike = 0.9,
  weight_decay: jax.typing.ArrayLike = 0.0,
  *,
  mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""KOALA-V's scaling (Davtyan et al., 2022), without a learning rate.

  A Kalman filter on the parameters :math:`x` with a scalar covariance
  :math:`P_k I`, random-walk dynamics and the minibatch loss :math:`L_k` as
  the measurement of a target loss 0. Each parameter leaf :math:`l` (a layer)
  is updated with its own gain; the covariance update uses the largest:

  .. math::
    P_{k|k-1} = P_{k-1} + Q,\quad
    R_k = \alpha_R R_{k-1} + (1-\alpha_R) V_k,\ R_0 = 1,\\
    \tilde g_l = g_l + \lambda x_l,\quad
    S_l = P_{k|k-1} \|\tilde g_l\|^2 + R_k,\quad
    u_l = \frac{P_{k|k-1} (L_k + \tfrac\lambda2 \|x_l\|^2)}{S_l}\, g_l,\\
    P_k = P_{k|k-1} - P_{k|k-1}^2 \max_l \|\tilde g_l\|^2 / S_l.

  :math:`V_k` is ``value_sq_mean``; a fixed ``r`` replaces :math:`R_k`.
  Leaves with :math:`\|g_l\| < 10^{-9}` are skipped, as in the reference.

  Args:
    sigma: initial state variance :math:`P_0`, >= 0 (the official training
      script uses 0.1).
    q: state noise :math:`Q`, >= 0.
    r: fixed measurement noise, >= 0, or None to estimate it online.
    alpha_r: decay of the online estimate of :math:`R`, in [0, 1).
    weight_decay: :math:`\lambda`, >= 0: L2 on the loss and in the gain.
    mask: the leaves that decay: a tree of bools (or a prefix of one), or a
      function of the params returning it, as `optax.masked`; None: all.

  Returns:
    An `optax.GradientTransformationExtraArgs` whose ``update`` takes the
    extra arguments ``value`` (the batch loss, a scalar: the mean of the
    per-example losses) and ``value_sq_mean`` (a scalar: the mean of the
    squared per-example losses, not their variance; unused with a fixed
    ``r``). A missing ``value`` or a non-scalar one raises a `ValueError`.

  Example:
    >>> import jax, jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.scale_by_koala_v(sigma=1.0, q=0.0, r=0.0)
    >>> params = jnp.array([1.0, -2.0])
    >>> grads = 2 * params
    >>> updates, _ = tx.update(
    ...   grads, tx.init(params), params, value=jnp.sum(params**2))
    >>> updates  # r = 0: the Polyak step L g / |g|^2
    Array([ 0.5, -1. ], dtype=float32)

  References:
    Davtyan et al., `KOALA: A Kalman Optimization Algorithm with Loss
    Adaptivity <https://arxiv.org/abs/2107.03331>`_, AAAI 2022; reference code
    Araachie/koala, ``koala.py`` (``VanillaKOALA``).

  Deviations: none in the math. As in the reference, the step is along the
  raw gradient :math:`g_l` while the gain sees the decayed one
  :math:`\tilde g_l` (KOALA-M steps along :math:`\tilde g_l`). The
  reference's ``predict()`` (:math:`P \mathrel{+}= Q`), called before the
  forward pass, happens at the start of ``update``; it does not move the
  parameters, so the result is the same.
  """
  v.check_non_negative('sigma', sigma)
  v.check_non_negative('q', q)
  _check_common(r, alpha_r, weight_decay)

  def init_fn(params):
    del params
    return KoalaVState(
      count=jnp.zeros([], jnp.int32),
      sigma=jnp.asarray(sigma, jnp.float32),
      r=jnp.asarray(1.0 if r is None else r, jnp.float32),
    )

  def update_fn(
    updates,
    state,
    params=None,
    *,
    value=None,
    value_sq_mean=None,
    value_variance=None,
    **extra_args,
  ):
    del extra_args
    if params is None:
      raise ValueError('koala_v needs `params` in update().')
    value, value_sq_mean = _loss_arguments(
      'koala_v', value, value_sq_mean, value_variance
    )
    r_k = _measurement_noise('koala_v', state.r, r, alpha_r, value_sq_mean)
    sigma_k = state.sigma + q
    _, sq_norms, losses, active = _observe(
      updates, params, value, weight_decay, mask
    )
    s, hh = _innovations(sq_norms, active, sigma_k, r_k)
    out = jax.tree.map(
      lambda g, loss, s, a: (jnp.where(a, loss * sigma_k / s, 0.0) * g).astype(
        g.dtype
      ),
      updates,
      losses,
      s,
      active,
    )
    return out, KoalaVState(
      count=optax.safe_increment(state.count),
      sigma=sigma_k - sigma_k**2 * hh,
      r=r_k,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def koala_v(
  learning_rate: optax.ScalarOrSchedule,
  sigma: jax.typing.ArrayLike = 1.0,
  q: jax.typing.ArrayLike = 1.0,
  r: jax.typing.ArrayLike | None = None,
  alpha_r: jax.typing.ArrayLike = 0.9,
  weight_decay: jax.typing.ArrayLike = 0.0,
  *,
  mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""KOALA-V (Davtyan et al., 2022): the vanilla Kalman optimizer.

  :math:`x_{k+1} = x_k - \eta_k u_k` with :math:`u_k` from
  `scale_by_koala_v`. The learning rate multiplies the Kalman gain; the
  reference's default and base value is 1, decayed by a schedule.

  Args:
    learning_rate: :math:`\eta`, a float >= 0 or a schedule (official
      default 1).
    sigma: initial state variance, >= 0.
    q: state noise, >= 0.
    r: fixed measurement noise, >= 0, or None to estimate it online.
    alpha_r: decay of the online estimate of the measurement noise, in
      [0, 1).
    weight_decay: L2 on the loss and in the gain, >= 0.
    mask: the leaves that decay, as in `scale_by_koala_v`; None: all.

  Returns:
    An `optax.GradientTransformationExtraArgs`; ``update`` takes the extra
    arguments ``value``, the batch loss (the mean of the per-example losses,
    a scalar), and ``value_sq_mean``, the mean of the squared per-example
    losses (a scalar, not their variance; unused with a fixed ``r``):
    ``tx.update(grads, state, params, value=jnp.mean(losses),
    value_sq_mean=jnp.mean(losses**2))``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.koala_v(1.0)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> loss_fn = lambda p: jnp.sum(p**2)
    >>> for _ in range(50):
    ...   loss, grads = jax.value_and_grad(loss_fn)(params)
    ...   updates, state = tx.update(
    ...     grads, state, params, value=loss, value_sq_mean=loss**2)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(loss_fn(params) < 1e-3)
    True

  References:
    Davtyan et al., `KOALA: A Kalman Optimization Algorithm with Loss
    Adaptivity <https://arxiv.org/abs/2107.03331>`_, AAAI 2022; reference code
    Araachie/koala, ``koala.py`` (``VanillaKOALA``).
  """
  v.check_learning_rate(learning_rate)
  return optax.chain(
    scale_by_koala_v(sigma, q, r, alpha_r, weight_decay, mask=mask),
    optax.scale_by_learning_rate(learning_rate),
  )


def scale_by_koala_m(
  sw: jax.typing.ArrayLike = 0.1,
  sc: jax.typing.ArrayLike = 0.0,
  sv: jax.typing.ArrayLike = 0.1,
  a: jax.typing.ArrayLike = 0.9,
  qw: jax.typing.ArrayLike = 1e-2,
  qv: jax.typing.ArrayLike = 1e-2,
  r: jax.typing.ArrayLike | None = None,
  alpha_r: jax.typing.ArrayLike = 0.9,
  weight_decay: jax.typing.ArrayLike = 0.0,
  *,
  learning_rate: optax.ScalarOrSchedule = 1.0,
  mu_dtype: Any | None = None,
  mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""KOALA-M's step (Davtyan et al., 2022): Kalman filter with momentum.

  The filter's state is each weight :math:`x` and its velocity :math:`w`,
  with dynamics :math:`x \leftarrow x + w,\ w \leftarrow a w` (matrix
  :math:`F`) and one 2x2 covariance :math:`P` shared by all weights. At step
  :math:`k`, with the gradient taken at the predicted weights, each leaf
  :math:`l` is updated with the gain :math:`K = P_{:,0} / S_l`:

  .. math::
    \tilde g_l = g_l + \lambda x_l,\quad
    S_l = P_{00} \|\tilde g_l\|^2 + R_k,\quad
    \begin{pmatrix} x_l \\ w_l \end{pmatrix} \leftarrow
    \begin{pmatrix} x_l \\ w_l \end{pmatrix}
    - \eta_k \frac{L_k + \tfrac\lambda2 \|x_l\|^2}{S_l}
    \begin{pmatrix} P_{00} \\ P_{10} \end{pmatrix} \tilde g_l,\\
    P \leftarrow P - \max_l \frac{\|\tilde g_l\|^2}{S_l}\,
    P_{:,0} P_{:,0}^\top,

  then the next prediction: :math:`x \leftarrow x + w`,
  :math:`w \leftarrow a w`, :math:`P \leftarrow F P F^\top +
  \mathrm{diag}(q_w, q_v)`, where :math:`q_w` is a moving average (decay 0.9,
  started at ``qw``) of :math:`\|\bar x - x\| / n`, the distance of the
  weights from their own moving average :math:`\bar x` (decay 0.9) over the
  number of weights :math:`n`. :math:`R_k` is estimated as in
  `scale_by_koala_v`.

  The reference calls ``predict()`` before the forward pass. Here the
  prediction ends each ``update`` (and ``init`` makes the first one), so the
  ``params`` the loop holds are always the predicted weights, where the
  gradient must be taken, and the returned update moves them from one
  prediction to the next. The output is the *negative* of that move, already
  scaled by the learning rate (see Deviations); `koala_m` negates it.

  Args:
    sw: initial weight variance :math:`P_{00}`, >= 0.
    sc: initial weight-velocity covariance :math:`P_{01}`, with
      :math:`s_c^2 \le s_w s_v`.
    sv: initial velocity variance :math:`P_{11}`, >= 0.
    a: velocity decay, in [0, 1).
    qw: initial state noise of the weights, >= 0.
    qv: state noise of the velocities, >= 0.
    r: fixed measurement noise, >= 0, or None to estimate it online.
    alpha_r: decay of the online estimate of :math:`R`, in [0, 1).
    weight_decay: :math:`\lambda`, >= 0: L2 on the loss and the gradient.
    learning_rate: :math:`\eta_k`, a float >= 0 or a schedule, which scales
      the gain of both weights and velocities.
    mu_dtype: dtype of the velocities (None: the params' dtype), floating.
    mask: the leaves that decay, as in `scale_by_koala_v`; None: all.

  Returns:
    An `optax.GradientTransformationExtraArgs` whose ``update`` takes the
    extra arguments ``value`` and ``value_sq_mean`` (as
    `scale_by_koala_v`).

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.scale_by_koala_m(r=1.0)
    >>> params = {'w': jnp.ones((2, 3)), 'b': jnp.zeros(3)}
    >>> updates, state = tx.update(
    ...   params, tx.init(params), params, value=jnp.float32(1.0))
    >>> state.cov.shape, state.velocity['w'].shape
    ((2, 2), (2, 3))

  References:
    Davtyan et al., `KOALA: A Kalman Optimization Algorithm with Loss
    Adaptivity <https://arxiv.org/abs/2107.03331>`_, AAAI 2022; reference code
    Araachie/koala, ``koala.py`` (``MomentumKOALA``).

  Deviations: the learning rate is an argument here, not a separate
  `optax.scale_by_learning_rate`: it scales the velocities and the weights
  whose average sets :math:`q_w`, so it cannot be applied after the fact.
  The covariance is float32 (float64 in the reference).
  """
  v.check_non_negative('sw', sw)
  v.check_non_negative('sv', sv)
  if not any(isinstance(x, jax.core.Tracer) for x in (sw, sc, sv)):
    v.check_in_range(
      'sc',
      sc,
      -math.sqrt(float(sw) * float(sv)),
      math.sqrt(float(sw) * float(sv)),
      high_inclusive=True,
    )
  v.check_in_range('a', a, 0.0, 1.0)
  v.check_non_negative('qw', qw)
  v.check_non_negative('qv', qv)
  _check_common(r, alpha_r, weight_decay)
  v.check_learning_rate(learning_rate)
  v.check_float_dtype('mu_dtype', mu_dtype)

  def predict(cov, q_w, params_ema, params):
    """The state-noise estimate and the predicted covariance."""
    dist = jnp.sqrt(
      sum(
        jax.tree.leaves(
          jax.tree.map(lambda e, p: _sq_norm(e - p), params_ema, params)
        )
      )
    )
    size = sum(p.size for p in jax.tree.leaves(params))
    q_w = _EMA_DECAY * q_w + (1 - _EMA_DECAY) * dist / size
    f = jnp.array([[1.0, 1.0], [0.0, a]], jnp.float32)
    noise = jnp.diag(jnp.stack([q_w, jnp.asarray(qv, jnp.float32)]))
    # Full float32: the default matmul precision of accelerators is lower.
    matmul = functools.partial(jnp.matmul, precision='highest')
    return matmul(f, matmul(cov, f.T)) + noise, q_w

  def init_fn(params):
    params_ema = optax.tree.zeros_like(params)
    cov0 = jnp.array([[sw, sc], [sc, sv]], jnp.float32)
    cov, q_w = predict(cov0, jnp.asarray(qw, jnp.float32), params_ema, params)
    return KoalaMState(
      count=jnp.zeros([], jnp.int32),
      velocity=optax.tree.zeros_like(params, dtype=mu_dtype),
      params_ema=params_ema,
      cov=cov,
      q_w=q_w,
      r=jnp.asarray(1.0 if r is None else r, jnp.float32),
    )

  def update_fn(
    updates,
    state,
    params=None,
    *,
    value=None,
    value_sq_mean=None,
    value_variance=None,
    **extra_args,
  ):
    del extra_args
    if params is None:
      raise ValueError('koala_m needs `params` in update().')
    value, value_sq_mean = _loss_arguments(
      'koala_m', value, value_sq_mean, value_variance
    )
    lr = (
      learning_rate(state.count) if callable(learning_rate) else learning_rate
    )
    r_k = _measurement_noise('koala_m', state.r, r, alpha_r, value_sq_mean)
    cov = state.cov
    decayed, sq_norms, losses, active = _observe(
      updates, params, value, weight_decay, mask
    )
    s, hh = _innovations(sq_norms, active, cov[0, 0], r_k)

    f32 = lambda x: x.astype(jnp.float32)
    gain = jax.tree.map(
      lambda loss, s, a: jnp.where(a, lr * loss / s, 0.0), losses, s, active
    )
    step = jax.tree.map(lambda k, g: k * cov[0, 0] * f32(g), gain, decayed)
    corrected = jax.tree.map(lambda p, st: f32(p) - st, params, step)
    vel = jax.tree.map(
      lambda w, k, g: f32(w) - k * cov[1, 0] * f32(g),
      state.velocity,
      gain,
      decayed,
    )
    ema = jax.tree.map(
      lambda e, c, a: jnp.where(a, _EMA_DECAY * e + (1 - _EMA_DECAY) * c, e),
      state.params_ema,
      corrected,
      active,
    )
    cov = cov - hh * jnp.outer(cov[:, 0], cov[:, 0])
    cov, q_w = predict(cov, state.q_w, ema, corrected)
    # Moving from this prediction to the next: the correction, then x += w.
    out = jax.tree.map(
      lambda st, w, p: (st - w).astype(p.dtype), step, vel, params
    )
    return out, KoalaMState(
      count=optax.safe_increment(state.count),
      velocity=optax.tree.cast_like(
        jax.tree.map(lambda w: a * w, vel), state.velocity
      ),
      params_ema=optax.tree.cast_like(ema, state.params_ema),
      cov=cov,
      q_w=q_w,
      r=r_k,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def koala_m(
  learning_rate: optax.ScalarOrSchedule,
  sw: jax.typing.ArrayLike = 0.1,
  sc: jax.typing.ArrayLike = 0.0,
  sv: jax.typing.ArrayLike = 0.1,
  a: jax.typing.ArrayLike = 0.9,
  qw: jax.typing.ArrayLike = 1e-2,
  qv: jax.typing.ArrayLike = 1e-2,
  r: jax.typing.ArrayLike | None = None,
  alpha_r: jax.typing.ArrayLike = 0.9,
  weight_decay: jax.typing.ArrayLike = 0.0,
  *,
  mu_dtype: Any | None = None,
  mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""KOALA-M (Davtyan et al., 2022): the Kalman optimizer with momentum.

  `scale_by_koala_m` with its learning rate, negated into an update.

  Args:
    learning_rate: :math:`\eta`, a float >= 0 or a schedule, multiplying
      the Kalman gain (official default 1).
    sw: initial weight variance, >= 0.
    sc: initial weight-velocity covariance, with ``sc**2 <= sw * sv``.
    sv: initial velocity variance, >= 0.
    a: velocity decay, in [0, 1).
    qw: initial state noise of the weights, >= 0.
    qv: state noise of the velocities, >= 0.
    r: fixed measurement noise, >= 0, or None to estimate it online.
    alpha_r: decay of the online estimate of the measurement noise, in
      [0, 1).
    weight_decay: L2 on the loss and the gradient, >= 0.
    mu_dtype: dtype of the velocities (None: the params' dtype), floating.
    mask: the leaves that decay, as in `scale_by_koala_v`; None: all.

  Returns:
    An `optax.GradientTransformationExtraArgs`; ``update`` takes the extra
    arguments ``value``, the batch loss (the mean of the per-example losses,
    a scalar), and ``value_sq_mean``, the mean of the squared per-example
    losses (a scalar, not their variance; unused with a fixed ``r``):
    ``tx.update(grads, state, params, value=jnp.mean(losses),
    value_sq_mean=jnp.mean(losses**2))``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.koala_m(1.0)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> loss_fn = lambda p: jnp.sum(p**2)
    >>> for _ in range(50):
    ...   loss, grads = jax.value_and_grad(loss_fn)(params)
    ...   updates, state = tx.update(
    ...     grads, state, params, value=loss, value_sq_mean=loss**2)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(loss_fn(params) < 1e-3)
    True

  References:
    Davtyan et al., `KOALA: A Kalman Optimization Algorithm with Loss
    Adaptivity <https://arxiv.org/abs/2107.03331>`_, AAAI 2022; reference code
    Araachie/koala, ``koala.py`` (``MomentumKOALA``).

  Deviations: as `scale_by_koala_m`.
  """
  return optax.chain(
    scale_by_koala_m(
      sw,
      sc,
      sv,
      a,
      qw,
      qv,
      r,
      alpha_r,
      weight_decay,
      learning_rate=learning_rate,
      mu_dtype=mu_dtype,
      mask=mask,
    ),
    optax.scale(-1.0),
  )
