"""Mode-connecting curves between two trained solutions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from optax_zoo._src import validation as v

__all__ = ['curve_loss_fn', 'curve_point', 'evaluate_curve']

_KINDS = ('bezier', 'polychain')


def curve_point(
  t: jax.typing.ArrayLike,
  start: Any,
  end: Any,
  bend: Any = None,
  *,
  kind: str = 'bezier',
) -> Any:
  r"""The point at ``t`` in [0, 1] of a curve from ``start`` to ``end``.

  .. math::
    \text{bezier: } \phi(t) = (1-t)^2 w_1 + 2t(1-t)\,\theta + t^2 w_2,\\
    \text{polychain: } \phi(t) = \begin{cases}
      (1-2t) w_1 + 2t\,\theta & t \le 1/2\\
      (2-2t)\,\theta + (2t-1) w_2 & t > 1/2,\end{cases}

  with the bend :math:`\theta`. Without a bend it is the straight line
  :math:`(1-t) w_1 + t w_2`. As ``curves.py`` of
  timgaripov/dnn-mode-connectivity (three points).

  Args:
    t: the curve parameter, a scalar in [0, 1] (may be traced).
    start: :math:`w_1`, a parameter pytree.
    end: :math:`w_2`, the same structure.
    bend: :math:`\theta`, the same structure, or None for the line.
    kind: ``'bezier'`` or ``'polychain'``.

  Returns:
    A pytree like ``start``.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> optax_zoo.curve_point(0.5, jnp.zeros(1), jnp.zeros(1), jnp.ones(1))
    Array([0.5], dtype=float32)
  """
  v.check_choice('kind', kind, _KINDS)
  if bend is None:
    return jax.tree.map(lambda a, b: (1 - t) * a + t * b, start, end)
  if kind == 'bezier':
    coeffs = ((1 - t) ** 2, 2 * t * (1 - t), t**2)
  else:
    first = t <= 0.5
    coeffs = (
      jnp.where(first, 1 - 2 * t, 0.0),
      jnp.where(first, 2 * t, 2 - 2 * t),
      jnp.where(first, 0.0, 2 * t - 1),
    )
  return jax.tree.map(
    lambda a, th, b: (coeffs[0] * a + coeffs[1] * th + coeffs[2] * b).astype(
      a.dtype
    ),
    start,
    bend,
    end,
  )


def curve_loss_fn(
  loss_fn: Callable[..., jax.Array],
  start: Any,
  end: Any,
  *,
  kind: str = 'bezier',
) -> Callable[..., jax.Array]:
  r"""The training objective of the bend: the loss at a uniform random ``t``.

  .. math::
    \ell(\theta) = \mathbb E_{t \sim U(0, 1)}\, L(\phi_\theta(t)),

  estimated with one :math:`t` per step, as the paper. The ends are fixed;
  gradients flow to the bend only. Initialize the bend at the midpoint of
  the line, as the reference.

  Args:
    loss_fn: ``loss_fn(params, *args) -> scalar``.
    start: :math:`w_1`.
    end: :math:`w_2`.
    kind: ``'bezier'`` or ``'polychain'``.

  Returns:
    ``fn(bend, key, *args) -> scalar``, to differentiate in ``bend``.

  Example:
    >>> import jax, jax.numpy as jnp, optax_zoo
    >>> fn = optax_zoo.curve_loss_fn(
    ...   lambda p: jnp.sum(p**2), jnp.zeros(1), jnp.zeros(1))
    >>> jax.grad(fn)(jnp.ones(1), jax.random.key(0)).shape
    (1,)
  """
  v.check_choice('kind', kind, _KINDS)

  def fn(bend, key, *args):
    t = jax.random.uniform(key)
    return loss_fn(curve_point(t, start, end, bend, kind=kind), *args)

  return fn


def evaluate_curve(
  metric_fn: Callable[[Any], Any],
  start: Any,
  end: Any,
  bend: Any = None,
  *,
  ts: jax.typing.ArrayLike | None = None,
  kind: str = 'bezier',
) -> Any:
  """``metric_fn`` at each ``t`` in ``ts`` along the curve (or the line).

  Models with BatchNorm need fresh statistics at every point (the reference
  recomputes them): let ``metric_fn`` call `optax_zoo.update_batch_stats`.

  Args:
    metric_fn: maps parameters to a metric pytree (e.g. loss and accuracy);
      it is mapped with `jax.lax.map`, so it must be traceable.
    start: :math:`w_1`.
    end: :math:`w_2`.
    bend: the bend, or None for the straight line.
    ts: the points; default 21 evenly spaced in [0, 1].
    kind: ``'bezier'`` or ``'polychain'``.

  Returns:
    ``metric_fn``'s outputs stacked along a leading axis of ``len(ts)``.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> optax_zoo.evaluate_curve(
    ...   jnp.sum, jnp.zeros(2), jnp.ones(2), ts=jnp.array([0.0, 0.5, 1.0]))
    Array([0., 1., 2.], dtype=float32)
  """
  v.check_choice('kind', kind, _KINDS)
  ts = jnp.linspace(0.0, 1.0, 21) if ts is None else jnp.asarray(ts)
  return jax.lax.map(
    lambda t: metric_fn(curve_point(t, start, end, bend, kind=kind)), ts
  )
