"""SignSGD and Signum (optax's, validated), and Generalized SignSGD, the
family between SignSGD and Adam.

Non-finite gradients: not sanitized; a NaN or inf gradient gives a NaN update
and a poisoned state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v

__all__ = [
  'GeneralizedSignSGDState',
  'generalized_signsgd',
  'scale_by_generalized_signsgd',
  'sign_sgd',
  'signum',
]


class GeneralizedSignSGDState(NamedTuple):
  """State of `scale_by_generalized_signsgd`.

  Attributes:
    count: steps taken, int32.
    mu: momentum, in ``mu_dtype``.
    nu: moving average of the squared momentum.
  """

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def scale_by_generalized_signsgd(
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  *,
  bias_correction: bool = False,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""Generalized SignSGD's scaling (Crawshaw et al., 2022), without a rate.

  Algorithm 1 of the paper: the second moment averages the squared
  *momentum*, not the squared gradient, so that each coordinate of the step
  is at most :math:`1/\sqrt{1-\beta_2}` in size whatever the gradient's
  scale (without bias correction):

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) m_t^2,\quad
    u_t = \frac{m_t}{\sqrt{v_t} + \epsilon}.

  At :math:`\beta_2 = 0` and :math:`\epsilon = 0` the step is
  :math:`\mathrm{sign}(m_t)`: Signum, and SignSGD when also
  :math:`\beta_1 = 0`. With :math:`\beta_2` near 1 it resembles Adam, whose
  second moment averages :math:`g_t^2` instead; the two coincide at
  :math:`\beta_1 = 0`, where with ``bias_correction`` this *is* Adam with
  :math:`\beta_1 = 0` (RMSProp with Adam's bias correction).

  Args:
    b1: momentum decay :math:`\beta_1`, in [0, 1).
    b2: decay of the squared-momentum average :math:`\beta_2`, in [0, 1).
    eps: added to the root of the second moment, >= 0. At 0, a coordinate
      whose momentum is exactly 0 gets 0/0 = NaN, as in the reference.
    bias_correction: divide :math:`m_t` by :math:`1-\beta_1^t` and
      :math:`v_t` by :math:`1-\beta_2^t` (the reference's
      ``use_bias_correction``, off by default).
    mu_dtype: dtype of the momentum (None: the params' dtype).

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.scale_by_generalized_signsgd(b2=0.0, eps=0.0)
    >>> updates, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))
    >>> updates  # b2 = 0: the sign of the momentum
    Array([ 1., -1.], dtype=float32)

  References:
    Crawshaw et al., `Robustness to Unbounded Smoothness of Generalized
    SignSGD <https://arxiv.org/abs/2208.11195>`_, 2022, Algorithm 1;
    reference code zhenxun-zhuang/Generalized-SignSGD,
    ``cifar10/generalized_signsgd.py``.
  """
  v.check_betas(b1=b1, b2=b2)
  v.check_non_negative('eps', eps)
  v.check_float_dtype('mu_dtype', mu_dtype)

  def init_fn(params):
    return GeneralizedSignSGDState(
      count=jnp.zeros([], jnp.int32),
      mu=optax.tree.zeros_like(params, dtype=mu_dtype),
      nu=optax.tree.zeros_like(params),
    )

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    # 1 - b rounded in float32 whether b is a constant or traced, so the
    # method is the same under `optax.inject_hyperparams`: early steps are
    # of size 1/sqrt(1 - b2), and float64's 1 - 0.999 differs from
    # float32's by 1.3e-5 relative.
    beta1, beta2 = jnp.float32(b1), jnp.float32(b2)
    mu = optax.tree.update_moment(updates, state.mu, beta1, 1)
    nu = optax.tree.update_moment_per_elem_norm(mu, state.nu, beta2, 2)
    mu_hat, nu_hat = mu, nu
    if bias_correction:
      mu_hat = optax.tree.bias_correction(mu, beta1, count)
      nu_hat = optax.tree.bias_correction(nu, beta2, count)
    out = jax.tree.map(
      lambda g, m, n: (m / (jnp.sqrt(n) + eps)).astype(g.dtype),
      updates,
      mu_hat,
      nu_hat,
    )
    return out, GeneralizedSignSGDState(
      count=count,
      mu=optax.tree.cast_like(mu, state.mu),
      nu=optax.tree.cast_like(nu, state.nu),
    )

  return optax.GradientTransformation(init_fn, update_fn)


