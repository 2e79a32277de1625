"""Fast geometric ensembling (FGE): snapshots along a cyclic schedule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v
from optax_zoo.averaging import _tree

__all__ = ['FGEState', 'fge', 'fge_ensemble_predict']


class FGEState(NamedTuple):
  """State of `fge`.

  Attributes:
    count: steps taken, int32.
    n_snapshots: snapshots stored so far, int32 (may exceed the buffer).
    pending: whether the parameters after the last step are a snapshot not
      yet stored (bool): they reach the wrapper as the next update's
      ``params``; `fge_ensemble_predict` takes them meanwhile.
    snapshots: the last ``num_snapshots`` snapshots, leaves of shape
      ``(num_snapshots, *param.shape)``, a ring buffer.
    inner_state: the inner optimizer's state.
  """

  count: jax.Array
  n_snapshots: jax.Array
  pending: jax.Array
  snapshots: Any
  inner_state: optax.OptState


def _store(snapshots: Any, n: Any, due: Any, params: Any):
  """The buffer and count with ``params`` stored where a snapshot is due."""
  slot = n % jax.tree.leaves(snapshots)[0].shape[0]
  snapshots = jax.tree.map(
    lambda s, p: jnp.where(due, s.at[slot].set(p.astype(s.dtype)), s),
    snapshots,
    params,
  )
  return snapshots, n + due.astype(jnp.int32)


def fge(
  inner: optax.GradientTransformation,
  *,
  cycle_steps: int,
  num_snapshots: int,
  start_step: jax.typing.ArrayLike = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""Fast geometric ensembling (Garipov et al., 2018): snapshot collection.

  Trains with ``inner`` unchanged (give it
  `optax_zoo.schedules.fge_schedule` with the same ``cycle_steps``, started
  at ``start_step`` with `optax.join_schedules` as in the example) and
  stores the weights at each cycle's low point, the middle of the cycle, as
  ``fge.py`` does:

  .. math::
    t - t_0 \equiv c/2 \pmod c \implies \text{snapshot } \theta_t,

  with :math:`t` completed steps, :math:`t_0` = ``start_step`` and :math:`c`
  = ``cycle_steps``. `fge_ensemble_predict` averages the snapshots'
  predictions. The state adds ``num_snapshots`` parameter copies.

  The snapshots are the ``params`` the updates are handed, the weights
  training actually reached, so FGE may sit anywhere in a chain: the weights
  after step :math:`t` arrive with update :math:`t + 1`, and a snapshot due
  at the last step waits as ``pending`` until then (pass the parameters to
  `fge_ensemble_predict` to include it).

  Args:
    inner: the optimizer (SGD with the cyclic schedule in the paper).
    cycle_steps: :math:`c`, steps per cycle, an integer >= 2 (static).
    num_snapshots: snapshots kept (the last ones), an integer >= 1 (static).
    start_step: :math:`t_0`, where the cycles begin (the paper starts from a
      pre-trained model), an integer >= 0.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.fge(optax.sgd(0.1), cycle_steps=2, num_snapshots=3)
    >>> params = jnp.array([1.0])
    >>> state = tx.init(params)
    >>> for _ in range(4):
    ...   updates, state = tx.update(params, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> int(state.n_snapshots)  # after steps 1 and 3: 0.9 and 0.729
    2
    >>> optax_zoo.fge_ensemble_predict(lambda p: p, state, params)
    Array([0.8145], dtype=float32)

    After pre-training for ``start_step`` steps at a constant rate, the
    cycles of the schedule begin with those of the snapshots:

    >>> start = 100
    >>> lr = optax.join_schedules(
    ...   [optax.constant_schedule(0.05),
    ...    optax_zoo.schedules.fge_schedule(0.05, 5e-4, cycle_steps=4)],
    ...   boundaries=[start])
    >>> [round(float(lr(n)), 5) for n in (99, 100, 101, 102)]
    [0.05, 0.05, 0.02525, 0.0005]
    >>> tx = optax_zoo.fge(
    ...   optax.sgd(lr), cycle_steps=4, num_snapshots=3, start_step=start)

  References:
    Garipov et al., `Loss Surfaces, Mode Connectivity, and Fast Ensembling
    of DNNs <https://arxiv.org/abs/1802.10026>`_, 2018; reference code
    timgaripov/dnn-mode-connectivity, ``fge.py``.

  Deviations: counted in steps, not epochs.
  """
  v.check_transform('inner', inner)
  v.check_int('cycle_steps', cycle_steps, minimum=2)
  v.check_int('num_snapshots', num_snapshots, minimum=1)
  v.check_int('start_step', start_step, minimum=0)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return FGEState(
      count=jnp.zeros([], jnp.int32),
      n_snapshots=jnp.zeros([], jnp.int32),
      pending=jnp.zeros([], bool),
      snapshots=jax.tree.map(
        lambda p: jnp.zeros((num_snapshots, *p.shape), p.dtype), params
      ),
      inner_state=inner.init(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError('fge needs `params` in update().')
    updates, inner_state = inner.update(
      updates, state.inner_state, params, **extra_args
    )
    snapshots, n_snapshots = _store(
      state.snapshots, state.n_snapshots, state.pending, params
    )
    return updates, FGEState(
      count=optax.safe_increment(state.count),
      n_snapshots=n_snapshots,
      pending=_tree.is_event(
        state.count + 1, start_step, cycle_steps, offset=cycle_steps // 2
      ),
      snapshots=snapshots,
      inner_state=inner_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def fge_ensemble_predict(
  predict_fn: Callable[[Any], jax.Array],
  opt_state: optax.OptState,
  params: Any | None = None,
) -> jax.Array:
  """The mean of ``predict_fn`` (probabilities) over the stored snapshots.

  Jittable; empty slots of the ring buffer get weight zero. Before the
  first snapshot the result is NaN.

  Args:
    predict_fn: maps weights to class probabilities.
    opt_state: a state holding an `FGEState`.
    params: the current parameters, which complete a snapshot due at the
      last step (`FGEState.pending`). Required when one is due; under jit,
      where that cannot be checked, pass them always.

  Returns:
    The ensemble's mean prediction.

  Raises:
    ValueError: if a snapshot is pending and ``params`` is None (checked
      where the state is concrete).
  """
  state = _tree.find_state(opt_state, FGEState)
  # `nnx.Optimizer` wraps state leaves in variables; predict on plain arrays.
  snapshots = _tree.unwrap(state.snapshots)
  n, due = _tree.scalar(state.n_snapshots), _tree.scalar(state.pending)
  if params is not None:
    snapshots, n = _store(snapshots, n, due, _tree.unwrap(params))
  elif not isinstance(due, jax.core.Tracer) and bool(due):
    raise ValueError(
      '`params` must be given: the last step is a snapshot of fge that '
      'reaches its state only with the next update.'
    )
  size = jax.tree.leaves(snapshots)[0].shape[0]
  preds = jax.lax.map(predict_fn, snapshots)
  filled = jnp.arange(size) < n
  w = filled / jnp.sum(filled)
  return jnp.tensordot(w.astype(preds.dtype), preds, axes=1)
