"""Gadam and GadamX: iterate averaging on top of adaptive optimizers."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v
from optax_zoo.averaging._swa import averaged

__all__ = ['PadamState', 'gadam', 'gadamx', 'scale_by_padam']


class PadamState(NamedTuple):
  """State of `scale_by_padam`.

  Attributes:
    count: steps taken, int32.
    mu: first moment.
    nu: second moment.
    nu_max: running maximum of ``nu`` (AMSGrad).
  """

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  nu_max: optax.Updates


def _check_adam_args(b1, b2, eps, weight_decay):
  v.check_betas(b1=b1, b2=b2)
  v.check_non_negative('eps', eps)
  v.check_weight_decay(weight_decay)


def scale_by_padam(
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  partial: jax.typing.ArrayLike = 0.125,
) -> optax.GradientTransformation:
  r"""Padam's partially adaptive scaling (Chen et al., 2020), without a rate.

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\quad
    \hat v_t = \max(\hat v_{t-1}, v_t),\\
    u_t = \frac{m_t / (1-\beta_1^t)}
    {\big(\sqrt{\hat v_t / (1-\beta_2^t)} + \epsilon\big)^{2p}}.

  :math:`p = 1/2` is AMSGrad, :math:`p = 0` SGD with momentum.

  Args:
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added to the root of the second moment, >= 0.
    partial: :math:`p`, in [0, 0.5].

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.scale_by_padam(partial=0.5, eps=0.0)
    >>> updates, _ = tx.update(jnp.array([4.0]), tx.init(jnp.zeros(1)))
    >>> updates  # AMSGrad's first step is the sign
    Array([1.], dtype=float32)

  References:
    Chen et al., `Closing the Generalization Gap of Adaptive Gradient Methods
    in Training Deep Neural Networks <https://arxiv.org/abs/1806.06763>`_,
    2020; reference code uclaml/Padam.

  Deviations: bias corrections are applied to the moments; the reference
  folds them into the step size, which differs for :math:`p \ne 1/2` by a
  factor :math:`(1-\beta_2^t)^{p-1/2}` that vanishes as :math:`t` grows.
  """
  _check_adam_args(b1, b2, eps, 0.0)
  v.check_in_range('partial', partial, 0.0, 0.5, high_inclusive=True)

  def init_fn(params):
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)
    return PadamState(jnp.zeros([], jnp.int32), zeros(), zeros(), zeros())

  def update_fn(updates, state, params=None):
    del params
    # 1 - b rounded in float32 whether b is a constant or traced, so the
    # method is the same under `optax.inject_hyperparams`: the float64
    # constant 1 - 0.999 differs from float32's by 5e-5 relative, which
    # p = 1/8 does not damp as Adam's square root does.
    beta1, beta2 = jnp.float32(b1), jnp.float32(b2)
    keep = lambda new, old: jax.tree.map(
      lambda n, o: n.astype(o.dtype), new, old
    )
    mu = keep(optax.tree.update_moment(updates, state.mu, beta1, 1), state.mu)
    nu = keep(
      optax.tree.update_moment_per_elem_norm(updates, state.nu, beta2, 2),
      state.nu,
    )
    nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
    count = optax.safe_increment(state.count)
    mu_hat = optax.tree.bias_correction(mu, beta1, count)
    nu_hat = optax.tree.bias_correction(nu_max, beta2, count)
    out = jax.tree.map(
      lambda m, n, g: (m / (jnp.sqrt(n) + eps) ** (2 * partial)).astype(
        g.dtype
      ),
      mu_hat,
      nu_hat,
      updates,
    )
    return out, PadamState(count, mu, nu, nu_max)

  return optax.GradientTransformation(init_fn, update_fn)


def gadam(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  weight_decay: jax.typing.ArrayLike = 5e-4,
  *,
  start_step: jax.typing.ArrayLike,
  every_k: jax.typing.ArrayLike = 1,
  accumulator_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Gadam (Granziol et al., 2020): AdamW with iterate averaging.

  The weights follow AdamW with decoupled weight decay; from ``start_step``
  on, every ``every_k`` steps, they enter a running mean (as `swa`):

  .. math::
    \theta_{t+1} = \theta_t - \eta\big(\tfrac{\hat m_t}{\sqrt{\hat v_t}
    + \epsilon} + \lambda\theta_t\big),\qquad
    \theta_{IA} = \tfrac1n \textstyle\sum_{snapshots} \theta_t.

  `optax_zoo.eval_params` returns :math:`\theta_{IA}`. The state is AdamW's
  plus one parameter copy.

  Args:
    learning_rate: :math:`\eta`, a scalar or schedule.
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added to the root of the second moment, >= 0.
    weight_decay: :math:`\lambda`, decoupled, >= 0.
    start_step: completed steps before averaging starts, an integer >= 0.
    every_k: steps between snapshots, an integer >= 1.
    accumulator_dtype: dtype of the average, as in `optax_zoo.swa` (None:
      float32 for parameters narrower than float32).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.gadam(1e-1, start_step=0)
    >>> params = jnp.array([1.0])
    >>> state = tx.init(params)
    >>> for _ in range(2):
    ...   updates, state = tx.update(params, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> optax_zoo.eval_params(state, params)
    Array([0.85...], dtype=float32)

  References:
    Granziol et al., `Iterate Averaging in the Quest for Best Test Error
    <https://arxiv.org/abs/2003.01247>`_, 2020; reference code
    diegogranziol/Gadam, ``core/methods``.

  Deviations: optax's AdamW (weight decay scaled by the full learning rate);
  counted in steps, not epochs.
  """
  v.check_learning_rate(learning_rate)
  _check_adam_args(b1, b2, eps, weight_decay)
  v.check_schedule_args(start_step, every_k)
  inner = optax.adamw(learning_rate, b1, b2, eps, weight_decay=weight_decay)
  v.check_float_dtype('accumulator_dtype', accumulator_dtype)
  return averaged(
    inner, start_step, every_k, None, accumulator_dtype, name='gadam'
  )


