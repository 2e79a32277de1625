"""Adan: adaptive Nesterov momentum, with the paper's proximal weight decay.

Non-finite gradients: not sanitized; a NaN or inf gradient gives a NaN update
and a poisoned state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v

__all__ = ['AdanState', 'adan', 'scale_by_adan']


class AdanState(NamedTuple):
  """State of `scale_by_adan`.

  Attributes:
    count: steps taken, int32.
    mu: EMA of gradients, in ``mu_dtype``.
    mu_diff: EMA of gradient differences, in ``mu_dtype``.
    nu: EMA of squared Nesterov-corrected gradients.
    prev_grad: the previous step's gradient (zeros before the first step).
  """

  count: jax.Array
  mu: optax.Updates
  mu_diff: optax.Updates
  nu: optax.Updates
  prev_grad: optax.Updates


def scale_by_adan(
  b1: jax.typing.ArrayLike = 0.98,
  b2: jax.typing.ArrayLike = 0.92,
  b3: jax.typing.ArrayLike = 0.99,
  eps: jax.typing.ArrayLike = 1e-8,
  eps_root: jax.typing.ArrayLike = 0.0,
  *,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""Adan's scaling (Xie et al., 2022), without a learning rate.

  With :math:`\Delta_t = g_t - g_{t-1}` (zero on the first step):

  .. math::
    m_t = b_1 m_{t-1} + (1-b_1) g_t,\quad
    d_t = b_2 d_{t-1} + (1-b_2) \Delta_t,\\
    n_t = b_3 n_{t-1} + (1-b_3) (g_t + b_2 \Delta_t)^2,\\
    u_t = \frac{m_t/(1-b_1^t) + b_2\, d_t/(1-b_2^t)}
      {\sqrt{n_t/(1-b_3^t) + \epsilon_{root}} + \epsilon}.

  Betas are decay rates, as in the official code and optax: the paper's
  :math:`\beta_k` is ``1 - b_k`` (its :math:`\beta_1 = 0.02, \beta_2 = 0.08,
  \beta_3 = 0.01` are our defaults 0.98, 0.92, 0.99), so the paper's
  :math:`(1-\beta_2)` weighting the gradient difference is our ``b2``.

  Args:
    b1: gradient EMA decay, in [0, 1).
    b2: gradient-difference EMA decay, in [0, 1); also the weight of the
      difference in :math:`n_t` and :math:`u_t`.
    b3: second-moment decay, in [0, 1).
    eps: added to the root of the second moment, >= 0.
    eps_root: added inside the root, >= 0 (0 in the official code).
    mu_dtype: dtype of :math:`m` and :math:`d` (None: the params' dtype).

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.scale_by_adan()
    >>> state = tx.init(jnp.zeros(2))
    >>> updates, state = tx.update(jnp.array([3.0, -1.0]), state)
    >>> updates  # the first step is the sign
    Array([ 1., -1.], dtype=float32)

  References:
    Xie et al., `Adan: Adaptive Nesterov Momentum Algorithm for Faster
    Optimizing Deep Models <https://arxiv.org/abs/2208.06677>`_, 2022;
    reference code sail-sg/Adan, ``adan.py``.

  Deviations: ``optax.scale_by_adan`` weights the gradient difference by
  ``1 - b2`` (0.08) where the paper and the official code use ``b2`` (0.92)
  (optax PR #1715); we follow the official code. The official
  ``max_grad_norm`` (global-norm clipping, off by default) is not built in:
  chain `optax.clip_by_global_norm` before it (the official factor
  :math:`c / (\|g\| + \epsilon)` differs from it by :math:`\epsilon`).
  """
  v.check_betas(b1=b1, b2=b2, b3=b3)
  v.check_non_negative('eps', eps)
  v.check_non_negative('eps_root', eps_root)
  v.check_float_dtype('mu_dtype', mu_dtype)

  def init_fn(params):
    return AdanState(
      count=jnp.zeros([], jnp.int32),
      mu=optax.tree.zeros_like(params, dtype=mu_dtype),
      mu_diff=optax.tree.zeros_like(params, dtype=mu_dtype),
      nu=optax.tree.zeros_like(params),
      prev_grad=optax.tree.zeros_like(params),
    )

  def update_fn(updates, state, params=None):
    del params
    first = state.count == 0
    diff = jax.tree.map(
      lambda g, p: jnp.where(first, jnp.zeros_like(g), g - p),
      updates,
      state.prev_grad,
    )
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    mu_diff = optax.tree.update_moment(diff, state.mu_diff, b2, 1)
    nesterov = jax.tree.map(lambda g, d: g + b2 * d, updates, diff)
    nu = optax.tree.update_moment_per_elem_norm(nesterov, state.nu, b3, 2)
    count = optax.safe_increment(state.count)
    mu_hat = optax.tree.bias_correction(mu, b1, count)
    diff_hat = optax.tree.bias_correction(mu_diff, b2, count)
    nu_hat = optax.tree.bias_correction(nu, b3, count)

    def step(g, m, d, n):
      denom = jnp.sqrt(n + eps_root) + eps
      return ((m + b2 * d) / denom).astype(g.dtype)

    out = jax.tree.map(step, updates, mu_hat, diff_hat, nu_hat)
    return out, AdanState(
      count=count,
      mu=optax.tree.cast_like(mu, state.mu),
      mu_diff=optax.tree.cast_like(mu_diff, state.mu_diff),
      nu=optax.tree.cast_like(nu, state.nu),
      prev_grad=optax.tree.cast_like(updates, state.prev_grad),
    )

  return optax.GradientTransformation(init_fn, update_fn)


