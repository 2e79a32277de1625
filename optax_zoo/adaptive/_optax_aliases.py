"""Optimizers that optax already ships, with hyperparameter validation.

Each function has optax's signature and returns optax's transform unchanged,
after checking every hyperparameter so that a typo raises a `ValueError` at
construction time, except where optax deviates from the paper or its
reference code: `radam` (float32 cancellation in rho_t), `novograd` (no
weight-decay schedule), `lars` (trust-ratio denominator) and `adafactor`
with ``learning_rate=None`` (no relative step) keep optax's signature but
are built from `scale_by_radam`, `scale_by_novograd`, `scale_by_lars` and
the paper's relative step; their docstrings say how. AdamW and Adan (rows 2
and 9) have their faithful versions in `_adamw.py` and `_adan.py`.

Non-finite gradients: none of these transforms sanitizes its input; a NaN or
inf gradient gives a NaN or inf update (and, for the moment-based ones, a
poisoned state), which is what the user should see.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from optax_zoo._src import validation as v
from optax_zoo.adaptive._lars import scale_by_lars
from optax_zoo.adaptive._novograd import scale_by_novograd
from optax_zoo.adaptive._radam import scale_by_radam

__all__ = [
  'adafactor',
  'adam',
  'adamax',
  'lamb',
  'lars',
  'nadam',
  'novograd',
  'radam',
  'sgd',
  'sign_sgd',
  'signum',
]

ArrayLike = jax.typing.ArrayLike
ScalarOrSchedule = optax.ScalarOrSchedule


def _check_adam_family(
  learning_rate: Any, b1: Any, b2: Any, eps: Any, eps_root: Any
) -> None:
  v.check_learning_rate(learning_rate)
  v.check_betas(b1=b1, b2=b2)
  v.check_non_negative('eps', eps)
  v.check_non_negative('eps_root', eps_root)


def adam(
  learning_rate: ScalarOrSchedule,
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.999,
  eps: ArrayLike = 1e-8,
  eps_root: ArrayLike = 0.0,
  mu_dtype: Any | None = None,
  *,
  nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Adam (Kingma & Ba, 2015), optax's implementation, validated.

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\\
    u_t = -\eta_t \frac{m_t / (1-\beta_1^t)}
      {\sqrt{v_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon}.

  Args:
    learning_rate: step size :math:`\eta`, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added outside the square root, >= 0.
    eps_root: added inside the square root, >= 0.
    mu_dtype: dtype of the first moment (None: the params' dtype).
    nesterov: use Nesterov momentum (NAdam-style numerator).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.adam(1e-1)
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(2 * params, state, params)
    >>> updates
    Array([-0.1,  0.1], dtype=float32)

  References:
    Kingma & Ba, `Adam: A Method for Stochastic Optimization
    <https://arxiv.org/abs/1412.6980>`_, 2015.
  """
  _check_adam_family(learning_rate, b1, b2, eps, eps_root)
  return optax.adam(
    learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov
  )


def adamax(
  learning_rate: ScalarOrSchedule,
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.999,
  eps: ArrayLike = 1e-8,
) -> optax.GradientTransformationExtraArgs:
  r"""AdaMax (Kingma & Ba, 2015, section 7.1), optax's implementation.

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
    u_t = \max(\beta_2 u_{t-1}, |g_t|),\quad
    \Delta_t = -\frac{\eta_t}{1-\beta_1^t} \frac{m_t}{u_t + \epsilon}.

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: infinity-norm decay, in [0, 1).
    eps: added to the denominator, >= 0.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.adamax(1e-1)
    >>> state = tx.init(jnp.zeros(2))
    >>> tx.update(jnp.array([3.0, -1.0]), state)[0]
    Array([-0.1,  0.1], dtype=float32)

  References:
    Kingma & Ba, `Adam: A Method for Stochastic Optimization
    <https://arxiv.org/abs/1412.6980>`_, 2015.
  """
  v.check_learning_rate(learning_rate)
  v.check_betas(b1=b1, b2=b2)
  v.check_non_negative('eps', eps)
  return optax.adamax(learning_rate, b1, b2, eps)


