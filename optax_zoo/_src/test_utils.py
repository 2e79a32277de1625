"""Problems and assertions shared by the test suite (not public API)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

PARABOLA_MIN = jnp.array([1.0, -2.0, 0.5])
PARABOLA_SCALES = jnp.array([1.0, 4.0, 0.25])


def parabola(x: jax.Array) -> jax.Array:
  """An ill-conditioned quadratic with its minimum at `PARABOLA_MIN`."""
  return jnp.sum(PARABOLA_SCALES * (x - PARABOLA_MIN) ** 2)


def rosenbrock(x: jax.Array) -> jax.Array:
  """Rosenbrock's banana, minimum 0 at (1, 1)."""
  return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


def loss_extra_args(names: Sequence[str], value: jax.Array) -> dict[str, Any]:
  """The extra `update` arguments ``names`` for a loss ``value``.

  ``value`` counts as the loss of a batch of one example, so the mean squared
  per-example loss (KOALA's ``value_variance``) is ``value**2``.

  Args:
    names: a registry entry's ``extra_args``.
    value: the loss at the parameters the gradient is taken at.

  Returns:
    Keyword arguments for ``tx.update``.
  """
  supplied = {'value': value, 'value_variance': jnp.square(value)}
  unknown = [n for n in names if n not in supplied]
  if unknown:
    raise ValueError(
      f'no test value for the extra update arguments {unknown}; known: '
      f'{sorted(supplied)}.'
    )
  return {n: supplied[n] for n in names}


def minimize(
  tx: optax.GradientTransformation,
  loss_fn: Callable[[Any], jax.Array],
  params: Any,
  steps: int,
  extra_args: Sequence[str] = (),
) -> Any:
  """Runs `steps` steps of `tx` on `loss_fn` with `lax.scan`; final params.

  ``extra_args`` names the extra `update` arguments the transform needs
  (see `loss_extra_args`).
  """

  def step(carry, _):
    p, s = carry
    value, grads = jax.value_and_grad(loss_fn)(p)
    updates, s = tx.update(grads, s, p, **loss_extra_args(extra_args, value))
    return (optax.apply_updates(p, updates), s), None

  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, steps)
  return params


def state_bytes(state: Any) -> int:
  """Bytes held by the array leaves of an optimizer state."""
  return sum(
    np.asarray(x).nbytes for x in jax.tree.leaves(state) if hasattr(x, 'dtype')
  )


def assert_trees_equal(a: Any, b: Any) -> None:
  """Bit-identical trees: same structure, dtypes and values."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype, (x.dtype, y.dtype)
    np.testing.assert_array_equal(x, y)


def assert_trees_close(a: Any, b: Any, *, rtol: float, atol: float = 0.0):
  """Same structure and values within tolerance (compared in float64)."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(
      np.asarray(x, np.float64),
      np.asarray(y, np.float64),
      rtol=rtol,
      atol=atol,
    )


def shapes_and_dtypes(tree: Any) -> Any:
  """The tree's structure with each leaf replaced by (shape, dtype)."""
  return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)
