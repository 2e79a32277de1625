"""diffGrad: Adam whose step is damped where the gradient changes little.

Non-finite gradients: not sanitized; a NaN or inf gradient gives a NaN update
and a poisoned state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v

__all__ = ['DiffGradState', 'diffgrad', 'scale_by_diffgrad']


class DiffGradState(NamedTuple):
  """State of `scale_by_diffgrad`.

  Attributes:
    count: steps taken, int32.
    mu: first moment, in ``mu_dtype``.
    nu: second moment.
    prev_grad: the previous step's gradient (zeros before the first step).
  """

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  prev_grad: optax.Updates


def scale_by_diffgrad(
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  *,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""diffGrad's scaling (Dubey et al., 2019), without a learning rate.

  Adam's step, multiplied elementwise by the friction coefficient
  :math:`\xi_t`, a sigmoid of how much the gradient changed since the last
  step (:math:`g_0 = 0`):

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\quad
    \xi_t = \frac{1}{1 + e^{-|g_{t-1} - g_t|}},\\
    u_t = \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}
      \frac{\xi_t m_t}{\sqrt{v_t} + \epsilon}.

  :math:`\xi_t \in [1/2, 1)`: the step is halved where the gradient is
  steady and kept where it changes fast.

  Args:
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added to the (uncorrected) root of the second moment, >= 0.
    mu_dtype: dtype of the first moment (None: the params' dtype).

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.scale_by_diffgrad()
    >>> updates, _ = tx.update(jnp.array([0.0, 4.0]), tx.init(jnp.zeros(2)))
    >>> updates.round(3)  # Adam's first step (the sign) times sigmoid(|g|)
    Array([0.   , 0.982], dtype=float32)

  References:
    Dubey et al., `diffGrad: An Optimization Method for Convolutional Neural
    Networks <https://arxiv.org/abs/1909.11015>`_, 2019; reference code
    shivram1987/diffGrad, ``diffGrad_v2.py``.

  Deviations: we follow the official code, which adds :math:`\epsilon` to the
  uncorrected root as PyTorch's Adam does; the paper adds it to the
  bias-corrected root, :math:`\xi_t \hat m_t / (\sqrt{\hat v_t} + \epsilon)`.
  The two differ by :math:`\epsilon (1/\sqrt{1-\beta_2^t} - 1)` in the
  denominator. ``diffGrad.py`` in the same repository aliases the previous
  gradient to the current one, so its :math:`\xi_t` is always 1/2; the
  authors' fix, ``diffGrad_v2.py``, is what we implement.
  """
  v.check_betas(b1=b1, b2=b2)
  v.check_non_negative('eps', eps)
  v.check_float_dtype('mu_dtype', mu_dtype)

  def init_fn(params):
    return DiffGradState(
      count=jnp.zeros([], jnp.int32),
      mu=optax.tree.zeros_like(params, dtype=mu_dtype),
      nu=optax.tree.zeros_like(params),
      prev_grad=optax.tree.zeros_like(params),
    )

  def update_fn(updates, state, params=None):
    del params
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
    count = optax.safe_increment(state.count)
    step_scale = jnp.sqrt(1 - b2**count) / (1 - b1**count)

    def step(g, g_prev, m, n):
      friction = jax.nn.sigmoid(jnp.abs(g_prev - g))
      return (step_scale * friction * m / (jnp.sqrt(n) + eps)).astype(g.dtype)

    out = jax.tree.map(step, updates, state.prev_grad, mu, nu)
    return out, DiffGradState(
      count=count,
      mu=optax.tree.cast_like(mu, state.mu),
      nu=optax.tree.cast_like(nu, state.nu),
      prev_grad=optax.tree.cast_like(updates, state.prev_grad),
    )

  return optax.GradientTransformation(init_fn, update_fn)


def diffgrad(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  weight_decay: jax.typing.ArrayLike = 0.0,
  mask: Any | None = None,
  *,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""diffGrad (Dubey et al., 2019): Adam with a gradient-change friction.

  With the L2 weight decay of the official code (added to the gradient, so it
  enters both moments and the friction coefficient):

  .. math::
    \tilde g_t = g_t + \lambda \theta_t,\qquad
    \theta_{t+1} = \theta_t - \eta_t\, u_t(\tilde g_1, \dots, \tilde g_t),

  with :math:`u_t` from `scale_by_diffgrad`.

  Args:
    learning_rate: :math:`\eta`, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added to the (uncorrected) root of the second moment, >= 0.
    weight_decay: :math:`\lambda`, L2 (coupled) weight decay, >= 0.
    mask: pytree or callable selecting the parameters that decay (None:
      all).
    mu_dtype: dtype of the first moment (None: the params' dtype).

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.diffgrad(1e-1)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...   updates, state = tx.update(2 * params, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params.tolist()
    [0.805, -1.794]

  References:
    Dubey et al., `diffGrad: An Optimization Method for Convolutional Neural
    Networks <https://arxiv.org/abs/1909.11015>`_, 2019; reference code
    shivram1987/diffGrad, ``diffGrad_v2.py``.

  Deviations: as `scale_by_diffgrad`. The paper has no weight decay; the
  official code's is L2 and so is ours. pytorch_optimizer's ``DiffGrad``
  decouples it by default (``weight_decouple=True``); it matches ours with
  ``weight_decouple=False`` except for gradients below about
  :math:`10^{-7}`, where the :math:`10^{-15}` it adds under the root
  shows.
  """
  v.check_learning_rate(learning_rate)
  v.check_weight_decay(weight_decay)
  return optax.chain(
    optax.add_decayed_weights(weight_decay, mask),
    scale_by_diffgrad(b1, b2, eps, mu_dtype=mu_dtype),
    optax.scale_by_learning_rate(learning_rate),
  )
