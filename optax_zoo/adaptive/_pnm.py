"""Positive-negative momentum: PNM and AdaPNM (Xie et al., 2021).

Two momentum buffers are updated on alternate steps, each with decay
beta1 ** 2; the step mixes the one just updated (positively) with the other
(negatively), which enlarges the gradient noise relative to the mean step
(the paper's route to better generalization). The state holds the buffer of
odd steps as ``mu_odd`` and that of even steps as ``mu_even``, and each step
picks the roles by the step's parity. The buffers stay in place: trading
their places in the state instead makes XLA copy both through temporaries
under donation (about 3x Adam's step time on CPU).

Non-finite gradients: not sanitized; a NaN or inf gradient gives a NaN update
and a poisoned state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import tree_utils
from optax_zoo._src import validation as v

__all__ = [
  'AdaPNMState',
  'PNMState',
  'adapnm',
  'pnm',
  'scale_by_adapnm',
  'scale_by_pnm',
]


class PNMState(NamedTuple):
  """State of `scale_by_pnm`.

  Attributes:
    count: steps taken, int32.
    mu_odd: the momentum buffer updated at odd steps (1, 3, ...).
    mu_even: the momentum buffer updated at even steps (2, 4, ...).
  """

  count: jax.Array
  mu_odd: optax.Updates
  mu_even: optax.Updates


class AdaPNMState(NamedTuple):
  """State of `scale_by_adapnm`.

  Attributes:
    count: steps taken, int32.
    mu_odd: the momentum buffer updated at odd steps (1, 3, ...).
    mu_even: the momentum buffer updated at even steps (2, 4, ...).
    nu: second moment.
    nu_max: running maximum of ``nu`` with ``amsgrad``, else None.
  """

  count: jax.Array
  mu_odd: optax.Updates
  mu_even: optax.Updates
  nu: optax.Updates
  nu_max: optax.Updates | None


def _check_pn_args(b1, b0, mu_dtype):
  v.check_betas(b1=b1)
  v.check_non_negative('b0', b0)
  v.check_float_dtype('mu_dtype', mu_dtype)


def _init_pn_buffers(params, mu_dtype):
  zeros = lambda: optax.tree.zeros_like(params, dtype=mu_dtype)
  return zeros(), zeros()


def _pn_momentum(updates, count, mu_odd, mu_even, b1, b0):
  """Updates the buffer whose turn it is; returns both and the PN momentum.

  Step ``count + 1`` updates ``mu_odd`` if odd, else ``mu_even``. The two
  buffers average disjoint sets of gradients, so their noises are
  independent; dividing by the norm of the weights (1 + b0, -b0) gives the
  mix one buffer's noise variance.
  """
  odd = count % 2 == 0
  noise_norm = ((1 + b0) ** 2 + b0**2) ** 0.5

  def leaf(g, m_odd, m_even):
    # The mix reads the buffers as stored: reading their old values would
    # make XLA copy them before updating them in place.
    new_odd = jnp.where(odd, (1 - b1**2) * g + b1**2 * m_odd, m_odd)
    new_even = jnp.where(odd, m_even, (1 - b1**2) * g + b1**2 * m_even)
    new_odd = new_odd.astype(m_odd.dtype)
    new_even = new_even.astype(m_even.dtype)
    pos = jnp.where(odd, new_odd, new_even)
    neg = jnp.where(odd, new_even, new_odd)
    return new_odd, new_even, ((1 + b0) * pos - b0 * neg) / noise_norm

  return tree_utils.unzip(
    jax.tree.map(leaf, updates, mu_odd, mu_even), updates, 3
  )


def _with_weight_decay(
  transform: optax.GradientTransformation,
  learning_rate: optax.ScalarOrSchedule,
  weight_decay: jax.typing.ArrayLike,
  mask: Any | None,
  decoupled: bool,
) -> optax.GradientTransformation:
  """Weight decay as the official code does it, then the learning rate.

  Decoupled: theta <- (1 - lr * wd) theta - lr * u; otherwise L2, added to
  the gradient before ``transform``.
  """
  decay = optax.add_decayed_weights(weight_decay, mask)
  steps = (transform, decay) if decoupled else (decay, transform)
  return optax.chain(*steps, optax.scale_by_learning_rate(learning_rate))


def _check_alias_args(learning_rate, weight_decay, decoupled):
  v.check_learning_rate(learning_rate)
  v.check_weight_decay(weight_decay)
  v.check_choice('decoupled', decoupled, (True, False))


def scale_by_pnm(
  b1: jax.typing.ArrayLike = 0.9,
  b0: jax.typing.ArrayLike = 1.0,
  *,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""Positive-negative momentum (Xie et al., 2021), without a learning rate.

  .. math::
    m_t = \beta_1^2 m_{t-2} + (1-\beta_1^2) g_t,\qquad
    u_t = \frac{(1+\beta_0) m_t - \beta_0 m_{t-1}}
      {\sqrt{(1+\beta_0)^2 + \beta_0^2}},

  with :math:`m_{-1} = m_0 = 0`; the two buffers are kept in the state as
  ``mu_odd`` (odd steps) and ``mu_even`` (even steps). No bias correction.
  :math:`\beta_0 = 0` is heavy-ball momentum with decay :math:`\beta_1^2`
  every other step.

  Args:
    b1: momentum decay, in [0, 1); each buffer decays by :math:`\beta_1^2`.
    b0: positive-negative mixing coefficient :math:`\beta_0`, >= 0 (the
      official code's ``betas[1]``).
    mu_dtype: dtype of the momentum buffers (None: the params' dtype).

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.scale_by_pnm()
    >>> state = tx.init(jnp.zeros(1))
    >>> for _ in range(2):
    ...   updates, state = tx.update(jnp.ones(1), state)
    ...   print(updates.round(4))
    [0.1699]
    [0.085]

  References:
    Xie et al., `Positive-Negative Momentum: Manipulating Stochastic Gradient
    Noise to Improve Generalization <https://arxiv.org/abs/2103.17182>`_,
    2021; reference code zeke-xie/Positive-Negative-Momentum,
    ``pnm_optim/pnm.py``.
  """
  _check_pn_args(b1, b0, mu_dtype)

  def init_fn(params):
    mu_odd, mu_even = _init_pn_buffers(params, mu_dtype)
    return PNMState(jnp.zeros([], jnp.int32), mu_odd, mu_even)

  def update_fn(updates, state, params=None):
    del params
    mu_odd, mu_even, mixed = _pn_momentum(
      updates, state.count, state.mu_odd, state.mu_even, b1, b0
    )
    out = optax.tree.cast_like(mixed, updates)
    return out, PNMState(optax.safe_increment(state.count), mu_odd, mu_even)

  return optax.GradientTransformation(init_fn, update_fn)


