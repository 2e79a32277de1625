"""Adam, AdaMax and NAdam: optax's implementations, validated.

Each function has optax's signature and returns optax's transform unchanged,
after checking every hyperparameter so that a typo raises a `ValueError` at
construction time. AdamW, with the paper's form as an option, is in
`_adamw.py`; RAdam, whose optax version deviates, in `_radam.py`.

Non-finite gradients: not sanitized; a NaN or inf gradient gives a NaN or inf
update (and, for the moment-based ones, a poisoned state), which is what the
user should see.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from optax_zoo._src import validation as v

__all__ = ['adam', 'adamax', 'nadam']


def adam(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  eps_root: jax.typing.ArrayLike = 0.0,
  mu_dtype: Any | None = None,
  *,
  nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Adam (Kingma & Ba, 2015), optax's implementation, validated.

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\\
    u_t = -\eta_t \frac{m_t / (1-\beta_1^t)}
      {\sqrt{v_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon}.

  Args:
    learning_rate: step size :math:`\eta`, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added outside the square root, >= 0.
    eps_root: added inside the square root, >= 0.
    mu_dtype: dtype of the first moment (None: the params' dtype).
    nesterov: use Nesterov momentum (NAdam-style numerator).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.adam(1e-1)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(2 * params, state, params)
    >>> updates
    Array([-0.1,  0.1], dtype=float32)

  References:
    Kingma & Ba, `Adam: A Method for Stochastic Optimization
    <https://arxiv.org/abs/1412.6980>`_, 2015.
  """
  v.check_adam_family(learning_rate, b1, b2, eps, eps_root)
  v.check_float_dtype('mu_dtype', mu_dtype)
  return optax.adam(
    learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov
  )


def adamax(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
) -> optax.GradientTransformationExtraArgs:
  r"""AdaMax (Kingma & Ba, 2015, section 7.1), optax's implementation.

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
    u_t = \max(\beta_2 u_{t-1}, |g_t|),\quad
    \Delta_t = -\frac{\eta_t}{1-\beta_1^t} \frac{m_t}{u_t + \epsilon}.

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: infinity-norm decay, in [0, 1).
    eps: added to the denominator, >= 0.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.adamax(1e-1)
    >>> state = tx.init(jnp.zeros(2))
    >>> tx.update(jnp.array([3.0, -1.0]), state)[0]
    Array([-0.1,  0.1], dtype=float32)

  References:
    Kingma & Ba, `Adam: A Method for Stochastic Optimization
    <https://arxiv.org/abs/1412.6980>`_, 2015.
  """
  v.check_learning_rate(learning_rate)
  v.check_betas(b1=b1, b2=b2)
  v.check_non_negative('eps', eps)
  return optax.adamax(learning_rate, b1, b2, eps)


def nadam(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  eps_root: jax.typing.ArrayLike = 0.0,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""NAdam (Dozat, 2016): Adam with a Nesterov first moment, from optax.

  .. math::
    \Delta_t = -\eta_t \frac{\beta_1 \hat m_t + (1-\beta_1) g_t/(1-\beta_1^t)}
      {\sqrt{\hat v_t} + \epsilon}.

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added outside the square root, >= 0.
    eps_root: added inside the square root, >= 0.
    mu_dtype: dtype of the first moment.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.nadam(1e-1)
    >>> state = tx.init(jnp.zeros(1))
    >>> tx.update(jnp.array([2.0]), state)[0].shape
    (1,)

  References:
    Dozat, `Incorporating Nesterov Momentum into Adam
    <https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ>`_, 2016.
  """
  v.check_adam_family(learning_rate, b1, b2, eps, eps_root)
  v.check_float_dtype('mu_dtype', mu_dtype)
  return optax.nadam(learning_rate, b1, b2, eps, eps_root, mu_dtype)
