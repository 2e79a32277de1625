"""ARSG: the adaptive remote stochastic gradient method (formerly NAMSG).

Non-finite gradients: not sanitized; a NaN or inf gradient gives a NaN update
and a poisoned state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v

__all__ = ['ArsgState', 'arsg', 'scale_by_arsg']


class ArsgState(NamedTuple):
  """State of `scale_by_arsg`.

  Attributes:
    count: steps taken, int32.
    mu: first moment, in ``mu_dtype``.
    nu: second moment (None when ``adaptive=False``).
    nu_max: running maximum of ``nu``, started at ``eps`` (None unless
      ``adaptive`` and ``amsgrad``).
  """

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates | None
  nu_max: optax.Updates | None


def scale_by_arsg(
  b1: jax.typing.ArrayLike = 0.999,
  b2: jax.typing.ArrayLike = 0.99,
  eps: jax.typing.ArrayLike = 1e-8,
  mu: jax.typing.ArrayLike = 0.1,
  *,
  adaptive: bool = True,
  amsgrad: bool = True,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""ARSG's scaling (Chen et al., 2019), without a learning rate.

  The paper evaluates the gradient at a remote *observation point* ahead of
  the iterate. The official code re-parametrizes the method so that the
  observation point is what it stores and differentiates; so do we: the
  ``params`` given to ``update`` are the observation point, the gradient the
  training loop computes there is the remote gradient, and no second point is
  kept. In these coordinates the step is a quasi-hyperbolic mix of the
  momentum and the current gradient, preconditioned as in AMSGrad:

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\quad
    \hat v_t = \max(\hat v_{t-1}, v_t),\ \hat v_0 = \epsilon,\\
    u_t = \frac{(1-\mu) m_t + \mu g_t}{\sqrt{\hat v_t}}.

  :math:`\mu` is the observation factor: at :math:`\mu = 0` this is AMSGrad
  without bias correction, with :math:`\epsilon` a floor on the second
  moment instead of a term added to its root. With ``amsgrad=False`` the
  preconditioner is Adam's, with bias corrections on both moments and
  :math:`\epsilon` added to the root; with ``adaptive=False`` there is none
  (the remote stochastic gradient method, RSG):

  .. math::
    u_t^{\text{Adam}} = \frac{(1-\mu) m_t / (1-\beta_1^t) + \mu g_t}
      {\sqrt{v_t / (1-\beta_2^t)} + \epsilon},\qquad
    u_t^{\text{RSG}} = (1-\mu) m_t + \mu g_t.

  Args:
    b1: first-moment decay, in [0, 1); the official default 0.999 is the
      method's recommended value, not Adam's.
    b2: second-moment decay, in [0, 1).
    eps: floor on the second moment (AMSGrad form) or added to its root
      (Adam form), >= 0.
    mu: observation factor :math:`\mu`, in [0, 1).
    adaptive: precondition by the second moment (ARSG); False gives RSG.
    amsgrad: use AMSGrad's running maximum; ignored when ``adaptive`` is
      False, as in the official code.
    mu_dtype: dtype of the first moment (None: the params' dtype).

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.scale_by_arsg(b1=0.9, b2=0.99, eps=0.0, mu=0.5)
    >>> updates, _ = tx.update(jnp.array([3.0, -1.0]), tx.init(jnp.zeros(2)))
    >>> updates.round(3)  # (0.5 * 0.1 g + 0.5 g) / (0.1 |g|)
    Array([ 5.5, -5.5], dtype=float32)

  References:
    Chen et al., `An Adaptive Remote Stochastic Gradient Method for Training
    Neural Networks <https://arxiv.org/abs/1905.01422>`_, 2019; reference
    code rationalspark/NAMSG, ``torch/arsg.py``.

  Deviations: the official code keeps unnormalized moments
  (:math:`m_t = \beta_1 m_{t-1} + g_t`, likewise :math:`v_t`) and scales the
  step by :math:`(1-\beta_1)` and :math:`1/\sqrt{1-\beta_2}`, its
  :math:`\hat v_0 = \epsilon / (1-\beta_2)`; that is the same method in
  different units, and our normalized form is the one of its MXNet version.
  Its optional built-in lookahead (``nLA``, off by default) is left out:
  wrap this transform in `optax_zoo.lookahead` instead.
  """
  v.check_betas(b1=b1, b2=b2)
  v.check_non_negative('eps', eps)
  v.check_in_range('mu', mu, 0.0, 1.0)
  v.check_float_dtype('mu_dtype', mu_dtype)
  amsgrad = adaptive and amsgrad

  def init_fn(params):
    return ArsgState(
      count=jnp.zeros([], jnp.int32),
      mu=optax.tree.zeros_like(params, dtype=mu_dtype),
      nu=optax.tree.zeros_like(params) if adaptive else None,
      nu_max=optax.tree.full_like(params, eps) if amsgrad else None,
    )

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    m = optax.tree.update_moment(updates, state.mu, b1, 1)
    nu, nu_max = state.nu, state.nu_max
    if adaptive:
      nu = optax.tree.update_moment_per_elem_norm(updates, nu, b2, 2)
    m_hat = m
    if amsgrad:
      nu_max = jax.tree.map(jnp.maximum, nu_max, nu)
      denom = jax.tree.map(jnp.sqrt, nu_max)
    elif adaptive:
      m_hat = optax.tree.bias_correction(m, b1, count)
      nu_hat = optax.tree.bias_correction(nu, b2, count)
      denom = jax.tree.map(lambda n: jnp.sqrt(n) + eps, nu_hat)

    def step(g, m, d=1.0):
      return (((1 - mu) * m + mu * g) / d).astype(g.dtype)

    if adaptive:
      out = jax.tree.map(step, updates, m_hat, denom)
    else:
      out = jax.tree.map(step, updates, m_hat)
    return out, ArsgState(
      count=count,
      mu=optax.tree.cast_like(m, state.mu),
      nu=nu if nu is None else optax.tree.cast_like(nu, state.nu),
      nu_max=(
        nu_max if nu_max is None else optax.tree.cast_like(nu_max, state.nu_max)
      ),
    )

  return optax.GradientTransformation(init_fn, update_fn)


