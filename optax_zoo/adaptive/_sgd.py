"""SGD with optional (Nesterov) momentum: optax's implementation, validated.

Non-finite gradients: not sanitized; a NaN or inf gradient gives a NaN or inf
update (and, for the moment-based ones, a poisoned state), which is what the
user should see.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from optax_zoo._src import validation as v

__all__ = ['sgd']


def sgd(
  learning_rate: optax.ScalarOrSchedule,
  momentum: jax.typing.ArrayLike | None = None,
  nesterov: bool = False,
  accumulator_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Stochastic gradient descent with optional (Nesterov) momentum, optax's.

  .. math::
    m_t = \mu m_{t-1} + g_t,\quad
    \Delta_t = -\eta_t m_t \ \ (\text{Nesterov: } -\eta_t(g_t + \mu m_t)).

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    momentum: :math:`\mu` in [0, 1), or None for plain SGD.
    nesterov: use Nesterov momentum (needs ``momentum``).
    accumulator_dtype: dtype of the momentum buffer.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.sgd(0.5, momentum=0.9)
    >>> tx.update(jnp.array([1.0, -2.0]), tx.init(jnp.zeros(2)))[0]
    Array([-0.5,  1. ], dtype=float32)

  References:
    Robbins & Monro, A Stochastic Approximation Method, 1951; Sutskever et
    al., On the importance of initialization and momentum in deep learning,
    2013.
  """
  v.check_learning_rate(learning_rate)
  if momentum is not None:
    v.check_in_range('momentum', momentum, 0.0, 1.0)
  elif nesterov:
    raise ValueError('`nesterov=True` needs a `momentum`, got momentum=None.')
  v.check_float_dtype('accumulator_dtype', accumulator_dtype)
  return optax.sgd(learning_rate, momentum, nesterov, accumulator_dtype)
