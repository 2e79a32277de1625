"""8-bit Adam and AdamW in the references' arithmetic (torchao, bitsandbytes).

Non-finite gradients: not sanitized; a NaN or inf gradient gives a NaN
update and NaN stored moments in its block.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v
from optax_zoo.quantization._state import quantize_state

__all__ = ['adam8bit', 'adamw8bit', 'scale_by_adam8bit']


def _scale_by_reference_adam(b1, b2, eps) -> optax.GradientTransformation:
  """Adam's direction in torchao's float32 arithmetic.

  ``m + (1 - b1) (g - m)`` is ``torch.lerp`` (weights below 0.5), the
  bias corrections use a float32 step count, and the direction is
  ``(m / c1) / (sqrt(v) / sqrt(c2) + eps)``.
  """

  def init_fn(params):
    zeros = lambda p: jnp.zeros_like(p, jnp.float32)
    return optax.ScaleByAdamState(
      count=jnp.zeros([], jnp.int32),
      mu=jax.tree.map(zeros, params),
      nu=jax.tree.map(zeros, params),
    )

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    step = count.astype(jnp.float32)
    c1 = 1 - jnp.asarray(b1, jnp.float32) ** step
    c2 = jnp.sqrt(1 - jnp.asarray(b2, jnp.float32) ** step)
    w1, w2 = 1 - b1, 1 - b2
    g32 = jax.tree.map(lambda g: g.astype(jnp.float32), updates)
    mu = jax.tree.map(lambda m, g: m + w1 * (g - m), state.mu, g32)
    nu = jax.tree.map(lambda n, g: n + w2 * (g * g - n), state.nu, g32)
    direction = jax.tree.map(
      lambda m, n, g: ((m / c1) / (jnp.sqrt(n) / c2 + eps)).astype(g.dtype),
      mu,
      nu,
      updates,
    )
    return direction, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def scale_by_adam8bit(
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  *,
  block_size: int = 256,
  min_size: int = 4096,
  second_moment_floor: jax.typing.ArrayLike | None = None,
  mask: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Adam's direction with 8-bit block-wise quantized moments.

  With :math:`\mathrm{dq}` and :math:`\mathrm{q}` the block-wise
  (de)quantization of `quantize_state` (signed map for :math:`m`, unsigned
  for :math:`v`):

  .. math::
    m_t = \hat m + (1-\beta_1)(g_t - \hat m),\quad
    v_t = \hat v + (1-\beta_2)(g_t^2 - \hat v),\quad
    \hat m = \mathrm{dq}(M_{t-1}),\ \hat v = \mathrm{dq}(V_{t-1}),\\
    u_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t} / \sqrt{1-\beta_2^t}
      + \epsilon},\quad M_t = \mathrm{q}(m_t),\ V_t = \mathrm{q}(v_t).

  Moments are float32 whatever the parameters' dtype (as in torchao);
  ``u_t`` comes back in the gradient's dtype.

  Args:
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added to the bias-corrected root, >= 0.
    block_size: elements per quantization block, a power of two.
    min_size: tensors with fewer elements keep float32 moments.
    second_moment_floor: see `quantize_state` (None: off, as torchao).
    mask: see `quantize_state`.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo.quantization import scale_by_adam8bit
    >>> tx = scale_by_adam8bit(min_size=0)
    >>> params = jnp.ones(300)
    >>> updates, state = tx.update(params, tx.init(params), params)
    >>> float(updates[0])
    1.0

  References:
    Dettmers et al., `8-bit Optimizers via Block-wise Quantization
    <https://arxiv.org/abs/2110.02861>`_, 2022; torchao 0.18
    ``torchao.optim.AdamW8bit`` (``single_param_adam``).
  """
  v.check_betas(b1=b1, b2=b2)
  v.check_non_negative('eps', eps)
  return quantize_state(
    _scale_by_reference_adam(b1, b2, eps),
    block_size=block_size,
    min_size=min_size,
    second_moment_floor=second_moment_floor,
    mask=mask,
  )