def arsg(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.999,
  b2: jax.typing.ArrayLike = 0.99,
  eps: jax.typing.ArrayLike = 1e-8,
  mu: jax.typing.ArrayLike = 0.1,
  weight_decay: jax.typing.ArrayLike = 0.0,
  mask: Any | None = None,
  *,
  adaptive: bool = True,
  amsgrad: bool = True,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""ARSG (Chen et al., 2019): adaptive remote stochastic gradient.

  With the L2 weight decay of the official code (added to the gradient, so it
  enters both moments and the remote gradient term):

  .. math::
    \tilde g_t = g_t + \lambda \theta_t,\qquad
    \theta_{t+1} = \theta_t - \eta_t\, u_t(\tilde g_1, \dots, \tilde g_t),

  with :math:`u_t` from `scale_by_arsg`; :math:`\theta` is the observation
  point (see there).

  Args:
    learning_rate: :math:`\eta`, a float >= 0 or a schedule (the official
      default is 1e-3; the authors pick it by grid search).
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: floor on the second moment (AMSGrad form) or added to its root
      (Adam form), >= 0; the authors suggest 1e-3 for better generalization.
    mu: observation factor, in [0, 1).
    weight_decay: :math:`\lambda`, L2 (coupled) weight decay, >= 0.
    mask: pytree or callable selecting the parameters that decay (None:
      all).
    adaptive: precondition by the second moment; False gives RSG.
    amsgrad: AMSGrad's running maximum (else Adam's preconditioner).
    mu_dtype: dtype of the first moment (None: the params' dtype).

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.arsg(1e-2)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...   updates, state = tx.update(2 * params, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params.round(3).tolist()
    [0.977, -1.977]

  References:
    Chen et al., `An Adaptive Remote Stochastic Gradient Method for Training
    Neural Networks <https://arxiv.org/abs/1905.01422>`_, 2019; reference
    code rationalspark/NAMSG, ``torch/arsg.py``.

  Deviations: as `scale_by_arsg`.
  """
  v.check_learning_rate(learning_rate)
  v.check_weight_decay(weight_decay)
  return optax.chain(
    optax.add_decayed_weights(weight_decay, mask),
    scale_by_arsg(
      b1, b2, eps, mu, adaptive=adaptive, amsgrad=amsgrad, mu_dtype=mu_dtype
    ),
    optax.scale_by_learning_rate(learning_rate),
  )
