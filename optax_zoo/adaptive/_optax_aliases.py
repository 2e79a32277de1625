"""Optimizers that optax already ships, with hyperparameter validation.

Each function has optax's signature and returns optax's transform unchanged,
after checking every hyperparameter so that a typo raises a `ValueError` at
construction time. Where optax deviates from the paper (METHODS.md rows 2, 6,
9), the docstring says how; the faithful versions land in `optax_zoo.adaptive`
by their own names.

Non-finite gradients: none of these transforms sanitizes its input; a NaN or
inf gradient gives a NaN or inf update (and, for the moment-based ones, a
poisoned state), which is what the user should see.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from optax_zoo._src import validation as v

__all__ = [
  'adafactor',
  'adam',
  'adamax',
  'adamw',
  'adan',
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


def adamw(
  learning_rate: ScalarOrSchedule,
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.999,
  eps: ArrayLike = 1e-8,
  eps_root: ArrayLike = 0.0,
  mu_dtype: Any | None = None,
  weight_decay: ScalarOrSchedule = 1e-4,
  mask: Any | None = None,
  *,
  nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""AdamW in optax's (PyTorch's) form: decay multiplied by the full lr.

  .. math::
    \Delta_t = -\eta_t \left(\frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}
      + \lambda \theta_{t-1}\right).

  Deviation from the paper: Loshchilov & Hutter (Algorithm 2) multiply the
  decay by the schedule multiplier :math:`\eta_t / \eta_0` only, not by the
  learning rate, which is what makes the best decay independent of the
  learning rate. This is optax's form, kept for compatibility; the paper's form
  is issue 3's `adamw(..., paper_form=True)`.

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added outside the square root, >= 0.
    eps_root: added inside the square root, >= 0.
    mu_dtype: dtype of the first moment.
    weight_decay: decoupled decay :math:`\lambda` >= 0, or a schedule.
    mask: pytree or callable selecting the parameters that decay.
    nesterov: use Nesterov momentum.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.adamw(1e-1, weight_decay=0.5)
    >>> params = jnp.array([1.0, -2.0])
    >>> tx.update(jnp.zeros(2), tx.init(params), params)[0]
    Array([-0.05,  0.1 ], dtype=float32)

  References:
    Loshchilov & Hutter, `Decoupled Weight Decay Regularization
    <https://arxiv.org/abs/1711.05101>`_, 2019.
  """
  _check_adam_family(learning_rate, b1, b2, eps, eps_root)
  v.check_weight_decay(weight_decay)
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


