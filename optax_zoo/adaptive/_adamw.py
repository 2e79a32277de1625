"""AdamW in optax's form by default and in the paper's form on request.

Non-finite gradients: not sanitized; a NaN or inf gradient gives a NaN update
and a poisoned state.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from optax_zoo._src import validation as v

__all__ = ['adamw']


def adamw(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  eps_root: jax.typing.ArrayLike = 0.0,
  mu_dtype: Any | None = None,
  weight_decay: optax.ScalarOrSchedule = 1e-4,
  mask: Any | None = None,
  *,
  nesterov: bool = False,
  schedule_multiplier: optax.ScalarOrSchedule | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay.

  By default, optax's (and PyTorch's) form, which multiplies the decay by the
  full learning rate :math:`\eta_t`:

  .. math::
    \theta_t = \theta_{t-1} - \eta_t \Big(\frac{\hat m_t}{\sqrt{\hat v_t}
      + \epsilon} + \lambda \theta_{t-1}\Big).

  Given ``schedule_multiplier`` :math:`s_t`, the paper's Algorithm 2, where
  the decay is scaled by the schedule multiplier only, not by the base rate
  :math:`\alpha` = ``learning_rate``:

  .. math::
    \theta_t = \theta_{t-1} - s_t \Big(\alpha \frac{\hat m_t}{\sqrt{\hat v_t}
      + \epsilon} + \lambda \theta_{t-1}\Big).

  That is what decouples the best :math:`\lambda` from :math:`\alpha`: in
  the default form the decay per step is :math:`\alpha s_t \lambda`, so
  retuning :math:`\alpha` changes it. The multiplier is a separate argument,
  not a normalization of a learning-rate schedule (e.g. by its value at step
  0), because a warm-up schedule starts at 0 and its peak is not known to a
  transform. Typical use: ``adamw(1e-3, weight_decay=1e-4,
  schedule_multiplier=optax.cosine_decay_schedule(1.0, steps))``; a
  scheduled ``learning_rate`` is then multiplied by :math:`s_t` as well.
  :math:`s_t` is read at the step count :math:`t - 1` (optax's convention;
  the paper writes :math:`\eta_t` for its 1-based :math:`t`).

  Args:
    learning_rate: :math:`\eta` (default form) or the base rate
      :math:`\alpha` (paper form), a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added outside the square root, >= 0.
    eps_root: added inside the square root, >= 0.
    mu_dtype: dtype of the first moment (None: the params' dtype).
    weight_decay: decoupled decay :math:`\lambda` >= 0, or a schedule.
    mask: pytree or callable selecting the parameters that decay.
    nesterov: use Nesterov momentum.
    schedule_multiplier: None for optax's form (bit-identical to
      `optax.adamw`), or :math:`s_t` >= 0, a float or a schedule, for the
      paper's form.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> params = jnp.array([1.0, -2.0])
    >>> tx = optax_zoo.adamw(1e-1, weight_decay=0.5)
    >>> tx.update(jnp.zeros(2), tx.init(params), params)[0]  # -0.1 * 0.5 p
    Array([-0.05,  0.1 ], dtype=float32)
    >>> tx = optax_zoo.adamw(1e-1, weight_decay=0.5, schedule_multiplier=1.0)
    >>> tx.update(jnp.zeros(2), tx.init(params), params)[0]  # -0.5 p
    Array([-0.5,  1. ], dtype=float32)

  References:
    Loshchilov & Hutter, `Decoupled Weight Decay Regularization
    <https://arxiv.org/abs/1711.05101>`_, 2019.

  Deviations: the default is optax's form, kept for compatibility with
  optax and PyTorch; pass ``schedule_multiplier`` for the paper's.
  """
  v.check_adam_family(learning_rate, b1, b2, eps, eps_root)
  v.check_weight_decay(weight_decay)
  v.check_float_dtype('mu_dtype', mu_dtype)
  if schedule_multiplier is None:
    return optax.adamw(
      learning_rate,
      b1,
      b2,
      eps,
      eps_root,
      mu_dtype,
      weight_decay,
      mask,
      nesterov=nesterov,
    )
  v.check_learning_rate(schedule_multiplier, 'schedule_multiplier')
  return optax.chain(
    optax.scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
    optax.scale_by_learning_rate(learning_rate, flip_sign=False),
    optax.add_decayed_weights(weight_decay, mask),
    optax.scale_by_learning_rate(schedule_multiplier),
  )
