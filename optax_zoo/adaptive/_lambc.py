"""LAMB (optax's implementation, validated) and LAMBC, LAMB with the trust
ratio clipped to a bound.

Non-finite gradients: not sanitized; a NaN or inf gradient gives a NaN trust
ratio, hence a NaN update for its whole layer, and a poisoned state.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v

__all__ = ['lamb', 'lambc', 'scale_by_lambc']


def _scale_by_unbiased_adam(
  b1: jax.typing.ArrayLike,
  b2: jax.typing.ArrayLike,
  eps: jax.typing.ArrayLike,
  mu_dtype: Any | None,
) -> optax.GradientTransformation:
  """Adam's direction without bias correction, as the LAMBC code has it."""

  def init_fn(params):
    return optax.ScaleByAdamState(
      count=jnp.zeros([], jnp.int32),
      mu=optax.tree.zeros_like(params, dtype=mu_dtype),
      nu=optax.tree.zeros_like(params),
    )

  def update_fn(updates, state, params=None):
    del params
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
    out = jax.tree.map(
      lambda g, m, n: (m / (jnp.sqrt(n) + eps)).astype(g.dtype),
      updates,
      mu,
      nu,
    )
    return out, optax.ScaleByAdamState(
      count=optax.safe_increment(state.count),
      mu=optax.tree.cast_like(mu, state.mu),
      nu=optax.tree.cast_like(nu, state.nu),
    )

  return optax.GradientTransformation(init_fn, update_fn)


