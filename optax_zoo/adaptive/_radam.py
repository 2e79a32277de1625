r"""Rectified Adam with the SMA length computed without cancellation.

``optax.scale_by_radam`` computes :math:`\rho_t = \rho_\infty - 2t\beta_2^t
/ (1-\beta_2^t)` in float32 as the difference of two numbers near
:math:`\rho_\infty = 2/(1-\beta_2) - 1` (1999 for :math:`\beta_2 = 0.999`),
with :math:`\beta_2` rounded to float32 in one term and not in the other.
The result is off by 0.04 at :math:`\beta_2 = 0.999` (the rectification
factor of step 6 by 1.2%), starts rectifying one step early at
:math:`\beta_2 = 0.9995` and gives :math:`\rho_5 = 7.5` instead of 5.0 at
:math:`\beta_2 = 0.9999`. This module evaluates the same quantity from
:math:`a = -\log\beta_2` as a sum of two positive series, accurate to float32
rounding.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v

__all__ = ['radam', 'scale_by_radam']

# Past these arguments the direct formulas lose less than 3 bits.
_SERIES_LIMIT = 0.5


def _one_minus_x_over_expm1(x: jax.Array) -> jax.Array:
  """``1 - x / expm1(x)`` for x > 0 (Bernoulli series near 0)."""
  z = x * x
  series = x / 2 - z * (1 / 12 - z * (1 / 720 - z * (1 / 30240 - z / 1209600)))
  safe = jnp.where(x < _SERIES_LIMIT, 1.0, x)
  return jnp.where(x < _SERIES_LIMIT, series, 1 - safe / jnp.expm1(safe))


def _y_coth_y_minus_one(y: jax.Array) -> jax.Array:
  """``y * coth(y) - 1`` for y > 0 (Bernoulli series near 0)."""
  w = y * y
  series = w * (
    1 / 3 - w * (1 / 45 - w * (2 / 945 - w * (1 / 4725 - w * 2 / 93555)))
  )
  safe = jnp.where(y < _SERIES_LIMIT, 1.0, y)
  return jnp.where(y < _SERIES_LIMIT, series, safe / jnp.tanh(safe) - 1)


def _log_decay(beta: Any) -> jax.Array:
  """:math:`-\\log\\beta` from :math:`1-\\beta` (exact in floating point)."""
  # 30 stands for beta = 0, whose log is -inf; exp(-30) is 1e-13.
  # 1 - beta before the cast: a Python float keeps its double precision.
  return jnp.minimum(-jnp.log1p(-jnp.asarray(1 - beta, jnp.float32)), 30.0)


def _one_minus_power(beta: Any, count: jax.Array) -> jax.Array:
  """:math:`1 - \\beta^t` without the float32 rounding of :math:`\\beta^t`."""
  return -jnp.expm1(-count * _log_decay(beta))


def sma_length(b2: Any, count: jax.Array) -> tuple[jax.Array, jax.Array]:
  r"""Returns :math:`(\rho_t, \rho_\infty)` of RAdam in float32.

  With :math:`a = -\log\beta_2`, :math:`\rho_\infty = \coth(a/2)` and
  :math:`2t\beta_2^t/(1-\beta_2^t) = 2t/(e^{at}-1)`, so

  .. math::
    \rho_t = \tfrac{2}{a}\big[(\tfrac a2 \coth\tfrac a2 - 1)
      + (1 - \tfrac{at}{e^{at}-1})\big],

  two non-negative terms with no cancellation.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo.adaptive._radam import sma_length
    >>> rho, rho_inf = sma_length(0.999, jnp.arange(5.0, 8.0))
    >>> [round(float(r), 4) for r in rho], round(float(rho_inf), 2)
    ([4.996, 5.9942, 6.992], 1999.0)
  """
  a = _log_decay(b2)
  scale = 2 / a
  head = _y_coth_y_minus_one(a / 2)
  rho = scale * (head + _one_minus_x_over_expm1(a * count))
  return rho, scale * (head + 1)


def scale_by_radam(
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  eps_root: jax.typing.ArrayLike = 0.0,
  threshold: jax.typing.ArrayLike = 5.0,
  mu_dtype: Any | None = None,
  *,
  nesterov: bool = False,
) -> optax.GradientTransformation:
  r"""Rectified Adam's scaling (Liu et al., 2020), without a learning rate.

  .. math::
    \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t},\quad
    u_t = \begin{cases}
      r_t \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}
        & \rho_t \ge \tau \\
      \hat m_t & \text{otherwise,}\end{cases}\quad
    r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}
      {(\rho_\infty-4)(\rho_\infty-2)\rho_t}},

  as ``optax.scale_by_radam`` but with :math:`\rho_t` and the bias
  corrections :math:`1-\beta^t` computed accurately in float32 (see the
  module docstring: optax's :math:`\rho_t` is off by up to 50% for
  :math:`\beta_2 = 0.9999`). ``nesterov`` is optax's Nesterov variant.

  Args:
    b1: first-moment decay, in [0, 1).
    b2: second-moment decay, in [0, 1).
    eps: added outside the square root, >= 0.
    eps_root: added inside the square root, >= 0.
    threshold: :math:`\tau` >= 4.
    mu_dtype: dtype of the first moment (None: the parameters' dtype).
    nesterov: use Nesterov momentum (an optax extension, not in the paper).

  Returns:
    An `optax.GradientTransformation` with optax's `ScaleByAdamState`.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.scale_by_radam()
    >>> state = tx.init(jnp.zeros(2))
    >>> tx.update(jnp.array([3.0, -1.0]), state)[0]  # rho_1 = 1: momentum
    Array([ 3., -1.], dtype=float32)

  References:
    Liu et al., `On the Variance of the Adaptive Learning Rate and Beyond
    <https://arxiv.org/abs/1908.03265>`_, 2020.
  """
  v.check_betas(b1=b1, b2=b2)
  v.check_non_negative('eps', eps)
  v.check_non_negative('eps_root', eps_root)
  # r_t is not real below rho_t = 4.
  v.check_in_range('threshold', threshold, 4.0, math.inf)
  v.check_float_dtype('mu_dtype', mu_dtype)

  def init_fn(params):
    return optax.ScaleByAdamState(
      count=jnp.zeros([], jnp.int32),
      mu=optax.tree.zeros_like(params, dtype=mu_dtype),
      nu=optax.tree.zeros_like(params),
    )

  def update_fn(updates, state, params=None):
    del params
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    mu = optax.tree.cast_like(mu, state.mu)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
    count = optax.safe_increment(state.count)
    t = count.astype(jnp.float32)
    rho, rho_inf = sma_length(b2, t)
    rect = jnp.sqrt(
      (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)
    )
    bc2 = _one_minus_power(b2, t)
    if nesterov:
      bc1_next, bc1 = _one_minus_power(b1, t + 1), _one_minus_power(b1, t)
      mu_hat = jax.tree.map(
        lambda m, g: b1 * m / bc1_next + (1 - b1) * g / bc1, mu, updates
      )
    else:
      bc1 = _one_minus_power(b1, t)
      mu_hat = jax.tree.map(lambda m: m / bc1, mu)

    def step(m_hat, n, g):
      adapted = rect * m_hat / (jnp.sqrt(n / bc2 + eps_root) + eps)
      return jnp.where(rho >= threshold, adapted, m_hat).astype(g.dtype)

    out = jax.tree.map(step, mu_hat, nu, updates)
    return out, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def radam(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  eps_root: jax.typing.ArrayLike = 0.0,
  threshold: jax.typing.ArrayLike = 5.0,
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