def generalized_signsgd(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  weight_decay: jax.typing.ArrayLike = 0.0,
  mask: Any | None = None,
  *,
  bias_correction: bool = False,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""Generalized SignSGD (Crawshaw et al., 2022).

  With the L2 weight decay of the reference code (added to the gradient):

  .. math::
    \tilde g_t = g_t + \lambda \theta_t,\qquad
    \theta_{t+1} = \theta_t - \eta_t\, u_t(\tilde g_1, \dots, \tilde g_t),

  with :math:`u_t` from `scale_by_generalized_signsgd`.

  Args:
    learning_rate: :math:`\eta`, a float >= 0 or a schedule (the reference
      default is 1e-3).
    b1: momentum decay, in [0, 1).
    b2: decay of the squared-momentum average, in [0, 1).
    eps: added to the root of the second moment, >= 0.
    weight_decay: :math:`\lambda`, L2 (coupled) weight decay, >= 0.
    mask: pytree or callable selecting the parameters that decay (None:
      all).
    bias_correction: bias-correct both moments.
    mu_dtype: dtype of the momentum (None: the params' dtype).

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.generalized_signsgd(1e-2)
    >>> params = jnp.array([1.0, -2.0])
    >>> updates, state = tx.update(2 * params, tx.init(params), params)
    >>> updates.round(4)  # no bias correction: 1 / sqrt(1 - b2) = 31.6
    Array([-0.3162,  0.3162], dtype=float32)

  References:
    Crawshaw et al., `Robustness to Unbounded Smoothness of Generalized
    SignSGD <https://arxiv.org/abs/2208.11195>`_, 2022, Algorithm 1;
    reference code zhenxun-zhuang/Generalized-SignSGD,
    ``cifar10/generalized_signsgd.py``.

  Deviations: Algorithm 1 has no weight decay; the reference code's is L2
  and so is ours.
  """
  v.check_learning_rate(learning_rate)
  v.check_weight_decay(weight_decay)
  return optax.chain(
    optax.add_decayed_weights(weight_decay, mask),
    scale_by_generalized_signsgd(
      b1, b2, eps, bias_correction=bias_correction, mu_dtype=mu_dtype
    ),
    optax.scale_by_learning_rate(learning_rate),
  )


def sign_sgd(
  learning_rate: optax.ScalarOrSchedule,
) -> optax.GradientTransformation:
  r"""SignSGD (Bernstein et al., 2018): :math:`\Delta_t = -\eta_t
  \operatorname{sign}(g_t)`.

  Args:
    learning_rate: step size, a float >= 0 or a schedule.

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.sign_sgd(0.1)
    >>> tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))[0]
    Array([-0.1,  0.1], dtype=float32)

  References:
    Bernstein et al., `signSGD: Compressed Optimisation for Non-Convex
    Problems <https://arxiv.org/abs/1802.04434>`_, 2018.
  """
  v.check_learning_rate(learning_rate)
  return optax.sign_sgd(learning_rate)


def signum(
  learning_rate: optax.ScalarOrSchedule,
  beta: jax.typing.ArrayLike = 0.9,
  accumulator_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""Signum (Bernstein et al., 2018): the sign of an EMA of gradients.

  .. math::
    m_t = \beta m_{t-1} + (1-\beta) g_t,\quad
    \Delta_t = -\eta_t \operatorname{sign}(m_t).

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    beta: momentum decay, in [0, 1).
    accumulator_dtype: dtype of the momentum buffer.

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.signum(0.1)
    >>> tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))[0]
    Array([-0.1,  0.1], dtype=float32)

  References:
    Bernstein et al., `signSGD: Compressed Optimisation for Non-Convex
    Problems <https://arxiv.org/abs/1802.04434>`_, 2018.
  """
  v.check_learning_rate(learning_rate)
  v.check_in_range('beta', beta, 0.0, 1.0)
  v.check_float_dtype('accumulator_dtype', accumulator_dtype)
  return optax.signum(learning_rate, beta, accumulator_dtype)
