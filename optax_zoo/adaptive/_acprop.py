"""ACProp: momentum centering with an asynchronous second moment.

Non-finite gradients: not sanitized; a NaN or inf gradient gives a NaN update
and a poisoned state.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v

__all__ = ['acprop', 'scale_by_acprop']


def scale_by_acprop(
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-16,
  eps_root: jax.typing.ArrayLike = 1e-16,
  *,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""ACProp's scaling (Zhuang et al., 2021), without a learning rate.

  The step divides the raw gradient by the root of the *previous* centred
  second moment (asynchronous), and the centred moment is then updated with
  the residual from the *new* first moment:

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\\
    u_t = \frac{g_t}{\sqrt{(s_{t-1} + \epsilon_{root})/(1-\beta_2^{t-1})}
      + \epsilon}\ \ (t \ge 2),\qquad u_1 = \frac{m_1}{1-\beta_1} = g_1,\\
    s_t = \beta_2 (s_{t-1} + \epsilon_{root}) + (1-\beta_2)(g_t - m_t)^2,

  with :math:`s_0 = 0` and no :math:`\epsilon_{root}` before the first step
  (as the official code, which adds it to the state in place from step 2 on).

  Args:
    b1: first-moment decay, in [0, 1).
    b2: centred second-moment decay, in [0, 1).
    eps: added to the root of the second moment, >= 0.
    eps_root: added to the stored second moment before each use, >= 0.
    mu_dtype: dtype of the first moment (None: the params' dtype).

  Returns:
    An `optax.GradientTransformation`; its state is an
    `optax.ScaleByBeliefState` (``nu`` holds :math:`s_t`).

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.scale_by_acprop()
    >>> state = tx.init(jnp.zeros(2))
    >>> updates, state = tx.update(jnp.array([2.0, -1.0]), state)
    >>> updates  # the first step is the gradient
    Array([ 2., -1.], dtype=float32)
    >>> updates, state = tx.update(jnp.array([1.0, 1.0]), state)
    >>> updates  # g_2 / |0.9 g_1|
    Array([0.555..., 1.111...], dtype=float32)

  References:
    Zhuang et al., `Momentum Centering and Asynchronous Update for Adaptive
    Gradient Methods <https://arxiv.org/abs/2110.05454>`_, 2021; reference
    code juntang-zhuang/ACProp-Optimizer, ``optimizers/ACProp.py``.

  Deviations: we implement the paper's algorithm, the official class with
  ``rectify=False, amsgrad=False, momentum_update=False`` (the settings of
  the authors' ``main.py``). The class defaults to ``rectify=True``, a
  RAdam-style rectification the paper does not describe; it, ``amsgrad`` and
  ``momentum_update`` (momentum in the numerator) are not implemented.
  ``optax.contrib.scale_by_acprop`` forms the residual with
  :math:`m_{t-1}` instead of :math:`m_t` (optax issue #1132, PR #1716) and
  adds :math:`\epsilon_{root}` after the update; we follow the official code.
  """
  v.check_betas(b1=b1, b2=b2)
  v.check_non_negative('eps', eps)
  v.check_non_negative('eps_root', eps_root)
  v.check_float_dtype('mu_dtype', mu_dtype)

  def init_fn(params):
    return optax.ScaleByBeliefState(
      count=jnp.zeros([], jnp.int32),
      mu=optax.tree.zeros_like(params, dtype=mu_dtype),
      nu=optax.tree.zeros_like(params),
    )

  def update_fn(updates, state, params=None):
    del params
    first = state.count == 0
    count = optax.safe_increment(state.count)
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    mu_hat = optax.tree.bias_correction(mu, b1, count)
    # The denominator uses s_{t-1}, debiased over t - 1 steps; on the first
    # step there is none and the step is the debiased momentum instead.
    nu_prev = jax.tree.map(
      lambda s: s + jnp.where(first, 0.0, eps_root).astype(s.dtype), state.nu
    )
    debias = jnp.sqrt(1 - b2 ** jnp.maximum(state.count, 1))

    def step(g, m_hat, s):
      later = g / (jnp.sqrt(s) / debias + eps)
      return jnp.where(first, m_hat, later).astype(g.dtype)

    out = jax.tree.map(step, updates, mu_hat, nu_prev)
    nu = jax.tree.map(
      lambda g, m, s: b2 * s + (1 - b2) * jnp.square(g - m),
      updates,
      mu,
      nu_prev,
    )
    return out, optax.ScaleByBeliefState(
      count=count,
      mu=optax.tree.cast_like(mu, state.mu),
      nu=optax.tree.cast_like(nu, state.nu),
    )

  return optax.GradientTransformation(init_fn, update_fn)


def acprop(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-16,
  eps_root: jax.typing.ArrayLike = 1e-16,
  weight_decay: optax.ScalarOrSchedule = 0.0,
  mask: Any | None = None,
  *,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""ACProp (Zhuang et al., 2021): AdaBelief with an asynchronous update.

  With the official code's default decoupled weight decay (multiplied by the
  learning rate, ``weight_decouple=True, fixed_decay=False``):

  .. math::
    \theta_t = \theta_{t-1} - \eta_t (u_t + \lambda \theta_{t-1}),

  with :math:`u_t` from `scale_by_acprop`. The official ``weight_decouple=
  False`` (L2 decay, used in the authors' ``main.py``) is
  ``optax.chain(optax.add_decayed_weights(wd), scale_by_acprop(),
  optax.scale_by_learning_rate(lr))``.

  Args:
    learning_rate: :math:`\eta`, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: centred second-moment decay, in [0, 1).
    eps: added to the root of the second moment, >= 0.
    eps_root: added to the stored second moment before each use, >= 0.
    weight_decay: :math:`\lambda`, decoupled, >= 0, or a schedule.
    mask: pytree or callable selecting the parameters that decay.
    mu_dtype: dtype of the first moment (None: the params' dtype).

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.acprop(1e-1)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...   updates, state = tx.update(2 * params, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params.round(3)
    Array([ 0.62 , -1.414], dtype=float32)

  References:
    Zhuang et al., `Momentum Centering and Asynchronous Update for Adaptive
    Gradient Methods <https://arxiv.org/abs/2110.05454>`_, 2021; reference
    code juntang-zhuang/ACProp-Optimizer, ``optimizers/ACProp.py``.

  Deviations: as `scale_by_acprop`; the official ``fixed_decay`` (decay not
  scaled by the learning rate) is not implemented.
  """
  v.check_learning_rate(learning_rate)
  v.check_weight_decay(weight_decay)
  return optax.chain(
    scale_by_acprop(b1, b2, eps, eps_root, mu_dtype=mu_dtype),
    optax.add_decayed_weights(weight_decay, mask),
    optax.scale_by_learning_rate(learning_rate),
  )
