r"""LARS's layer-wise trust ratio in the paper's form.

optax's `lars` divides by :math:`\|g + \beta w\|`; the paper (eq. 6 and
Algorithm 1) divides by :math:`\|g\| + \beta \|w\|`, as do NVIDIA Apex's
LARC and pytorch-optimizer's LARS. The two agree when the weight decay is 0
and differ otherwise, so `optax_zoo.lars` uses this transform.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import tree_utils
from optax_zoo._src import validation as v

__all__ = ['ScaleByLarsState', 'lars', 'scale_by_lars']


class ScaleByLarsState(NamedTuple):
  """State of `scale_by_lars`: the step count, read by a decay schedule."""

  count: jax.Array


def scale_by_lars(
  weight_decay: optax.ScalarOrSchedule = 0.0,
  trust_coefficient: jax.typing.ArrayLike = 0.001,
  eps: jax.typing.ArrayLike = 0.0,
  *,
  mask: Any = True,
  trust_ratio_mask: Any = True,
  weight_decay_mask: Any = v.UNSET,
) -> optax.GradientTransformation:
  r"""LARS's local learning rate (You et al., 2017), without the global one.

  For each parameter array (layer) :math:`l`, eq. (6) of the paper:

  .. math::
    \lambda^l = \eta \frac{\|w^l\|}{\|g^l\| + \beta \|w^l\| + \epsilon},
    \quad u^l = \lambda^l (g^l + \beta w^l),

  with :math:`\lambda^l = 1` where :math:`\|w^l\| = 0` or the denominator
  is 0 (a zero-initialized layer takes a plain gradient step, as in optax
  and pytorch-optimizer). Layers outside ``trust_ratio_mask`` get
  :math:`u^l = g^l + \beta w^l`; layers outside ``mask`` have
  :math:`\beta = 0`. `lars` scales :math:`u` by :math:`-\gamma_t` and then
  accumulates momentum, which is Algorithm 1's order.

  Args:
    weight_decay: :math:`\beta` >= 0, or a schedule of the step count.
    trust_coefficient: :math:`\eta` > 0.
    eps: added to the denominator, >= 0 (the paper has none).
    mask: tree (or prefix, or callable of the params) of bools selecting the
      decayed layers, as ``optax.masked`` takes.
    trust_ratio_mask: the same, selecting the layers with a trust ratio.
    weight_decay_mask: deprecated name of ``mask``.

  Returns:
    An `optax.GradientTransformation`; its ``update`` needs ``params``.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.scale_by_lars(weight_decay=1.0, trust_coefficient=1.0)
    >>> params = jnp.array([3.0, 4.0])  # |w| = 5, |g| = 10
    >>> tx.update(2 * params, tx.init(params), params)[0]  # 5/15 * 3 w
    Array([3., 4.], dtype=float32)

  References:
    You, Gitman & Ginsburg, `Large Batch Training of Convolutional Networks
    <https://arxiv.org/abs/1708.03888>`_, 2017.
  """
  v.check_weight_decay(weight_decay)
  v.check_positive('trust_coefficient', trust_coefficient)
  v.check_non_negative('eps', eps)
  mask = v.renamed_argument(
    'weight_decay_mask', weight_decay_mask, 'mask', mask, True
  )

  def init_fn(params):
    del params
    return ScaleByLarsState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('scale_by_lars needs `params` in update().')
    decay = (
      weight_decay(state.count) if callable(weight_decay) else weight_decay
    )

    def layer(g, w, decays, trusts):
      beta = decay if decays else 0.0
      direction = g + beta * w
      if not trusts:
        return direction.astype(g.dtype)
      w_norm = jnp.linalg.norm(w.astype(jnp.float32))
      denom = jnp.linalg.norm(g.astype(jnp.float32)) + beta * w_norm + eps
      # == 0 rather than > 0, so that a NaN norm gives a NaN ratio.
      ratio = jnp.where(
        (w_norm == 0) | (denom == 0), 1.0, trust_coefficient * w_norm / denom
      )
      return (ratio * direction).astype(g.dtype)

    out = jax.tree.map(
      layer,
      updates,
      params,
      tree_utils.full_mask(mask, params),
      tree_utils.full_mask(trust_ratio_mask, params),
    )
    return out, ScaleByLarsState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def lars(
  learning_rate: optax.ScalarOrSchedule,
  weight_decay: optax.ScalarOrSchedule = 0.0,
  mask: Any = True,
  trust_coefficient: jax.typing.ArrayLike = 0.001,
  eps: jax.typing.ArrayLike = 0.0,
  trust_ratio_mask: Any = True,
  momentum: jax.typing.ArrayLike = 0.9,
  nesterov: bool = False,
  *,
  weight_decay_mask: Any = v.UNSET,
) -> optax.GradientTransformationExtraArgs:
  r"""LARS (You et al., 2017): Algorithm 1 of the paper.

  .. math::
    \lambda^l_t = \eta_{trust} \frac{\|\theta^l\|}{\|g^l\| +
      \beta\|\theta^l\| + \epsilon},\quad
    m_t = \mu m_{t-1} + \gamma_t \lambda_t (g_t + \beta \theta_t),\quad
    \Delta_t = -m_t,

  the global rate :math:`\gamma_t` inside the momentum, as in the paper (see
  `scale_by_lars` for the masks and zero norms).

  Deviation from optax: ``optax.lars`` divides by
  :math:`\|g^l + \beta\theta^l\|` instead of
  :math:`\|g^l\| + \beta\|\theta^l\|`; the two agree at
  ``weight_decay=0``. pytorch-optimizer's ``LARS`` has the paper's ratio but
  multiplies the rate outside the momentum and applies the ratio and the
  decay to arrays of rank >= 2 only: it equals this at a constant rate with
  both masks ``lambda p: jax.tree.map(lambda x: x.ndim > 1, p)``.

  Args:
    learning_rate: global step size :math:`\gamma_t`, a float >= 0 or a
      schedule.
    weight_decay: decay :math:`\beta` >= 0, or a schedule.
    mask: pytree or callable selecting the decayed parameters (``optax.lars``
      calls it ``weight_decay_mask``).
    trust_coefficient: :math:`\eta_{trust}` > 0.
    eps: added to the trust-ratio denominator, >= 0.
    trust_ratio_mask: pytree or callable selecting layers with a trust ratio.
    momentum: momentum :math:`\mu`, in [0, 1).
    nesterov: use Nesterov momentum (not in the paper).
    weight_decay_mask: deprecated name of ``mask``, the name of every decay
      mask in optax_zoo.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.lars(1.0, trust_coefficient=0.1)
    >>> params = jnp.array([3.0, 4.0])
    >>> tx.update(2 * params, tx.init(params), params)[0]
    Array([-0.3..., -0.4...], dtype=float32)

  References:
    You et al., `Large Batch Training of Convolutional Networks
    <https://arxiv.org/abs/1708.03888>`_, 2017.
  """
  v.check_learning_rate(learning_rate)
  v.check_in_range('momentum', momentum, 0.0, 1.0)
  mask = v.renamed_argument(
    'weight_decay_mask', weight_decay_mask, 'mask', mask, True
  )
  return optax.chain(
    scale_by_lars(
      weight_decay,
      trust_coefficient,
      eps,
      mask=mask,
      trust_ratio_mask=trust_ratio_mask,
    ),
    optax.scale_by_learning_rate(learning_rate),
    optax.trace(decay=momentum, nesterov=nesterov),
  )