def _scale_by_clipped_trust_ratio(
  clip_bound: jax.typing.ArrayLike,
) -> optax.GradientTransformation:
  r"""Scales each layer's step by :math:`\min(\|\theta\| / \|r\|, c)`.

  The ratio is 1 (before clipping) where either norm is zero.
  """

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('lambc needs `params` in update().')

    def scale(r, p):
      # Norms of bf16 layers would round to 3 digits; take them in float32.
      dtype = jnp.promote_types(p.dtype, jnp.float32)
      param_norm = jnp.linalg.norm(p.astype(dtype))
      step_norm = jnp.linalg.norm(r.astype(dtype))
      ratio = jnp.where(
        (param_norm == 0) | (step_norm == 0), 1.0, param_norm / step_norm
      )
      return (jnp.minimum(ratio, clip_bound) * r).astype(r.dtype)

    return jax.tree.map(scale, updates, params), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def scale_by_lambc(
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-6,
  weight_decay: optax.ScalarOrSchedule = 0.0,
  clip_bound: jax.typing.ArrayLike = 1.0,
  mask: Any | None = None,
  *,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""LAMBC's scaling (Fong et al., 2020), without a learning rate.

  LAMB's layer-wise trust ratio, clipped from above at ``clip_bound``; per
  parameter array (layer) :math:`\theta`:

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\\
    r_t = \frac{m_t}{\sqrt{v_t} + \epsilon} + \lambda \theta_{t-1},\quad
    u_t = \min\!\Big(\frac{\|\theta_{t-1}\|}{\|r_t\|}, c\Big)\, r_t,

  with the ratio set to 1 (then clipped) where either norm is zero.

  Args:
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added to the root of the second moment, >= 0.
    weight_decay: :math:`\lambda` >= 0, or a schedule; added before the
      trust ratio, as in LAMB.
    clip_bound: :math:`c` > 0, the largest trust ratio.
    mask: pytree or callable selecting the parameters that decay.
    mu_dtype: dtype of the first moment (None: the params' dtype).

  Returns:
    An `optax.GradientTransformation` (a chain; its first state is an
    `optax.ScaleByAdamState`).

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.scale_by_lambc()
    >>> params = jnp.array([30.0, 40.0])  # norm 50
    >>> grads = jnp.array([3.0, 4.0])  # the first r is ~sqrt(10) sign(g)
    >>> updates, _ = tx.update(grads, tx.init(params), params)
    >>> updates.round(3)  # the ratio 50 / |r| = 11.2 is clipped to 1
    Array([3.162, 3.162], dtype=float32)

  References:
    Fong, Chen & Chen, `Improving Layer-wise Adaptive Rate Methods using
    Trust Ratio Clipping <https://arxiv.org/abs/2011.13584>`_, 2020;
    reference code jeffrey-fong/LAMBC, ``lamb_optim/lambc.py``.

  Deviations: as the reference code (and LAMB's paper v3 it cites), the
  moments are not bias-corrected; `optax_zoo.lamb` (optax's) corrects them.
  ``clip_bound`` defaults to 1.0, the value of the authors' ``main.py`` and
  README (best in their experiments); the class itself defaults to 10.0 with
  clipping off.
  """
  v.check_betas(b1=b1, b2=b2)
  v.check_non_negative('eps', eps)
  v.check_weight_decay(weight_decay)
  v.check_positive('clip_bound', clip_bound)
  v.check_float_dtype('mu_dtype', mu_dtype)
  return optax.chain(
    _scale_by_unbiased_adam(b1, b2, eps, mu_dtype),
    optax.add_decayed_weights(weight_decay, mask),
    _scale_by_clipped_trust_ratio(clip_bound),
  )


def lambc(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-6,
  weight_decay: optax.ScalarOrSchedule = 0.0,
  clip_bound: jax.typing.ArrayLike = 1.0,
  mask: Any | None = None,
  *,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""LAMBC (Fong et al., 2020): LAMB with trust-ratio clipping.

  .. math::
    \theta_t = \theta_{t-1} - \eta_t\, u_t,

  with :math:`u_t` from `scale_by_lambc`: each layer moves by at most
  ``clip_bound`` times its norm per unit learning rate.

  Args:
    learning_rate: :math:`\eta`, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added to the root of the second moment, >= 0.
    weight_decay: :math:`\lambda` >= 0, or a schedule; added before the
      trust ratio, as in LAMB.
    clip_bound: :math:`c` > 0, the largest trust ratio.
    mask: pytree or callable selecting the parameters that decay.
    mu_dtype: dtype of the first moment (None: the params' dtype).

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.lambc(0.1)
    >>> params = jnp.array([3.0, 4.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(params, state, params)
    >>> updates.round(3)  # ratio 5 / |r| = 1.12, clipped to 1: -lr * r
    Array([-0.316, -0.316], dtype=float32)

  References:
    Fong, Chen & Chen, `Improving Layer-wise Adaptive Rate Methods using
    Trust Ratio Clipping <https://arxiv.org/abs/2011.13584>`_, 2020;
    reference code jeffrey-fong/LAMBC, ``lamb_optim/lambc.py``.

  Deviations: as `scale_by_lambc`.
  """
  v.check_learning_rate(learning_rate)
  return optax.chain(
    scale_by_lambc(
      b1, b2, eps, weight_decay, clip_bound, mask, mu_dtype=mu_dtype
    ),
    optax.scale_by_learning_rate(learning_rate),
  )


def lamb(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-6,
  eps_root: jax.typing.ArrayLike = 0.0,
  weight_decay: optax.ScalarOrSchedule = 0.0,
  mask: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""LAMB (You et al., 2020), optax's implementation.

  .. math::
    r_t = \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon} + \lambda \theta_{t-1},
    \quad
    \Delta^l_t = -\eta_t \frac{\|\theta^l_{t-1}\|}{\|r^l_t\|} r^l_t,

  with the trust ratio set to 1 where either norm is zero (optax's choice).

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added outside the square root, >= 0.
    eps_root: added inside the square root, >= 0.
    weight_decay: decay :math:`\lambda` >= 0, or a schedule.
    mask: pytree or callable selecting the decayed parameters.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.lamb(1e-1)
    >>> params = jnp.array([3.0, 4.0])
    >>> tx.update(params, tx.init(params), params)[0]  # |step| = 0.1 |params|
    Array([-0.3..., -0.4...], dtype=float32)

  References:
    You et al., `Large Batch Optimization for Deep Learning: Training BERT in
    76 minutes <https://arxiv.org/abs/1904.00962>`_, 2020.
  """
  v.check_adam_family(learning_rate, b1, b2, eps, eps_root)
  v.check_weight_decay(weight_decay)
  return optax.lamb(learning_rate, b1, b2, eps, eps_root, weight_decay, mask)
