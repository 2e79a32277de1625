"""NovoGrad's layer-wise scaling, with a weight decay that may be a schedule.

optax's `scale_by_novograd` adds ``weight_decay * params`` with a plain
number, so a decay schedule (the usual companion of a learning-rate schedule)
cannot be passed; this version reads the schedule at the step count and is
otherwise the same algorithm.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import tree_utils
from optax_zoo._src import validation as v

__all__ = ['novograd', 'scale_by_novograd']


def scale_by_novograd(
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.25,
  eps: jax.typing.ArrayLike = 1e-6,
  eps_root: jax.typing.ArrayLike = 0.0,
  weight_decay: optax.ScalarOrSchedule = 0.0,
  mu_dtype: Any | None = None,
  mask: Any | None = None,
) -> optax.GradientTransformation:
  r"""NovoGrad's moments (Ginsburg et al., 2019), without a learning rate.

  One second moment per parameter array (layer) :math:`l`:

  .. math::
    v^l_1 = \|g^l_1\|^2,\quad
    v^l_t = \beta_2 v^l_{t-1} + (1-\beta_2)\|g^l_t\|^2,\\
    m^l_t = \beta_1 m^l_{t-1} + \frac{g^l_t}
      {\sqrt{v^l_t + \epsilon_{root}} + \epsilon} + \lambda_t \theta^l_{t-1},
    \quad m^l_0 = 0,

  and the update is :math:`m_t` (`novograd` multiplies it by
  :math:`-\eta_t`). :math:`\lambda_t` is ``weight_decay`` read at the step
  count (0 on the first step) when it is a schedule, and 0 for the arrays
  outside ``mask``.

  The state is optax's `ScaleByNovogradState`; the per-layer :math:`v` is
  kept in float32 whatever the parameters' dtype (it is one scalar per
  array), and the update comes back in the gradient's dtype.

  Args:
    b1: first-moment decay :math:`\beta_1`, in [0, 1).
    b2: layer-wise second-moment decay :math:`\beta_2`, in [0, 1).
    eps: added outside the square root, >= 0.
    eps_root: added inside the square root, >= 0.
    weight_decay: :math:`\lambda` >= 0, or a schedule of the step count.
    mu_dtype: dtype of the first moment (None: the parameters' dtype).
    mask: pytree or callable selecting the parameters that decay (None:
      all).

  Returns:
    An `optax.GradientTransformation`; its ``update`` needs ``params``.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.scale_by_novograd(eps=0.0)
    >>> params = jnp.zeros(2)
    >>> tx.update(jnp.array([3.0, 4.0]), tx.init(params), params)[0]
    Array([0.6, 0.8], dtype=float32)

  References:
    Ginsburg et al., `Stochastic Gradient Methods with Layer-wise Adaptive
    Moments for Training of Deep Networks <https://arxiv.org/abs/1905.11286>`_,
    2019; reference code NVIDIA/OpenSeq2Seq
    ``open_seq2seq/optimizers/novograd.py``.
  """
  v.check_betas(b1=b1, b2=b2)
  v.check_non_negative('eps', eps)
  v.check_non_negative('eps_root', eps_root)
  v.check_weight_decay(weight_decay)
  v.check_float_dtype('mu_dtype', mu_dtype)

  def init_fn(params):
    return optax.ScaleByNovogradState(
      count=jnp.zeros([], jnp.int32),
      mu=optax.tree.zeros_like(params, dtype=mu_dtype),
      nu=jax.tree.map(lambda _: jnp.zeros([], jnp.float32), params),
    )

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('scale_by_novograd needs `params` in update().')
    decay = (
      weight_decay(state.count) if callable(weight_decay) else weight_decay
    )
    first = state.count == 0

    def layer(g, p, m, n, decays):
      sq_norm = jnp.sum(jnp.square(g.astype(jnp.float32)))
      n = jnp.where(first, sq_norm, b2 * n + (1 - b2) * sq_norm)
      step = g / (jnp.sqrt(n + eps_root) + eps)
      if decays:
        step = step + decay * p
      return (b1 * m + step).astype(m.dtype), n

    new = jax.tree.map(
      layer,
      updates,
      params,
      state.mu,
      state.nu,
      tree_utils.full_mask(mask, params),
    )
    mu, nu = tree_utils.unzip(new, updates, 2)
    out = optax.tree.cast_like(mu, updates)
    count = optax.safe_increment(state.count)
    return out, optax.ScaleByNovogradState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def novograd(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.95,
  b2: jax.typing.ArrayLike = 0.98,
  eps: jax.typing.ArrayLike = 0.0,
  eps_root: jax.typing.ArrayLike = 1e-8,
  weight_decay: optax.ScalarOrSchedule = 0.0,
  mu_dtype: Any | None = None,
  mask: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""NovoGrad (Ginsburg et al., 2019), with a schedulable weight decay.

  A layer-wise second moment (one scalar per parameter array), see
  `scale_by_novograd`:

  .. math::
    v^l_t = \beta_2 v^l_{t-1} + (1-\beta_2)\|g^l_t\|^2,\quad v^l_1 =
      \|g^l_1\|^2,\\
    m^l_t = \beta_1 m^l_{t-1} + \frac{g^l_t}{\sqrt{v^l_t + \epsilon_{root}}
      + \epsilon} + \lambda_t \theta^l_{t-1},\quad
    \Delta_t = -\eta_t m_t.

  The same algorithm as ``optax.novograd`` (equal to float32 rounding at a
  constant decay), which cannot take a decay schedule. Defaults are the
  reference code's (NVIDIA OpenSeq2Seq ``NovoGrad``: ``beta1=0.95,
  beta2=0.98, epsilon=1e-8`` with the epsilon inside the root), not optax's
  (``b1=0.9, b2=0.25, eps=1e-6`` outside the root); pytorch-optimizer's
  ``NovoGrad`` adds its ``eps`` outside the root (``eps=eps, eps_root=0``).
  The references' ``grad_averaging`` option (a :math:`1-\beta_1` factor on
  the new term) is not offered.

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: layer-wise second-moment decay, in [0, 1).
    eps: added to the denominator, >= 0.
    eps_root: added inside the square root, >= 0.
    weight_decay: decay :math:`\lambda` >= 0 added to the normalized
      gradient, or a schedule of the step count.
    mu_dtype: dtype of the first moment (None: the parameters' dtype).
    mask: pytree or callable selecting the parameters that decay (None:
      all).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax, optax_zoo
    >>> decay = optax.linear_schedule(1e-3, 0.0, transition_steps=100)
    >>> tx = optax_zoo.novograd(1e-1, weight_decay=decay)
    >>> params = jnp.zeros(2)
    >>> tx.update(jnp.array([3.0, 4.0]), tx.init(params), params)[0].round(4)
    Array([-0.06, -0.08], dtype=float32)

  References:
    Ginsburg et al., `Stochastic Gradient Methods with Layer-wise Adaptive
    Moments for Training of Deep Networks <https://arxiv.org/abs/1905.11286>`_,
    2019.
  """
  v.check_learning_rate(learning_rate)
  return optax.chain(
    scale_by_novograd(b1, b2, eps, eps_root, weight_decay, mu_dtype, mask),
    optax.scale_by_learning_rate(learning_rate),
  )
