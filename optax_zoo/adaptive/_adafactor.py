"""Adafactor: optax's implementation, with the paper's relative step.

``optax.adafactor(None)`` applies no step size at all; here
``learning_rate=None`` is the paper's relative step (see `adafactor`).

Non-finite gradients: not sanitized; a NaN or inf gradient gives a NaN or inf
update (and, for the moment-based ones, a poisoned state), which is what the
user should see.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from optax_zoo._src import validation as v

__all__ = ['adafactor']


def _relative_step(count: jax.Array) -> jax.Array:
  """Adafactor's relative step size min(1e-2, 1/sqrt(t)), t = count + 1."""
  return jax.numpy.minimum(1e-2, jax.lax.rsqrt(count + 1.0))


def adafactor(
  learning_rate: optax.ScalarOrSchedule | None = None,
  min_dim_size_to_factor: int = 128,
  decay_rate: jax.typing.ArrayLike = 0.8,
  decay_offset: int = 0,
  multiply_by_parameter_scale: bool = True,
  clipping_threshold: jax.typing.ArrayLike | None = 1.0,
  momentum: jax.typing.ArrayLike | None = None,
  dtype_momentum: Any = jax.numpy.float32,
  weight_decay_rate: optax.ScalarOrSchedule | None = None,
  eps: jax.typing.ArrayLike = 1e-30,
  factored: bool = True,
  mask: Any | None = None,
  *,
  weight_decay_mask: Any = v.UNSET,
) -> optax.GradientTransformationExtraArgs:
  r"""Adafactor (Shazeer & Stern, 2018), optax's implementation.

  The paper's Algorithms 4 (matrices) and 5 (other arrays), with
  :math:`\hat\beta_{2t} = 1 - t^{-c}`, :math:`\epsilon_1` = ``eps``,
  :math:`d` = ``clipping_threshold``, :math:`\epsilon_2 = 10^{-3}`:

  .. math::
    R_t = \hat\beta_{2t} R_{t-1} + (1-\hat\beta_{2t})
      (G_t^2 + \epsilon_1) 1_m,\quad
    C_t = \hat\beta_{2t} C_{t-1} + (1-\hat\beta_{2t})
      1_n^\top (G_t^2 + \epsilon_1),\\
    \hat V_t = R_t C_t / 1_n^\top R_t,\quad
    U_t = G_t / \sqrt{\hat V_t},\quad
    \hat U_t = U_t / \max(1, \mathrm{RMS}(U_t) / d),\\
    \Delta_t = -\alpha_t \hat U_t,\quad
    \alpha_t = \max(\epsilon_2, \mathrm{RMS}(X_{t-1}))\,\rho_t,

  where :math:`\rho_t` is ``learning_rate`` and the factor
  :math:`\max(\epsilon_2, \mathrm{RMS}(X_{t-1}))` is there only with
  ``multiply_by_parameter_scale``. Arrays that are not factored keep the
  full :math:`V_t = \hat\beta_{2t} V_{t-1} + (1-\hat\beta_{2t})
  (G_t^2 + \epsilon_1)` (Algorithm 5).

  Factoring threshold: an array is factored when its second-largest
  dimension is at least ``min_dim_size_to_factor``, over its two largest
  dimensions (as t5x and mesh-tensorflow); the paper factors every matrix,
  which is ``min_dim_size_to_factor=1``. With the default 128, a layer with
  fewer than 128 units in either dimension keeps a full second moment, one
  parameter copy, not a sublinear one.

  With ``learning_rate=None`` the step size is the paper's relative step
  :math:`\rho_t = \min(10^{-2}, 1/\sqrt{t})`. Deviation from optax:
  ``optax.adafactor(None)`` applies no step size at all (:math:`\rho_t = 1`).

  ``momentum`` :math:`\beta_1` averages the scaled, clipped steps,
  :math:`m_t = \beta_1 m_{t-1} + (1-\beta_1)\alpha_t \hat U_t`, without
  bias correction, and ``weight_decay_rate`` :math:`\lambda` then adds
  :math:`-\lambda X_{t-1}`, not multiplied by the step size: both as t5x's
  ``adafactor.py`` (the paper's boxes have neither).

  Args:
    learning_rate: :math:`\rho_t`, >= 0, a schedule, or None for the
      relative step.
    min_dim_size_to_factor: only factor dimensions at least this large, >= 1.
    decay_rate: exponent of the second-moment decay :math:`1 - t^{-c}`,
      in [0, 1].
    decay_offset: step offset for the decay, an integer >= 0.
    multiply_by_parameter_scale: scale the step by the parameter's RMS.
    clipping_threshold: update clipping threshold > 0, or None for none.
    momentum: first-moment decay in [0, 1), or None for no momentum.
    dtype_momentum: dtype of the momentum.
    weight_decay_rate: decay :math:`\lambda` >= 0 (not multiplied by the
      step size), a schedule, or None.
    eps: regularization constant for the second moment, >= 0.
    factored: whether to factor the second moment.
    mask: pytree or callable selecting the decayed parameters
      (``optax.adafactor`` calls it ``weight_decay_mask``).
    weight_decay_mask: deprecated name of ``mask``, the name of every decay
      mask in optax_zoo.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.adafactor(1e-2, min_dim_size_to_factor=2)
    >>> params = {'w': jnp.ones((4, 3))}
    >>> tx.update(params, tx.init(params), params)[0]['w'].shape
    (4, 3)

  References:
    Shazeer & Stern, `Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost <https://arxiv.org/abs/1804.04235>`_, 2018.
  """
  v.check_learning_rate(learning_rate, allow_none=True)
  v.check_float_dtype('dtype_momentum', dtype_momentum)
  v.check_int('min_dim_size_to_factor', min_dim_size_to_factor, minimum=1)
  v.check_in_range('decay_rate', decay_rate, 0.0, 1.0, high_inclusive=True)
  v.check_int('decay_offset', decay_offset, minimum=0)
  if clipping_threshold is not None:
    v.check_positive('clipping_threshold', clipping_threshold)
  if momentum is not None:
    v.check_in_range('momentum', momentum, 0.0, 1.0)
  if weight_decay_rate is not None:
    v.check_weight_decay(weight_decay_rate, 'weight_decay_rate')
  v.check_non_negative('eps', eps)
  mask = v.renamed_argument(
    'weight_decay_mask', weight_decay_mask, 'mask', mask, None
  )
  return optax.adafactor(
    _relative_step if learning_rate is None else learning_rate,
    min_dim_size_to_factor,
    decay_rate,
    decay_offset,
    multiply_by_parameter_scale,
    clipping_threshold,
    momentum,
    dtype_momentum,
    weight_decay_rate,
    eps,
    factored,
    mask,
  )
