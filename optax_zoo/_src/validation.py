"""Hyperparameter checks shared by every public constructor.

Each check raises a `ValueError` that names the argument, the value it got and
the range it allows, so a typo fails at construction time and not as a NaN a
thousand steps later.

Values that are not concrete yet (JAX tracers, as produced by
`optax.inject_hyperparams` inside a jitted update) cannot be checked and are let
through; schedules (callables) are checked by sampling them at step 0, which is
concrete and catches a negative peak value.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
  'UNSET',
  'check_adam_family',
  'check_betas',
  'check_choice',
  'check_float_dtype',
  'check_in_range',
  'check_int',
  'check_learning_rate',
  'check_non_negative',
  'check_positive',
  'check_transform',
  'check_weight_decay',
  'renamed_argument',
]


def _concrete(value: Any) -> float | None:
  """Returns `value` as a Python float, or None when it is not concrete."""
  if isinstance(value, jax.core.Tracer):
    return None
  try:
    arr = np.asarray(value)
  except Exception:  # an unconvertible value is not concrete
    return None
  if arr.ndim != 0:
    return None
  if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
    return None
  return float(arr)


def _fail(name: str, value: Any, allowed: str) -> ValueError:
  return ValueError(f'`{name}` must be {allowed}, got {value!r}.')


def _check_number(name: str, value: Any) -> float | None:
  if isinstance(value, (str, bytes)) or value is None:
    raise _fail(name, value, 'a number')
  x = _concrete(value)
  if x is None:
    if isinstance(value, jax.core.Tracer):
      return None
    arr = np.asarray(value)
    if arr.ndim != 0:
      raise _fail(name, value, 'a scalar')
    raise _fail(name, value, 'a number')
  if math.isnan(x):
    raise _fail(name, value, 'a number, not NaN')
  return x


def check_in_range(
  name: str,
  value: Any,
  low: float,
  high: float,
  *,
  low_inclusive: bool = True,
  high_inclusive: bool = False,
) -> None:
  """Checks `low <= value < high` (inclusiveness configurable)."""
  x = _check_number(name, value)
  if x is None:
    return
  ok_low = x >= low if low_inclusive else x > low
  ok_high = x <= high if high_inclusive else x < high
  if not (ok_low and ok_high):
    left = '[' if low_inclusive else '('
    right = ']' if high_inclusive else ')'
    raise _fail(name, value, f'in {left}{low}, {high}{right}')


def check_betas(**betas: Any) -> None:
  """Checks that each named decay rate is in [0, 1)."""
  for name, value in betas.items():
    check_in_range(name, value, 0.0, 1.0)


def check_positive(name: str, value: Any) -> None:
  """Checks `0 < value < inf`."""
  x = _check_number(name, value)
  if x is not None and not (0 < x < math.inf):
    raise _fail(name, value, 'positive and finite (> 0)')


def check_non_negative(name: str, value: Any) -> None:
  """Checks `0 <= value < inf`."""
  x = _check_number(name, value)
  if x is not None and not (0 <= x < math.inf):
    raise _fail(name, value, 'non-negative and finite (>= 0)')


def check_int(
  name: str, value: Any, *, minimum: int = 0, maximum: int | None = None
) -> None:
  """Checks that `value` is an integer in `[minimum, maximum]`."""
  if isinstance(value, bool):
    raise _fail(name, value, f'an integer >= {minimum}')
  x = _check_number(name, value)
  if x is None:
    return
  if x != int(x):
    raise _fail(name, value, f'an integer >= {minimum}')
  if x < minimum or (maximum is not None and x > maximum):
    allowed = (
      f'an integer >= {minimum}'
      if maximum is None
      else f'an integer in [{minimum}, {maximum}]'
    )
    raise _fail(name, value, allowed)


def _check_scalar_or_schedule(
  name: str, value: Any, check: Callable[[str, Any], None]
) -> None:
  if callable(value):
    try:
      at_zero = value(0)
    except Exception:  # a schedule that needs more is trusted
      return
    check(f'{name}(0)', at_zero)
  else:
    check(name, value)


def check_learning_rate(
  value: Any, name: str = 'learning_rate', *, allow_none: bool = False
) -> None:
  """Checks a `ScalarOrSchedule` learning rate: non-negative and finite.

  Zero is allowed (a frozen layer, the start of a warm-up schedule).
  """
  if value is None and allow_none:
    return
  _check_scalar_or_schedule(name, value, check_non_negative)


def check_weight_decay(value: Any, name: str = 'weight_decay') -> None:
  """Checks a scalar or scheduled weight decay: non-negative and finite."""
  _check_scalar_or_schedule(name, value, check_non_negative)


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
  """Checks that `value` is one of `choices`."""
  if value not in choices:
    raise _fail(name, value, f'one of {choices!r}')


def check_transform(name: str, value: Any) -> None:
  """Checks that `value` looks like an `optax.GradientTransformation`."""
  if not (hasattr(value, 'init') and hasattr(value, 'update')):
    raise _fail(name, value, 'an optax.GradientTransformation')


def check_adam_family(
  learning_rate: Any, b1: Any, b2: Any, eps: Any, eps_root: Any
) -> None:
  """Checks the hyperparameters every Adam-like constructor shares."""
  check_learning_rate(learning_rate)
  check_betas(b1=b1, b2=b2)
  check_non_negative('eps', eps)
  check_non_negative('eps_root', eps_root)


def check_float_dtype(
  name: str, value: Any, *, allow_none: bool = True
) -> None:
  """Checks that `value` names a floating dtype (a state's `mu_dtype`).

  An integer or boolean moment would silently round every update, and a
  misspelt dtype would otherwise fail only at ``init``.
  """
  if value is None and allow_none:
    return
  if isinstance(value, jax.Array):
    # A dtype class default that `optax.inject_hyperparams` took for a
    # schedule and called: the factory sees an array, as it did before.
    return
  allowed = 'a floating dtype (e.g. jnp.float32, jnp.bfloat16)' + (
    ' or None' if allow_none else ''
  )
  try:
    dtype = jnp.dtype(value)
  except TypeError:
    raise _fail(name, value, allowed) from None
  if not jnp.issubdtype(dtype, jnp.floating):
    raise _fail(name, value, allowed)


class _Unset:
  """The default of a deprecated argument: tells "not passed" from None."""

  def __repr__(self) -> str:
    return 'UNSET'


UNSET: Any = _Unset()


def renamed_argument(
  old_name: str, old_value: Any, new_name: str, new_value: Any, default: Any
) -> Any:
  """Resolves an argument renamed from `old_name` to `new_name`.

  The old name keeps working, with a `DeprecationWarning`; passing both is
  an error rather than a silent choice of one.

  Args:
    old_name: the deprecated name.
    old_value: its value, `UNSET` when not passed.
    new_name: the current name.
    new_value: its value (the signature's default when not passed).
    default: the current name's default.

  Returns:
    The value to use.
  """
  if old_value is UNSET:
    return new_value
  warnings.warn(
    f'`{old_name}` is deprecated, pass `{new_name}` instead.',
    DeprecationWarning,
    stacklevel=3,
  )
  if new_value is not default:
    raise ValueError(
      f'pass `{new_name}` only, not also its deprecated name `{old_name}`.'
    )
  return old_value


def check_schedule_args(start_step: Any, every_k: Any) -> None:
  """Checks an averaging schedule: first snapshot and snapshot spacing.

  Shared by the averaging wrappers (`swa`, `swag`, `gadam`, ...).
  """
  check_int('start_step', start_step, minimum=0)
  check_int('every_k', every_k, minimum=1)


def as_key(key: Any, name: str = 'key') -> jax.Array:
  """``key`` as a typed PRNG key: an int seed, a typed key, a raw uint32
  pair, or an int scalar array (`optax.inject_hyperparams` hands an int
  seed back that way, traced inside ``update``). Anything else (a bool
  included): ``ValueError`` naming ``name``."""
  if not isinstance(key, bool):
    if isinstance(key, (int, np.integer)):
      return jax.random.key(key)
    if isinstance(key, (jax.Array, np.ndarray)):
      if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
        return key
      if jnp.issubdtype(key.dtype, jnp.integer) and key.shape == ():
        return jax.random.key(key)
      if key.dtype == jnp.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(key)
  raise ValueError(f'`{name}` must be an int seed or a PRNG key, got {key!r}.')