def radam(
  learning_rate: ScalarOrSchedule,
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.999,
  eps: ArrayLike = 1e-8,
  eps_root: ArrayLike = 0.0,
  threshold: ArrayLike = 5.0,
  *,
  nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Rectified Adam (Liu et al., 2020), optax's implementation.

  .. math::
    \rho_\infty = \frac{2}{1-\beta_2} - 1,\quad
    \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t},\\
    \Delta_t = -\eta_t \begin{cases}
      r_t \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon} & \rho_t > \tau \\
      \hat m_t & \text{otherwise,}\end{cases}\quad
    r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}
      {(\rho_\infty-4)(\rho_\infty-2)\rho_t}}.

  The threshold :math:`\tau = 5` matches the authors' code
  (LiyuanLucasLiu/RAdam).

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added outside the square root, >= 0.
    eps_root: added inside the square root, >= 0.
    threshold: :math:`\tau`, the variance-tractability threshold, >= 0.
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
  _check_adam_family(learning_rate, b1, b2, eps, eps_root)
  v.check_non_negative('threshold', threshold)
  return optax.radam(
    learning_rate, b1, b2, eps, eps_root, threshold, nesterov=nesterov
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

  For a matrix gradient the second moment is kept as row and column sums,
  :math:`\hat V_t = R_t C_t / 1^\top R_t`, so the state is sublinear in the
  parameter count; the step is clipped to RMS ``clipping_threshold`` and
  scaled by the parameter's RMS when ``multiply_by_parameter_scale``.

  With ``learning_rate=None`` the step size is the paper's relative step
  :math:`\min(10^{-2}, 1/\sqrt{t})`.

  Args:
    learning_rate: step size >= 0, a schedule, or None for the relative step.
    min_dim_size_to_factor: only factor dimensions at least this large, >= 1.
    decay_rate: exponent of the second-moment decay :math:`1 - t^{-c}`,
      in [0, 1].
    decay_offset: step offset for the decay, an integer >= 0.
    multiply_by_parameter_scale: scale the step by the parameter's RMS.
    clipping_threshold: update clipping threshold > 0, or None for none.
    momentum: first-moment decay in [0, 1), or None for no momentum.
    dtype_momentum: dtype of the momentum.
    weight_decay_rate: decay >= 0 (multiplied by the lr), or None.
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
    learning_rate,
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
  b1: ArrayLike = 0.9,
  b2: ArrayLike = 0.25,
  eps: ArrayLike = 1e-6,
  eps_root: ArrayLike = 0.0,
  weight_decay: ScalarOrSchedule = 0.0,
) -> optax.GradientTransformationExtraArgs:
  r"""NovoGrad (Ginsburg et al., 2019), optax's implementation.

  A layer-wise second moment (one scalar per parameter array):

  .. math::
    v^l_t = \beta_2 v^l_{t-1} + (1-\beta_2)\|g^l_t\|^2,\quad
    m^l_t = \beta_1 m^l_{t-1} + \left(\frac{g^l_t}{\sqrt{v^l_t}+\epsilon}
      + \lambda \theta^l_{t-1}\right),\quad
    \Delta_t = -\eta_t m_t.

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: layer-wise second-moment decay, in [0, 1).
    eps: added to the denominator, >= 0.
    eps_root: added inside the square root, >= 0.
    weight_decay: decay :math:`\lambda` >= 0 added to the normalized gradient.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.novograd(1e-1)
    >>> params = jnp.zeros(2)
    >>> tx.update(jnp.array([3.0, 4.0]), tx.init(params), params)[0]
    Array([-0.06, -0.08], dtype=float32)

  References:
    Ginsburg et al., `Stochastic Gradient Methods with Layer-wise Adaptive
    Moments for Training of Deep Networks <https://arxiv.org/abs/1905.11286>`_,
    2019.
  """
  _check_adam_family(learning_rate, b1, b2, eps, eps_root)
  v.check_weight_decay(weight_decay)
  return optax.novograd(learning_rate, b1, b2, eps, eps_root, weight_decay)


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
  r"""LARS (You et al., 2017), optax's implementation.

  .. math::
    r^l_t = \eta_{trust} \frac{\|\theta^l\|}{\|g^l + \lambda\theta^l\|
      + \epsilon} (g^l + \lambda \theta^l),\quad
    m_t = \mu m_{t-1} + r_t,\quad \Delta_t = -\eta_t m_t.

  Args:
    learning_rate: global step size, a float >= 0 or a schedule.
    weight_decay: decay :math:`\lambda` >= 0, or a schedule.
    weight_decay_mask: pytree or callable selecting the decayed parameters.
    trust_coefficient: :math:`\eta_{trust}` > 0.
    eps: added to the trust-ratio denominator, >= 0.
    trust_ratio_mask: pytree or callable selecting layers with a trust ratio.
    momentum: momentum :math:`\mu`, in [0, 1).
    nesterov: use Nesterov momentum.

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
  v.check_weight_decay(weight_decay)
  v.check_positive('trust_coefficient', trust_coefficient)
  v.check_non_negative('eps', eps)
  v.check_in_range('momentum', momentum, 0.0, 1.0)
  return optax.lars(
    learning_rate,
    weight_decay,
    weight_decay_mask,
    trust_coefficient,
    eps,
    trust_ratio_mask,
    momentum,
    nesterov,
  )


def adan(
  learning_rate: ScalarOrSchedule,
  b1: ArrayLike = 0.98,
  b2: ArrayLike = 0.92,
  b3: ArrayLike = 0.99,
  eps: ArrayLike = 1e-8,
  eps_root: ArrayLike = 1e-8,
  weight_decay: ScalarOrSchedule = 0.0,
  mask: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Adan (Xie et al., 2022), optax's implementation.

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2)(g_t - g_{t-1}),\\
    n_t = \beta_3 n_{t-1} + (1-\beta_3)[g_t + \beta_2(g_t - g_{t-1})]^2,\\
    \Delta_t = -\eta_t \frac{\hat m_t + \beta_2 \hat v_t}
      {\sqrt{\hat n_t + \epsilon_{root}} + \epsilon} - \eta_t\lambda\theta.

  Betas follow optax's convention (decay rates); the official code uses
  ``1 - beta`` (its ``betas=(0.02, 0.08, 0.01)``).

  Deviation from the paper: optax applies plain decoupled weight decay; the
  paper's Algorithm 1 and the official code's default use the proximal form
  :math:`\theta_{t+1} = (\theta_t - \eta\, u_t)/(1 + \lambda\eta)` (optax PR
  #410). The two agree when ``weight_decay=0``. The faithful version is issue
  3's `adan(..., proximal=True)`.

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    b1: first-moment decay, in [0, 1).
    b2: gradient-difference decay, in [0, 1).
    b3: second-moment decay, in [0, 1).
    eps: added outside the square root, >= 0.
    eps_root: added inside the square root, >= 0.
    weight_decay: decoupled decay >= 0, or a schedule.
    mask: pytree or callable selecting the decayed parameters.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.adan(1e-1)
    >>> params = jnp.zeros(2)
    >>> tx.update(jnp.array([3.0, -1.0]), tx.init(params), params)[0]
    Array([-0.1,  0.1], dtype=float32)

  References:
    Xie et al., `Adan: Adaptive Nesterov Momentum Algorithm for Faster
    Optimizing Deep Models <https://arxiv.org/abs/2208.06677>`_, 2022.
  """
  v.check_learning_rate(learning_rate)
  v.check_betas(b1=b1, b2=b2, b3=b3)
  v.check_non_negative('eps', eps)
  v.check_non_negative('eps_root', eps_root)
  v.check_weight_decay(weight_decay)
  return optax.adan(
    learning_rate, b1, b2, b3, eps, eps_root, weight_decay, mask
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