def gadamx(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  weight_decay: jax.typing.ArrayLike = 5e-4,
  partial: jax.typing.ArrayLike = 0.125,
  *,
  start_step: jax.typing.ArrayLike,
  every_k: jax.typing.ArrayLike = 1,
  accumulator_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""GadamX (Granziol et al., 2020): Padam with decoupled weight decay and
  iterate averaging.

  .. math::
    \theta_{t+1} = \theta_t - \eta\big(u_t^{Padam(p)} + \lambda\theta_t\big),
    \qquad \theta_{IA} = \tfrac1n \textstyle\sum_{snapshots} \theta_t,

  with :math:`u^{Padam(p)}` from `scale_by_padam`. `optax_zoo.eval_params`
  returns :math:`\theta_{IA}`. The state holds three moments plus one
  parameter copy.

  Args:
    learning_rate: :math:`\eta`, a scalar or schedule (partially adaptive
      methods take SGD-sized rates, e.g. 0.1).
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added to the root of the second moment, >= 0.
    weight_decay: :math:`\lambda`, decoupled, >= 0.
    partial: :math:`p`, in [0, 0.5].
    start_step: completed steps before averaging starts, an integer >= 0.
    every_k: steps between snapshots, an integer >= 1.
    accumulator_dtype: dtype of the average, as in `optax_zoo.swa` (None:
      float32 for parameters narrower than float32).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.gadamx(1e-1, start_step=0)
    >>> params = jnp.array([1.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(params, state, params)
    >>> optax_zoo.eval_params(state, optax.apply_updates(params, updates))
    Array([0.9...], dtype=float32)

  References:
    Granziol et al., `Iterate Averaging in the Quest for Best Test Error
    <https://arxiv.org/abs/2003.01247>`_, 2020.

  Deviations: as `scale_by_padam`; counted in steps, not epochs.
  """
  v.check_learning_rate(learning_rate)
  _check_adam_args(b1, b2, eps, weight_decay)
  v.check_schedule_args(start_step, every_k)
  inner = optax.chain(
    scale_by_padam(b1, b2, eps, partial),
    optax.add_decayed_weights(weight_decay),
    optax.scale_by_learning_rate(learning_rate),
  )
  v.check_float_dtype('accumulator_dtype', accumulator_dtype)
  return averaged(
    inner, start_step, every_k, None, accumulator_dtype, name='gadamx'
  )