def pnm(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b0: jax.typing.ArrayLike = 1.0,
  weight_decay: jax.typing.ArrayLike = 0.0,
  mask: Any | None = None,
  *,
  decoupled: bool = True,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""PNM (Xie et al., 2021): SGD with positive-negative momentum.

  .. math::
    \theta_{t+1} = (1 - \eta_t \lambda)\,\theta_t - \eta_t u_t,

  with :math:`u_t` from `scale_by_pnm`; with ``decoupled=False`` the decay is
  L2 instead, :math:`g_t + \lambda\theta_t` entering the momentum.

  Args:
    learning_rate: :math:`\eta`, a float >= 0 or a schedule (SGD-sized).
    b1: momentum decay, in [0, 1); each buffer decays by :math:`\beta_1^2`.
    b0: positive-negative mixing coefficient :math:`\beta_0`, >= 0.
    weight_decay: :math:`\lambda`, >= 0.
    mask: pytree or callable selecting the parameters that decay (None:
      all).
    decoupled: decoupled weight decay (scaled by the full learning rate, as
      the official code and PyTorch do) or, if False, L2 regularization.
    mu_dtype: dtype of the momentum buffers (None: the params' dtype).

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.pnm(0.5, weight_decay=1e-2)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...   updates, state = tx.update(params, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params.tolist()
    [0.762, -1.524]

  References:
    Xie et al., `Positive-Negative Momentum: Manipulating Stochastic Gradient
    Noise to Improve Generalization <https://arxiv.org/abs/2103.17182>`_,
    2021; reference code zeke-xie/Positive-Negative-Momentum,
    ``pnm_optim/pnm.py``.
  """
  _check_alias_args(learning_rate, weight_decay, decoupled)
  return _with_weight_decay(
    scale_by_pnm(b1, b0, mu_dtype=mu_dtype),
    learning_rate,
    weight_decay,
    mask,
    decoupled,
  )


def scale_by_adapnm(
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  b0: jax.typing.ArrayLike = 1.0,
  eps: jax.typing.ArrayLike = 1e-8,
  *,
  amsgrad: bool = True,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""Adaptive positive-negative momentum (Xie et al., 2021), without a rate.

  .. math::
    m_t = \beta_1^2 m_{t-2} + (1-\beta_1^2) g_t,\quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\quad
    \hat v_t = \max(\hat v_{t-1}, v_t),\\
    u_t = \frac{1}{1-\beta_1^t}
      \frac{(1+\beta_0) m_t - \beta_0 m_{t-1}}{\sqrt{(1+\beta_0)^2+\beta_0^2}}
      \Big/ \Big(\sqrt{\hat v_t / (1-\beta_2^t)} + \epsilon\Big),

  with :math:`\hat v_t = v_t` when ``amsgrad`` is off. The first moment is
  bias-corrected by :math:`1-\beta_1^t` although each buffer decays by
  :math:`\beta_1^2`, as in the official code.

  Args:
    b1: momentum decay, in [0, 1); each buffer decays by :math:`\beta_1^2`.
    b2: second-moment decay, in [0, 1).
    b0: positive-negative mixing coefficient :math:`\beta_0`, >= 0 (the
      official code's ``betas[2]``).
    eps: added to the bias-corrected root of the second moment, >= 0.
    amsgrad: use the running maximum of the second moment (default on, as
      in the official code).
    mu_dtype: dtype of the momentum buffers (None: the params' dtype).

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.scale_by_adapnm(eps=0.0)
    >>> state = tx.init(jnp.zeros(2))
    >>> updates, state = tx.update(jnp.array([3.0, -1.0]), state)
    >>> updates.round(4)  # 2 (1 + b1) / sqrt(5) times the sign
    Array([ 1.6994, -1.6994], dtype=float32)

  References:
    Xie et al., `Positive-Negative Momentum: Manipulating Stochastic Gradient
    Noise to Improve Generalization <https://arxiv.org/abs/2103.17182>`_,
    2021; reference code zeke-xie/Positive-Negative-Momentum,
    ``pnm_optim/adapnm.py``.

  Deviations: none from the official code. pytorch_optimizer's ``AdaPNM``
  adds :math:`\epsilon` before dividing by :math:`\sqrt{1-\beta_2^t}`, and
  :math:`10^{-15}` under the root: it matches ours at ``eps=0`` and
  gradients well above :math:`10^{-7}`.
  """
  _check_pn_args(b1, b0, mu_dtype)
  v.check_betas(b2=b2)
  v.check_non_negative('eps', eps)
  v.check_choice('amsgrad', amsgrad, (True, False))

  def init_fn(params):
    mu_odd, mu_even = _init_pn_buffers(params, mu_dtype)
    nu = optax.tree.zeros_like(params)
    nu_max = optax.tree.zeros_like(params) if amsgrad else None
    return AdaPNMState(jnp.zeros([], jnp.int32), mu_odd, mu_even, nu, nu_max)

  def update_fn(updates, state, params=None):
    del params
    mu_odd, mu_even, mixed = _pn_momentum(
      updates, state.count, state.mu_odd, state.mu_even, b1, b0
    )
    nu = optax.tree.cast_like(
      optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2),
      state.nu,
    )
    nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu) if amsgrad else None
    count = optax.safe_increment(state.count)
    bc1 = 1 - b1**count
    root_bc2 = jnp.sqrt(1 - b2**count)
    out = jax.tree.map(
      lambda m, n, g: (m / bc1 / (jnp.sqrt(n) / root_bc2 + eps)).astype(
        g.dtype
      ),
      mixed,
      nu_max if amsgrad else nu,
      updates,
    )
    return out, AdaPNMState(count, mu_odd, mu_even, nu, nu_max)

  return optax.GradientTransformation(init_fn, update_fn)


def adapnm(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  b0: jax.typing.ArrayLike = 1.0,
  eps: jax.typing.ArrayLike = 1e-8,
  weight_decay: jax.typing.ArrayLike = 0.0,
  mask: Any | None = None,
  *,
  amsgrad: bool = True,
  decoupled: bool = True,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""AdaPNM (Xie et al., 2021): Adam with positive-negative momentum.

  .. math::
    \theta_{t+1} = (1 - \eta_t \lambda)\,\theta_t - \eta_t u_t,

  with :math:`u_t` from `scale_by_adapnm`; with ``decoupled=False`` the decay
  is L2 instead, :math:`g_t + \lambda\theta_t` entering both moments.

  Args:
    learning_rate: :math:`\eta`, a float >= 0 or a schedule.
    b1: momentum decay, in [0, 1); each buffer decays by :math:`\beta_1^2`.
    b2: second-moment decay, in [0, 1).
    b0: positive-negative mixing coefficient :math:`\beta_0`, >= 0.
    eps: added to the bias-corrected root of the second moment, >= 0.
    weight_decay: :math:`\lambda`, >= 0.
    mask: pytree or callable selecting the parameters that decay (None:
      all).
    amsgrad: use the running maximum of the second moment.
    decoupled: decoupled weight decay (scaled by the full learning rate, as
      the official code and PyTorch do) or, if False, L2 regularization.
    mu_dtype: dtype of the momentum buffers (None: the params' dtype).

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.adapnm(1e-1, weight_decay=1e-2)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...   updates, state = tx.update(params, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params.tolist()
    [0.710, -1.702]

  References:
    Xie et al., `Positive-Negative Momentum: Manipulating Stochastic Gradient
    Noise to Improve Generalization <https://arxiv.org/abs/2103.17182>`_,
    2021; reference code zeke-xie/Positive-Negative-Momentum,
    ``pnm_optim/adapnm.py``.

  Deviations: as `scale_by_adapnm`.
  """
  _check_alias_args(learning_rate, weight_decay, decoupled)
  return _with_weight_decay(
    scale_by_adapnm(b1, b2, b0, eps, amsgrad=amsgrad, mu_dtype=mu_dtype),
    learning_rate,
    weight_decay,
    mask,
    decoupled,
  )
