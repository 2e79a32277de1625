"""Non-blocking synchronous SGD under stragglers (He & Dube 2022).

Each worker splits its batch into micro-batches and computes their
gradients one after the other; after a time budget the workers combine the
gradients of the micro-batches they have finished, so a straggler delays
nobody. A `DelayModel` draws the micro-batch compute times (the machine
cannot show a straggler), `finished_microbatches` says which finish within
the budget, `nonblocking_sgd` accumulates and all-reduces exactly those,
and `simulated_step_time` gives the wall time a step would take.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from optax_zoo._src import compat
from optax_zoo._src import validation as v
from optax_zoo.distributed._comm import alpha_beta_time

__all__ = [
  'DelayModel',
  'NonBlockingState',
  'finished_microbatches',
  'nonblocking_sgd',
  'simulated_step_time',
]


def _wide(x: jax.Array) -> jax.Array:
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _as_key(key: Any) -> jax.Array:
  if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
    return jax.random.key(int(key))
  return key


@dataclasses.dataclass(frozen=True)
class DelayModel:
  r"""Seeded compute times of micro-batches on heterogeneous workers.

  Worker :math:`i` needs :math:`\mu_i` seconds per micro-batch on average.
  In a step it is a straggler with probability :math:`p`, independently of
  the other workers and steps, and then every one of its micro-batches
  takes ``slowdown`` times longer (a machine slowed for the whole step: a
  noisy neighbour, a garbage collection, a thermal throttle). On top, each
  micro-batch's time carries an independent multiplicative noise
  :math:`\epsilon_{ij}` of mean one, gamma-distributed with coefficient of
  variation ``jitter``:

  .. math::
    t_{ij} = \mu_i \, s_i \, \epsilon_{ij}, \qquad
    s_i = \begin{cases} \text{slowdown} & \text{with probability } p \\
    1 & \text{otherwise,} \end{cases} \qquad
    \epsilon_{ij} \sim \Gamma(k, 1/k), \; k = \text{jitter}^{-2}.

  Attributes:
    mean_times: :math:`\mu_i >= 0`, seconds per micro-batch: one number
      for every worker, or a sequence with one per worker (heterogeneous
      workers).
    straggler_prob: :math:`p \in [0, 1]`.
    slowdown: a straggler's factor, ``>= 1``.
    jitter: the coefficient of variation of :math:`\epsilon`, ``>= 0``
      (0: no noise).

  Raises:
    ValueError: naming the argument, for a negative or non-finite mean
      time, a probability outside [0, 1], a slowdown below 1 or a negative
      jitter.

  Example:
    >>> import jax, optax_zoo
    >>> model = optax_zoo.DelayModel((1.0, 1.0, 2.0), straggler_prob=0.0)
    >>> model.sample(jax.random.key(0), 3, 2)
    Array([[1., 1.],
           [1., 1.],
           [2., 2.]], dtype=float32)
  """

  mean_times: float | Sequence[float]
  straggler_prob: float = 0.0
  slowdown: float = 1.0
  jitter: float = 0.0

  def __post_init__(self):
    if isinstance(self.mean_times, (str, bytes)) or self.mean_times is None:
      raise ValueError(
        '`mean_times` must be a non-negative number or a sequence of them '
        f'(seconds per micro-batch), got {self.mean_times!r}.'
      )
    times = np.asarray(self.mean_times, dtype=np.float64)
    if times.ndim > 1 or times.size == 0:
      raise ValueError(
        '`mean_times` must be a number or a non-empty 1-D sequence (one '
        f'per worker), got {self.mean_times!r}.'
      )
    if not np.all(np.isfinite(times)) or np.any(times < 0):
      raise ValueError(
        '`mean_times` must be non-negative and finite (seconds per '
        f'micro-batch), got {self.mean_times!r}.'
      )
    normal = float(times) if times.ndim == 0 else tuple(times.tolist())
    object.__setattr__(self, 'mean_times', normal)
    v.check_in_range(
      'straggler_prob', self.straggler_prob, 0.0, 1.0, high_inclusive=True
    )
    v.check_in_range('slowdown', self.slowdown, 1.0, math.inf)
    v.check_non_negative('jitter', self.jitter)

  def sample(
    self, key: Any, num_workers: int, num_microbatches: int
  ) -> jax.Array:
    """Draws one step's compute times.

    Args:
      key: a JAX PRNG key or an int seed; the same key gives the same
        times.
      num_workers: ``n >= 1``; equal to ``len(mean_times)`` when that is
        a sequence.
      num_microbatches: ``m >= 1`` per worker.

    Returns:
      ``t``, float32 of shape ``(num_workers, num_microbatches)``: seconds
      for micro-batch ``j`` of worker ``i``.
    """
    v.check_int('num_workers', num_workers, minimum=1)
    v.check_int('num_microbatches', num_microbatches, minimum=1)
    if isinstance(self.mean_times, tuple) and len(self.mean_times) != (
      num_workers
    ):
      raise ValueError(
        f'`num_workers` ({num_workers}) must equal the number of '
        f'`mean_times` ({len(self.mean_times)}).'
      )
    noise_key, straggler_key = jax.random.split(_as_key(key))
    shape = (num_workers, num_microbatches)
    mean = jnp.broadcast_to(
      jnp.asarray(self.mean_times, jnp.float32), (num_workers,)
    )
    slow = jax.random.bernoulli(
      straggler_key, self.straggler_prob, (num_workers,)
    )
    factor = jnp.where(slow, jnp.float32(self.slowdown), 1.0)
    times = jnp.broadcast_to((mean * factor)[:, None], shape)
    if self.jitter > 0:
      k = 1.0 / self.jitter**2
      times = times * jax.random.gamma(noise_key, k, shape) / k
    return times


def finished_microbatches(
  times: jax.typing.ArrayLike, budget: jax.typing.ArrayLike
) -> jax.Array:
  """How many micro-batches each worker finishes within ``budget``.

  A worker computes its micro-batches in order, so micro-batch ``j`` is done
  at the cumulative time :math:`\\sum_{k \\le j} t_{ik}`; it counts when
  that is at most ``budget``.

  Args:
    times: ``(..., num_microbatches)`` non-negative compute times (as from
      `DelayModel.sample`).
    budget: seconds, ``>= 0``.

  Returns:
    int32 counts in ``[0, num_microbatches]``, shaped ``times.shape[:-1]``.

  Raises:
    ValueError: for a negative budget, or concrete ``times`` with a
      negative entry.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> times = jnp.array([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    >>> optax_zoo.finished_microbatches(times, 2.5)
    Array([2, 1], dtype=int32)
  """
  v.check_non_negative('budget', budget)
  if not isinstance(times, jax.core.Tracer):
    concrete = np.asarray(times)
    if concrete.ndim == 0 or np.any(concrete < 0):
      raise ValueError(
        '`times` must be non-negative compute times with a trailing '
        f'micro-batch axis, got {times!r}.'
      )
  done = jnp.cumsum(jnp.asarray(times), axis=-1) <= budget
  return jnp.sum(done, axis=-1, dtype=jnp.int32)


def simulated_step_time(
  times: jax.typing.ArrayLike,
  budget: jax.typing.ArrayLike | None = None,
  *,
  message_bytes: float,
  latency: float,
  bandwidth: float,
) -> jax.Array:
  r"""Simulated wall time of one step: compute, then a ring all-reduce.

  .. math::
    T = \min\Big(\tau, \max_i \sum_j t_{ij}\Big) + T_\text{ring}(n, M),

  with :math:`\tau` the non-blocking budget (the step ends at the budget,
  or earlier when every worker has finished), :math:`\tau = \infty` for
  synchronous SGD (``budget=None``: everyone waits for the slowest
  worker), and :math:`T_\text{ring}` `optax_zoo.alpha_beta_time`'s
  ``'ring_allreduce'`` of ``n = times.shape[0]`` workers and ``M`` bytes
  each. Computation and communication do not overlap in this model.

  Args:
    times: ``(num_workers, num_microbatches)`` compute times.
    budget: the time budget :math:`\tau >= 0`, or None to wait for all.
    message_bytes: ``M``, each worker's all-reduce message (for
      `nonblocking_sgd`: the gradient in float32 at least, plus 4 bytes
      for the count).
    latency: seconds per message (alpha).
    bandwidth: bytes per second per link (beta).

  Returns:
    Seconds, a float32 scalar.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> times = jnp.array([[1.0, 1.0], [3.0, 3.0]])
    >>> float(optax_zoo.simulated_step_time(
    ...   times, 2.0, message_bytes=0.0, latency=0.5, bandwidth=1.0))
    3.0
  """
  times = jnp.asarray(times)
  if times.ndim != 2:
    raise ValueError(
      '`times` must be (num_workers, num_microbatches), got shape '
      f'{times.shape}.'
    )
  compute = jnp.max(jnp.sum(times, axis=-1))
  if budget is not None:
    v.check_non_negative('budget', budget)
    compute = jnp.minimum(compute, budget)
  comm = alpha_beta_time(
    'ring_allreduce',
    num_workers=times.shape[0],
    message_bytes=message_bytes,
    latency=latency,
    bandwidth=bandwidth,
  )
  return (compute + comm).astype(jnp.float32)


class NonBlockingState(NamedTuple):
  """State of `nonblocking_sgd`.

  Attributes:
    count: steps taken, skipped ones included (int32, the same on every
      worker).
    skipped: steps skipped because no worker finished a micro-batch.
    inner_state: the inner optimizer's state (unchanged by a skipped step).
  """

  count: jax.Array
  skipped: jax.Array
  inner_state: optax.OptState


def _check_axis_name(axis_name: Any) -> None:
  try:
    hash(axis_name)
  except TypeError:
    ok = False
  else:
    ok = axis_name is not None and axis_name != ''
  if not ok:
    raise ValueError(
      '`axis_name` must name the mapped worker axis (a hashable such as '
      f"'workers'), got {axis_name!r}."
    )


def _stacked(updates: Any, params: Any) -> tuple[Any, int]:
  """The gradients with a leading micro-batch axis, and its length.

  A leaf shaped like its parameter is one micro-batch; one with an extra
  leading axis holds that many. Every leaf must agree.
  """
  g_leaves, treedef = jax.tree.flatten(updates)
  p_leaves = treedef.flatten_up_to(params)
  counts = set()
  for g, p in zip(g_leaves, p_leaves, strict=True):
    if g.shape == p.shape:
      counts.add(None)
    elif g.ndim == p.ndim + 1 and g.shape[1:] == p.shape:
      counts.add(g.shape[0])
    else:
      raise ValueError(
        'nonblocking_sgd takes per-worker gradients shaped like the '
        'parameters (one micro-batch) or with a leading micro-batch axis; '
        f'got a gradient of shape {g.shape} for a parameter of shape '
        f'{p.shape}.'
      )
  if len(counts) > 1:
    raise ValueError(
      'every gradient leaf must have the same micro-batch axis (or none), '
      f'got lengths {sorted(counts, key=str)} (None: no axis).'
    )
  num = counts.pop() if counts else None
  if num is None:
    return jax.tree.map(lambda g: g[None], updates), 1
  return updates, num


def nonblocking_sgd(
  axis_name: Hashable,
  *,
  inner: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Non-blocking synchronous SGD (He & Dube 2022): combine what finished.

  (The paper's mini-batches are called micro-batches here, the pieces of
  one worker's batch.) Worker :math:`i` of :math:`n` hands over the
  gradients
  :math:`g_{i1}, \dots, g_{im}` of its :math:`m` micro-batches, stacked on a
  leading axis, and ``num_finished`` :math:`= f_i`, how many of them (the
  first :math:`f_i`) finished within the time budget (from
  `finished_microbatches`). The workers all-reduce the sums of their
  finished gradients and their counts, and step on

  .. math::
    \bar g = \frac{\sum_{i=1}^n \sum_{j \le f_i} g_{ij}}
                  {\sum_{i=1}^n f_i}, \qquad
    u = \mathrm{inner}(\bar g),

  the mean over every finished micro-batch of every worker: each finished
  micro-batch weighs the same, so a worker weighs in proportion to how much
  it finished, and one that finished nothing weighs 0. With every
  micro-batch finished (:math:`f_i = m`) it is synchronous SGD with
  gradient accumulation. If no worker finished any micro-batch
  (:math:`\sum_i f_i = 0`) the step is skipped: the update is zero, the
  inner state is kept and ``skipped`` counts it (every worker sees the same
  total, so all skip together).

  The call is ``update(grads, state, params, *, num_finished=...)``:
  ``num_finished`` is an int per worker, clipped to :math:`[0, m]` (a
  concrete value outside raises). Without it every micro-batch counts as
  finished; a gradient shaped like ``params`` (no micro-batch axis) is one
  micro-batch. So on an axis of size one, with everything finished, it is
  ``inner`` on the mean micro-batch gradient, and given plain gradients it
  is `optax_zoo.all_reduce_mean`. ``params`` are required: the micro-batch
  axis is recognised against their shapes.

  What crosses the wire: one all-reduce of the summed finished gradients,
  in float32 (or wider, as the gradients' dtype), plus one int32 count:
  ring all-reduce carries :math:`2 (n - 1) / n` times
  ``4 + sum(g.size * max(g.itemsize, 4))`` bytes (one micro-batch's
  gradient, not :math:`m`) sent and as many received per worker per step.
  `simulated_step_time` turns that into seconds. A non-finite gradient of
  a finished micro-batch makes every worker's update non-finite; those of
  unfinished micro-batches are masked out, not multiplied by zero (they
  never exist in the system being simulated).

  Args:
    axis_name: the mapped worker axis, bound by `jax.shard_map` or
      ``jax.vmap(..., axis_name=...)`` when ``update`` is traced.
    inner: the optimizer applied to :math:`\bar g` (SGD in the paper), or
      None for :math:`\bar g` itself.

  Returns:
    An `optax.GradientTransformationExtraArgs` with state
    `NonBlockingState`; other extra arguments go to ``inner``.

  Raises:
    ValueError: at construction for a missing ``axis_name`` or a bad
      ``inner``; at trace time for an unbound axis, missing ``params``,
      gradients that fit neither layout, or a concrete ``num_finished``
      outside :math:`[0, m]`.

  Example:
    Two workers, three micro-batches each; worker 0 finished two of them,
    worker 1 one, so the mean is over three gradients:

    >>> import jax, jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.nonblocking_sgd('workers', inner=optax.sgd(1.0))
    >>> def step(x, g, f):
    ...   updates, _ = tx.update(g, tx.init(x), x, num_finished=f)
    ...   return optax.apply_updates(x, updates)
    >>> grads = jnp.array([[1.0, 2.0, 100.0], [6.0, 100.0, 100.0]])
    >>> jax.vmap(step, axis_name='workers')(
    ...   jnp.zeros(2), grads, jnp.array([2, 1]))  # -(1 + 2 + 6) / 3
    Array([-3., -3.], dtype=float32)

    The finished counts come from a delay model and a budget:

    >>> model = optax_zoo.DelayModel((1.0, 1.0, 2.0, 4.0),
    ...                              straggler_prob=0.1, slowdown=4.0)
    >>> times = model.sample(jax.random.key(0), 4, 3)
    >>> optax_zoo.finished_microbatches(times, budget=3.0).shape
    (4,)

  References:
    He & Dube, `Accelerating Parallel Stochastic Gradient Descent via
    Non-blocking Mini-batches <https://arxiv.org/abs/2211.00889>`_, 2022.

  Deviations: the paper combines by ring all-reduce or gossip (D-PSGD,
  MATCHA); here only the all-reduce. Its run-time analysis draws random
  straggler delays; `DelayModel` is this package's model of them (see its
  docstring), not the paper's exact distribution.
  """
  _check_axis_name(axis_name)
  if inner is None:
    inner = optax.identity()
  v.check_transform('inner', inner)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    zero = jnp.zeros([], jnp.int32)
    return NonBlockingState(
      count=zero, skipped=zero, inner_state=inner.init(params)
    )

  def update_fn(updates, state, params=None, *, num_finished=None, **extra):
    if params is None:
      raise ValueError(
        'nonblocking_sgd recognises the micro-batch axis against the '
        'parameters: pass `params`.'
      )
    if compat.axis_size(axis_name) is None:
      raise ValueError(
        f'`axis_name` {axis_name!r} is not bound: call the update of '
        'nonblocking_sgd inside jax.shard_map over a mesh with that axis '
        f'(optax_zoo.worker_map) or under jax.vmap(..., axis_name='
        f'{axis_name!r}).'
      )
    stacked, m = _stacked(updates, params)
    if num_finished is None:
      finished = jnp.int32(m)
    else:
      if not isinstance(num_finished, jax.core.Tracer):
        v.check_int('num_finished', num_finished, minimum=0, maximum=m)
      finished = jnp.asarray(num_finished)
      if finished.ndim != 0:
        raise ValueError(
          '`num_finished` must be one integer per worker, got shape '
          f'{finished.shape}.'
        )
      finished = jnp.clip(finished.astype(jnp.int32), 0, m)
    done = jnp.arange(m) < finished

    def local_sum(g):
      mask = done.reshape(-1, *[1] * (g.ndim - 1))
      return jnp.sum(jnp.where(mask, _wide(g), 0), axis=0)

    sums, total = lax.psum(
      compat.pcast_varying(
        (jax.tree.map(local_sum, stacked), finished), axis_name
      ),
      axis_name,
    )
    skip = total == 0
    scale = 1.0 / jnp.maximum(total, 1).astype(jnp.float32)
    mean = jax.tree.map(
      lambda s, g: (s * scale.astype(s.dtype)).astype(g.dtype), sums, updates
    )
    new_updates, inner_state = inner.update(
      mean, state.inner_state, params, **extra
    )
    new_updates = jax.tree.map(
      lambda u: jnp.where(skip, jnp.zeros_like(u), u), new_updates
    )
    inner_state = jax.tree.map(
      lambda old, new: jnp.where(skip, old, new),
      state.inner_state,
      inner_state,
    )
    return new_updates, NonBlockingState(
      count=optax.safe_increment(state.count),
      skipped=state.skipped + skip.astype(jnp.int32),
      inner_state=inner_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
