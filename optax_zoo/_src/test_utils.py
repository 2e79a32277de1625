"""Problems and assertions shared by the test suite (not public API)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_zoo._src import extra_args
from optax_zoo._src import validation as v
from optax_zoo._src.method_info import MethodInfo, Paper

PARABOLA_MIN = jnp.array([1.0, -2.0, 0.5])
PARABOLA_SCALES = jnp.array([1.0, 4.0, 0.25])


def parabola(x: jax.Array) -> jax.Array:
  """An ill-conditioned quadratic with its minimum at `PARABOLA_MIN`."""
  return jnp.sum(PARABOLA_SCALES * (x - PARABOLA_MIN) ** 2)


def rosenbrock(x: jax.Array) -> jax.Array:
  """Rosenbrock's banana, minimum 0 at (1, 1)."""
  return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


def loss_extra_args(
  names: Sequence[str] | None, loss_fn: Callable[[Any], jax.Array], params: Any
) -> dict[str, Any]:
  """The extra `update` arguments ``names`` for a loss of the parameters.

  A test problem's loss counts as the loss of a batch of one example, so
  `extra_args.supply` gives ``value = loss_fn(params)``, ``value_variance =
  value**2`` and ``grad_fn(p) = grad(loss_fn)(p)``.

  Args:
    names: a registry entry's ``extra_args`` (None: all of them).
    loss_fn: ``loss_fn(params) -> scalar``.
    params: the parameters the gradient is taken at.

  Returns:
    Keyword arguments for ``tx.update``.
  """
  # A loss of raw parameters has no layers: K-FAC preconditions none of
  # them and needs no statistics.
  if names is not None:
    names = [n for n in names if n != 'kfac_stats']
  return extra_args.supply(
    names, lambda p, _: loss_fn(p)[None], params, jnp.zeros((1,))
  )


def minimize(
  tx: optax.GradientTransformation,
  loss_fn: Callable[[Any], jax.Array],
  params: Any,
  steps: int,
  extra_names: Sequence[str] | None = (),
) -> Any:
  """Runs `steps` steps of `tx` on `loss_fn` with `lax.scan`; final params.

  ``extra_names`` names the extra `update` arguments the transform needs
  (see `loss_extra_args`).
  """

  def step(carry, _):
    p, s = carry
    grads = jax.grad(loss_fn)(p)
    extra = loss_extra_args(extra_names, loss_fn, p)
    updates, s = tx.update(grads, s, p, **extra)
    return (optax.apply_updates(p, updates), s), None

  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, steps)
  return params


def scale_by_extragradient(
  rho: jax.typing.ArrayLike = 0.5,
) -> optax.GradientTransformationExtraArgs:
  """A test-only method that needs ``grad_fn``: Korpelevich's extragradient.

  Returns the gradient at the extrapolated point ``params - rho * grads``,
  ``grad_fn(params - rho * grads)``. It exercises the ``grad_fn`` plumbing
  of the training loop, the common tests and the bench the way SAM and
  Entropy-SGD use it; it is not part of the package.
  """
  v.check_non_negative('rho', rho)

  def update_fn(updates, state, params=None, *, grad_fn, **extra):
    del extra
    ahead = jax.tree.map(lambda p, g: p - rho * g, params, updates)
    return grad_fn(ahead), state

  return optax.GradientTransformationExtraArgs(
    lambda params: optax.EmptyState(), update_fn
  )


def extragradient(
  learning_rate: optax.ScalarOrSchedule,
  rho: jax.typing.ArrayLike = 0.5,
  momentum: jax.typing.ArrayLike = 0.9,
) -> optax.GradientTransformationExtraArgs:
  """`scale_by_extragradient` with heavy-ball momentum and a learning rate.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo._src import test_utils as tu
    >>> loss = lambda p: jnp.sum(p**2)
    >>> tx = tu.extragradient(0.1, rho=0.1)
    >>> params = jnp.ones(2)
    >>> updates, _ = tx.update(
    ...   jax.grad(loss)(params), tx.init(params), params,
    ...   grad_fn=jax.grad(loss))
    >>> updates  # -0.1 * grad at 1 - 0.1 * 2 = 0.8
    Array([-0.16, -0.16], dtype=float32)
  """
  v.check_learning_rate(learning_rate)
  v.check_in_range('momentum', momentum, 0.0, 1.0)
  return optax.chain(
    scale_by_extragradient(rho),
    optax.trace(decay=momentum),
    optax.scale_by_learning_rate(learning_rate),
  )


# A registry entry for `extragradient`, registered only by tests.
EXTRAGRADIENT = MethodInfo(
  name='test_extragradient',
  category='sharpness',
  factory=extragradient,
  paper=Paper(
    title='The extragradient method for finding saddle points and other '
    'problems',
    authors='Korpelevich',
    year=1976,
  ),
  reference='the update rule (a test-only method)',
  state_copies=1,
  learning_rate=0.1,
  example_kwargs=lambda lr: {'learning_rate': lr, 'rho': 1e-4},
  invalid_kwargs=({'learning_rate': -1.0}, {'rho': -0.5}, {'momentum': 1.5}),
  extra_args=('grad_fn',),
)


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


def fast_compile_env(env: dict[str, str]) -> dict[str, str]:
  """``env`` for a child Python that compiles as the suite does (see
  conftest.py): most XLA optimizations off; the suite's ``XLA_FLAGS``
  come with ``env`` (they are in ``os.environ`` under pytest)."""
  return {**env, 'JAX_DISABLE_MOST_OPTIMIZATIONS': '1'}


def run_on_cpu_devices(
  script: str,
  *,
  devices: int = 8,
  timeout: float = 300,
  optimized: bool = False,
) -> str:
  """Runs ``script`` in a fresh Python on ``devices`` CPU devices.

  The device count is fixed when JAX starts (and the suite runs on one), so
  mesh tests run their checks in a subprocess; the script must print 'OK'
  last. As the rest of the suite, it compiles with most XLA optimizations
  off (correctness, not speed) unless ``optimized``. Returns its stdout;
  fails the test with its stderr otherwise.
  """
  import os
  import subprocess
  import sys

  env = dict(os.environ)
  env['XLA_FLAGS'] = (
    f'{env.get("XLA_FLAGS", "")} '
    f'--xla_force_host_platform_device_count={devices}'
  )
  env['JAX_PLATFORMS'] = 'cpu'
  if not optimized:
    env = fast_compile_env(env)
  done = subprocess.run(
    [sys.executable, '-c', script],
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )
  assert done.returncode == 0, done.stderr[-4000:]
  assert done.stdout.strip().endswith('OK'), done.stdout
  return done.stdout