def _proximal_decay(
  learning_rate: optax.ScalarOrSchedule, weight_decay: jax.typing.ArrayLike
) -> optax.GradientTransformation:
  r"""Maps a step :math:`\delta` to :math:`(\theta + \delta) / (1 +
  \eta_t\lambda) - \theta`, the proximal step of :math:`\frac\lambda2
  \|\theta\|^2`."""

  def init_fn(params):
    del params
    if callable(learning_rate):
      return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(
        'adan needs `params` in update() for its proximal decay.'
      )
    if callable(learning_rate):
      lr = learning_rate(state.count)
      state = optax.ScaleByScheduleState(optax.safe_increment(state.count))
    else:
      lr = learning_rate
    shrink = lr * weight_decay
    updates = jax.tree.map(
      lambda d, p: ((d - shrink * p) / (1 + shrink)).astype(d.dtype),
      updates,
      params,
    )
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def adan(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.98,
  b2: jax.typing.ArrayLike = 0.92,
  b3: jax.typing.ArrayLike = 0.99,
  eps: jax.typing.ArrayLike = 1e-8,
  eps_root: jax.typing.ArrayLike = 0.0,
  weight_decay: jax.typing.ArrayLike = 0.0,
  mask: Any | None = None,
  *,
  proximal: bool = True,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""Adan (Xie et al., 2022), with proximal or decoupled weight decay.

  With :math:`u_t` from `scale_by_adan`, the paper's Algorithm 1 and the
  official code's default (``no_prox=False``) take a proximal step for the
  decay:

  .. math::
    \theta_t = \frac{\theta_{t-1} - \eta_t u_t}{1 + \eta_t \lambda}
    \quad (\texttt{proximal=True}),\qquad
    \theta_t = \theta_{t-1} - \eta_t (u_t + \lambda \theta_{t-1})
    \quad (\texttt{proximal=False}, \text{ official } \texttt{no\_prox}).

  The two agree to first order in :math:`\eta_t\lambda` and exactly when
  :math:`\lambda = 0`.

  Args:
    learning_rate: :math:`\eta`, a float >= 0 or a schedule.
    b1: gradient EMA decay, in [0, 1) (the paper's :math:`1-\beta_1`).
    b2: gradient-difference EMA decay, in [0, 1) (:math:`1-\beta_2`).
    b3: second-moment decay, in [0, 1) (:math:`1-\beta_3`).
    eps: added to the root of the second moment, >= 0.
    eps_root: added inside the root, >= 0.
    weight_decay: :math:`\lambda` >= 0, a number (not a schedule).
    mask: pytree or callable selecting the parameters that decay.
    proximal: the proximal decay (True, the paper's and the official
      default) or the AdamW-style decoupled decay (False).
    mu_dtype: dtype of the first-order moments (None: the params' dtype).

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.adan(1e-1, weight_decay=1.0)
    >>> params = jnp.array([1.0, -2.0])
    >>> updates, _ = tx.update(jnp.zeros(2), tx.init(params), params)
    >>> updates.round(4)  # theta / (1 + 0.1) - theta
    Array([-0.0909,  0.1818], dtype=float32)

  References:
    Xie et al., `Adan: Adaptive Nesterov Momentum Algorithm for Faster
    Optimizing Deep Models <https://arxiv.org/abs/2208.06677>`_, 2022;
    reference code sail-sg/Adan, ``adan.py``.

  Deviations: as `scale_by_adan`. ``optax.adan`` has only the decoupled
  decay (optax PR #410) and ``eps_root=1e-8``; the official code has no
  ``eps_root``, so ours defaults to 0. ``pytorch_optimizer.Adan`` matches
  the official code, with ``weight_decouple`` for ``no_prox``.
  """
  v.check_learning_rate(learning_rate)
  v.check_non_negative('weight_decay', weight_decay)
  scale = scale_by_adan(b1, b2, b3, eps, eps_root, mu_dtype=mu_dtype)
  if not proximal:
    return optax.chain(
      scale,
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate),
    )
  decay = _proximal_decay(learning_rate, weight_decay)
  return optax.chain(
    scale,
    optax.scale_by_learning_rate(learning_rate),
    decay if mask is None else optax.masked(decay, mask),
  )