def radam(
  learning_rate: ScalarOrSchedule,
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.999,
  eps: ArrayLike = 1e-8,
  eps_root: ArrayLike = 0.0,
  threshold: ArrayLike = 5.0,
  mu_dtype: Any | None = None,
  *,
  nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Rectified Adam (Liu et al., 2020), with an accurate :math:`\rho_t`.

  .. math::
    \rho_\infty = \frac{2}{1-\beta_2} - 1,\quad
    \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t},\\
    \Delta_t = -\eta_t \begin{cases}
      r_t \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon} & \rho_t \ge \tau \\
      \hat m_t & \text{otherwise,}\end{cases}\quad
    r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}
      {(\rho_\infty-4)(\rho_\infty-2)\rho_t}}.

  :math:`\tau = 5` is the authors' code (LiyuanLucasLiu/RAdam
  ``radam/radam.py``: ``N_sma >= 5``; ``torch.optim.RAdam``: ``rho_t > 5``),
  ``threshold=4`` is the paper's Algorithm 2 (:math:`\rho_t > 4`). With
  :math:`\beta_2 = 0.999` the first 5 steps are below 5 (4 below 4). There
  the step is the bias-corrected momentum :math:`\hat m_t`: the paper's
  "un-adapted momentum" and the official code with
  ``degenerated_to_sgd=True`` (its default until July 2021; since then it
  defaults to False and skips those steps, as does pytorch-optimizer's
  ``RAdam`` by default).

  Mapping to the reference code: ``betas=(b1, b2)``, same ``eps``, which
  the code adds to :math:`\sqrt{v_t}` before the bias correction, i.e.
  :math:`\epsilon / \sqrt{1-\beta_2^t}` here, a difference of order
  :math:`\epsilon`. The code's decoupled ``weight_decay`` is in neither the
  paper nor here; ``nesterov`` is an optax extension with no reference.

  Deviation from optax: ``optax.radam`` computes :math:`\rho_t` in float32
  by cancellation, off by 0.04 at :math:`\beta_2 = 0.999` (1.2% on the
  first rectified step) and by up to 50% at :math:`\beta_2 = 0.9999`;
  `scale_by_radam` computes it accurately.

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added outside the square root, >= 0.
    eps_root: added inside the square root, >= 0.
    threshold: :math:`\tau` >= 4, the variance-tractability threshold.
    mu_dtype: dtype of the first moment (None: the parameters' dtype).
    nesterov: use Nesterov momentum.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.radam(1e-1)
    >>> state = tx.init(jnp.zeros(2))
    >>> tx.update(jnp.array([3.0, -1.0]), state)[0]  # warm-up: SGD-M step
    Array([-0.3,  0.1], dtype=float32)

  References:
    Liu et al., `On the Variance of the Adaptive Learning Rate and Beyond
    <https://arxiv.org/abs/1908.03265>`_, 2020.
  """
  v.check_learning_rate(learning_rate)
  return optax.chain(
    scale_by_radam(
      b1, b2, eps, eps_root, threshold, mu_dtype, nesterov=nesterov
    ),
    optax.scale_by_learning_rate(learning_rate),
  )


def nadam(
  learning_rate: ScalarOrSchedule,
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.999,
  eps: ArrayLike = 1e-8,
  eps_root: ArrayLike = 0.0,
  mu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""NAdam (Dozat, 2016): Adam with a Nesterov first moment, from optax.

  .. math::
    \Delta_t = -\eta_t \frac{\beta_1 \hat m_t + (1-\beta_1) g_t/(1-\beta_1^t)}
      {\sqrt{\hat v_t} + \epsilon}.

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added outside the square root, >= 0.
    eps_root: added inside the square root, >= 0.
    mu_dtype: dtype of the first moment.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.nadam(1e-1)
    >>> state = tx.init(jnp.zeros(1))
    >>> tx.update(jnp.array([2.0]), state)[0].shape
    (1,)

  References:
    Dozat, `Incorporating Nesterov Momentum into Adam
    <https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ>`_, 2016.
  """
  _check_adam_family(learning_rate, b1, b2, eps, eps_root)
  return optax.nadam(learning_rate, b1, b2, eps, eps_root, mu_dtype)


def _relative_step(count: jax.Array) -> jax.Array:
  """Adafactor's relative step size min(1e-2, 1/sqrt(t)), t = count + 1."""
  return jax.numpy.minimum(1e-2, jax.lax.rsqrt(count + 1.0))


def adafactor(
  learning_rate: ScalarOrSchedule | None = None,
  min_dim_size_to_factor: int = 128,
  decay_rate: ArrayLike = 0.8,
  decay_offset: int = 0,
  multiply_by_parameter_scale: bool = True,
  clipping_threshold: ArrayLike | None = 1.0,
  momentum: ArrayLike | None = None,
  dtype_momentum: Any = jax.numpy.float32,
  weight_decay_rate: ScalarOrSchedule | None = None,
  eps: ArrayLike = 1e-30,
  factored: bool = True,
  weight_decay_mask: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Adafactor (Shazeer & Stern, 2018), optax's implementation.

  The paper's Algorithms 4 (matrices) and 5 (other arrays), with
  :math:`\hat\beta_{2t} = 1 - t^{-c}`, :math:`\epsilon_1` = ``eps``,
  :math:`d` = ``clipping_threshold``, :math:`\epsilon_2 = 10^{-3}`:

  .. math::
    R_t = \hat\beta_{2t} R_{t-1} + (1-\hat\beta_{2t})
      (G_t^2 + \epsilon_1) 1_m,\quad
    C_t = \hat\beta_{2t} C_{t-1} + (1-\hat\beta_{2t})
      1_n^\top (G_t^2 + \epsilon_1),\\
    \hat V_t = R_t C_t / 1_n^\top R_t,\quad
    U_t = G_t / \sqrt{\hat V_t},\quad
    \hat U_t = U_t / \max(1, \mathrm{RMS}(U_t) / d),\\
    \Delta_t = -\alpha_t \hat U_t,\quad
    \alpha_t = \max(\epsilon_2, \mathrm{RMS}(X_{t-1}))\,\rho_t,

  where :math:`\rho_t` is ``learning_rate`` and the factor
  :math:`\max(\epsilon_2, \mathrm{RMS}(X_{t-1}))` is there only with
  ``multiply_by_parameter_scale``. Arrays that are not factored keep the
  full :math:`V_t = \hat\beta_{2t} V_{t-1} + (1-\hat\beta_{2t})
  (G_t^2 + \epsilon_1)` (Algorithm 5).

  Factoring threshold: an array is factored when its second-largest
  dimension is at least ``min_dim_size_to_factor``, over its two largest
  dimensions (as t5x and mesh-tensorflow); the paper factors every matrix,
  which is ``min_dim_size_to_factor=1``. With the default 128, a layer with
  fewer than 128 units in either dimension keeps a full second moment, one
  parameter copy, not a sublinear one.

  With ``learning_rate=None`` the step size is the paper's relative step
  :math:`\rho_t = \min(10^{-2}, 1/\sqrt{t})`. Deviation from optax:
  ``optax.adafactor(None)`` applies no step size at all (:math:`\rho_t = 1`).

  ``momentum`` :math:`\beta_1` averages the scaled, clipped steps,
  :math:`m_t = \beta_1 m_{t-1} + (1-\beta_1)\alpha_t \hat U_t`, without
  bias correction, and ``weight_decay_rate`` :math:`\lambda` then adds
  :math:`-\lambda X_{t-1}`, not multiplied by the step size: both as t5x's
  ``adafactor.py`` (the paper's boxes have neither).

  Args:
    learning_rate: :math:`\rho_t`, >= 0, a schedule, or None for the
      relative step.
    min_dim_size_to_factor: only factor dimensions at least this large, >= 1.
    decay_rate: exponent of the second-moment decay :math:`1 - t^{-c}`,
      in [0, 1].
    decay_offset: step offset for the decay, an integer >= 0.
    multiply_by_parameter_scale: scale the step by the parameter's RMS.
    clipping_threshold: update clipping threshold > 0, or None for none.
    momentum: first-moment decay in [0, 1), or None for no momentum.
    dtype_momentum: dtype of the momentum.
    weight_decay_rate: decay :math:`\lambda` >= 0 (not multiplied by the
      step size), a schedule, or None.
    eps: regularization constant for the second moment, >= 0.
    factored: whether to factor the second moment.
    weight_decay_mask: pytree or callable selecting the decayed parameters.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.adafactor(1e-2, min_dim_size_to_factor=2)
    >>> params = {'w': jnp.ones((4, 3))}
    >>> tx.update(params, tx.init(params), params)[0]['w'].shape
    (4, 3)

  References:
    Shazeer & Stern, `Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost <https://arxiv.org/abs/1804.04235>`_, 2018.
  """
  v.check_learning_rate(learning_rate, allow_none=True)
  v.check_int('min_dim_size_to_factor', min_dim_size_to_factor, minimum=1)
  v.check_in_range('decay_rate', decay_rate, 0.0, 1.0, high_inclusive=True)
  v.check_int('decay_offset', decay_offset, minimum=0)
  if clipping_threshold is not None:
    v.check_positive('clipping_threshold', clipping_threshold)
  if momentum is not None:
    v.check_in_range('momentum', momentum, 0.0, 1.0)
  if weight_decay_rate is not None:
    v.check_weight_decay(weight_decay_rate, 'weight_decay_rate')
  v.check_non_negative('eps', eps)
  return optax.adafactor(
    _relative_step if learning_rate is None else learning_rate,
    min_dim_size_to_factor,
    decay_rate,
    decay_offset,
    multiply_by_parameter_scale,
    clipping_threshold,
    momentum,
    dtype_momentum,
    weight_decay_rate,
    eps,
    factored,
    weight_decay_mask,
  )


def novograd(
  learning_rate: ScalarOrSchedule,
  b1: ArrayLike = 0.95,
  b2: ArrayLike = 0.98,
  eps: ArrayLike = 0.0,
  eps_root: ArrayLike = 1e-8,
  weight_decay: ScalarOrSchedule = 0.0,
  mu_dtype: Any | None = None,
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
    scale_by_novograd(b1, b2, eps, eps_root, weight_decay, mu_dtype),
    optax.scale_by_learning_rate(learning_rate),
  )


def lamb(
  learning_rate: ScalarOrSchedule,
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.999,
  eps: ArrayLike = 1e-6,
  eps_root: ArrayLike = 0.0,
  weight_decay: ScalarOrSchedule = 0.0,
  mask: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""LAMB (You et al., 2020), optax's implementation.

  .. math::
    r_t = \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon} + \lambda \theta_{t-1},
    \quad
    \Delta^l_t = -\eta_t \frac{\|\theta^l_{t-1}\|}{\|r^l_t\|} r^l_t,

  with the trust ratio set to 1 where either norm is zero (optax's choice).

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added outside the square root, >= 0.
    eps_root: added inside the square root, >= 0.
    weight_decay: decay :math:`\lambda` >= 0, or a schedule.
    mask: pytree or callable selecting the decayed parameters.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.lamb(1e-1)
    >>> params = jnp.array([3.0, 4.0])
    >>> tx.update(params, tx.init(params), params)[0]  # |step| = 0.1 |params|
    Array([-0.3..., -0.4...], dtype=float32)

  References:
    You et al., `Large Batch Optimization for Deep Learning: Training BERT in
    76 minutes <https://arxiv.org/abs/1904.00962>`_, 2020.
  """
  _check_adam_family(learning_rate, b1, b2, eps, eps_root)
  v.check_weight_decay(weight_decay)
  return optax.lamb(learning_rate, b1, b2, eps, eps_root, weight_decay, mask)


def lars(
  learning_rate: ScalarOrSchedule,
  weight_decay: ScalarOrSchedule = 0.0,
  weight_decay_mask: Any = True,
  trust_coefficient: ArrayLike = 0.001,
  eps: ArrayLike = 0.0,
  trust_ratio_mask: Any = True,
  momentum: ArrayLike = 0.9,
  nesterov: bool = False,
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
    weight_decay_mask: pytree or callable selecting the decayed parameters.
    trust_coefficient: :math:`\eta_{trust}` > 0.
    eps: added to the trust-ratio denominator, >= 0.
    trust_ratio_mask: pytree or callable selecting layers with a trust ratio.
    momentum: momentum :math:`\mu`, in [0, 1).
    nesterov: use Nesterov momentum (not in the paper).

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
  return optax.chain(
    scale_by_lars(
      weight_decay,
      trust_coefficient,
      eps,
      weight_decay_mask=weight_decay_mask,
      trust_ratio_mask=trust_ratio_mask,
    ),
    optax.scale_by_learning_rate(learning_rate),
    optax.trace(decay=momentum, nesterov=nesterov),
  )


def sgd(
  learning_rate: ScalarOrSchedule,
  momentum: ArrayLike | None = None,
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
  return optax.sgd(learning_rate, momentum, nesterov, accumulator_dtype)


def sign_sgd(learning_rate: ScalarOrSchedule) -> optax.GradientTransformation:
  r"""SignSGD (Bernstein et al., 2018): :math:`\Delta_t = -\eta_t
  \operatorname{sign}(g_t)`.

  Args:
    learning_rate: step size, a float >= 0 or a schedule.

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.sign_sgd(0.1)
    >>> tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))[0]
    Array([-0.1,  0.1], dtype=float32)

  References:
    Bernstein et al., `signSGD: Compressed Optimisation for Non-Convex
    Problems <https://arxiv.org/abs/1802.04434>`_, 2018.
  """
  v.check_learning_rate(learning_rate)
  return optax.sign_sgd(learning_rate)


def signum(
  learning_rate: ScalarOrSchedule,
  beta: ArrayLike = 0.9,
  accumulator_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""Signum (Bernstein et al., 2018): the sign of an EMA of gradients.

  .. math::
    m_t = \beta m_{t-1} + (1-\beta) g_t,\quad
    \Delta_t = -\eta_t \operatorname{sign}(m_t).

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    beta: momentum decay, in [0, 1).
    accumulator_dtype: dtype of the momentum buffer.

  Returns:
    An `optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.signum(0.1)
    >>> tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))[0]
    Array([-0.1,  0.1], dtype=float32)

  References:
    Bernstein et al., `signSGD: Compressed Optimisation for Non-Convex
    Problems <https://arxiv.org/abs/1802.04434>`_, 2018.
  """
  v.check_learning_rate(learning_rate)
  v.check_in_range('beta', beta, 0.0, 1.0)
  return optax.signum(learning_rate, beta, accumulator_dtype)