def adam8bit(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  *,
  block_size: int = 256,
  min_size: int = 4096,
  second_moment_floor: jax.typing.ArrayLike | None = None,
  mask: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Adam with 8-bit block-wise quantized state (Dettmers et al. 2022).

  `scale_by_adam8bit` followed by the learning rate:
  :math:`\Delta\theta_t = -\eta_t u_t`. State: one byte per element per
  moment plus a float32 per block of 256, 2.03 bytes per parameter
  against Adam's 8 (tensors under ``min_size`` elements excepted).

  Args:
    learning_rate: step size :math:`\eta`, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added to the bias-corrected root, >= 0.
    block_size: elements per quantization block, a power of two.
    min_size: tensors with fewer elements keep float32 moments.
    second_moment_floor: see `quantize_state` (None: off).
    mask: see `quantize_state`.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from optax_zoo.quantization import adam8bit
    >>> tx = adam8bit(1e-1, min_size=0)
    >>> params = jnp.linspace(-1.0, 1.0, 512)
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...   updates, state = tx.update(2 * params, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> float(params[0]), state[0].inner_state.mu.codes.dtype
    (-0.7..., dtype('uint8'))

  References:
    Dettmers et al., `8-bit Optimizers via Block-wise Quantization
    <https://arxiv.org/abs/2110.02861>`_, 2022; bitsandbytes 0.50
    ``bnb.optim.Adam8bit``; torchao 0.18 ``torchao.optim.Adam8bit``.

  Deviations: no weight decay (torchao's Adam8bit adds L2 decay to the
  gradient, bitsandbytes' CPU kernel decays the weights; use `adamw8bit`).
  """
  v.check_learning_rate(learning_rate)
  return optax.chain(
    scale_by_adam8bit(
      b1,
      b2,
      eps,
      block_size=block_size,
      min_size=min_size,
      second_moment_floor=second_moment_floor,
      mask=mask,
    ),
    optax.scale_by_learning_rate(learning_rate),
  )


def adamw8bit(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  weight_decay: optax.ScalarOrSchedule = 1e-2,
  *,
  block_size: int = 256,
  min_size: int = 4096,
  second_moment_floor: jax.typing.ArrayLike | None = None,
  mask: Any | None = None,
  weight_decay_mask: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""AdamW with 8-bit block-wise quantized state, as torchao's AdamW8bit.

  .. math::
    \Delta\theta_t = -\eta_t (u_t + \lambda \theta_{t-1})

  with :math:`u_t` from `scale_by_adam8bit`: the decay is decoupled and
  scaled by the full learning rate, on the weights before the step (torchao
  computes :math:`\theta - \eta\lambda\theta - \eta u`; the same sum).

  Args:
    learning_rate: step size :math:`\eta`, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added to the bias-corrected root, >= 0.
    weight_decay: :math:`\lambda` >= 0 (torchao's default 1e-2).
    block_size: elements per quantization block, a power of two.
    min_size: tensors with fewer elements keep float32 moments.
    second_moment_floor: see `quantize_state` (None: off).
    mask: which parameters' moments are quantized (see `quantize_state`).
    weight_decay_mask: which parameters decay (None: all).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo.quantization import adamw8bit
    >>> tx = adamw8bit(1e-2, weight_decay=0.1, min_size=0)
    >>> params = jnp.ones(256)
    >>> updates, _ = tx.update(jnp.ones(256), tx.init(params), params)
    >>> float(updates[0])  # -1e-2 * (1 + 0.1 * 1)
    -0.011

  References:
    Dettmers et al., `8-bit Optimizers via Block-wise Quantization
    <https://arxiv.org/abs/2110.02861>`_, 2022; torchao 0.18
    ``torchao.optim.AdamW8bit``.
  """
  v.check_learning_rate(learning_rate)
  v.check_weight_decay(weight_decay)
  return optax.chain(
    scale_by_adam8bit(
      b1,
      b2,
      eps,
      block_size=block_size,
      min_size=min_size,
      second_moment_floor=second_moment_floor,
      mask=mask,
    ),
    optax.add_decayed_weights(weight_decay, weight_decay_mask),
    optax.scale_by_learning_rate(learning_rate),
  )
