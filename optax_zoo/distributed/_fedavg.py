"""Federated averaging with local continual training (Yao & Sun 2020).

Clients are the workers of a named mapped axis: inside `jax.shard_map` over
a worker mesh, or under ``jax.vmap(..., axis_name=...)`` when there are more
clients than devices.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from optax_zoo._src import compat
from optax_zoo._src import validation as v
from optax_zoo._src.tree_utils import map_params

__all__ = [
  'FedAvgState',
  'dirichlet_split',
  'fedavg',
  'fisher_importance',
]


def _wide(x: jax.Array) -> jax.Array:
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_axis_name(axis_name: Any) -> None:
  try:
    hash(axis_name)
  except TypeError:
    ok = False
  else:
    ok = axis_name is not None
  if not ok:
    raise ValueError(
      '`axis_name` must name the mapped client axis (a hashable such as '
      f"'workers'), got {axis_name!r}."
    )


def _num_participants(num_clients: int, client_fraction: float) -> int:
  """McMahan et al.'s :math:`m = \\max(\\mathrm{round}(C K), 1)`."""
  return max(1, round(client_fraction * num_clients))


def _participation(
  key: jax.Array, num_clients: int, client_fraction: float
) -> jax.Array:
  """The round's participation mask: float32 ``(num_clients,)``, 1 for the
  `_num_participants` clients drawn without replacement by ``key``."""
  m = _num_participants(num_clients, client_fraction)
  if m == num_clients:
    return jnp.ones(num_clients, jnp.float32)
  chosen = jax.random.permutation(key, num_clients)[:m]
  return jnp.zeros(num_clients, jnp.float32).at[chosen].set(1.0)


class FedAvgState(NamedTuple):
  """State of `fedavg`, one per client.

  `optax_zoo.eval_params` returns ``global_params``, the global model that
  federated learning evaluates.

  Attributes:
    count: steps taken, int32, the same on every client; a round ends after
      each ``local_steps`` of them.
    rng_key: raw data (uint32, `jax.random.key_data`) of the current
      round's key, the same on every client; each step splits it into
      ``(sample, next)``, draws the round's participants with ``sample`` and
      moves on to ``next`` when the round ends.
    global_params: :math:`\\bar\\theta`, the global model at the start of
      the round (the last average), in the params' dtype.
    importance: :math:`F`, the importance weights of the continual-training
      penalty, computed by ``importance_fn`` from ``global_params``; None
      when no ``importance_fn`` is given (uniform weights).
    inner_state: the client's inner optimizer state.
  """

  count: jax.Array
  rng_key: jax.Array
  global_params: Any
  importance: Any
  inner_state: optax.OptState

  # Its update moves every client onto the new global model at the end of
  # a round; a transform after it in a chain would move them elsewhere.
  must_be_last = True

  def eval_params(self, params: Any) -> Any:
    """The global model (the average of the last round)."""
    return map_params(lambda p, g: g, params, self.global_params)


def fedavg(
  inner: optax.GradientTransformation,
  axis_name: Hashable,
  *,
  local_steps: int,
  client_fraction: float = 1.0,
  continual_weight: jax.typing.ArrayLike = 0.0,
  importance_fn: Callable[[Any], Any] | None = None,
  key: Any = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""Federated averaging (FedAvg) with local continual training.

  Each client :math:`k` of the ``axis_name`` axis (:math:`K` clients)
  trains its own copy of the model with ``inner`` on its own data for
  ``local_steps`` :math:`H` steps, a round; at the end of the round the
  global model becomes the weighted average of the participating clients'
  models and every client starts the next round from it (McMahan et al.
  2017, algorithm 1, with :math:`H` local steps in place of :math:`E`
  epochs). Local continual training (Yao & Sun 2020) adds an
  importance-weighted penalty towards the global model to each client's
  loss, :math:`\frac\lambda2 \sum_j F_j (\theta_j - \bar\theta_j)^2`, so
  in round :math:`r`, at step :math:`t`:

  .. math::
    \tilde g_k &= g_k(\theta_k) + \lambda F \odot (\theta_k - \bar\theta_r),
    \qquad \theta_k \leftarrow \theta_k + \mathrm{inner}(\tilde g_k)
    \quad (k \in S_r), \\
    \bar\theta_{r+1} &= \frac{\sum_{k \in S_r} n_k \theta_k}
      {\sum_{k \in S_r} n_k}, \quad \theta_k \leftarrow \bar\theta_{r+1}
    \ (\text{all } k), \quad F \leftarrow \mathrm{importance\_fn}
    (\bar\theta_{r+1}) \quad \text{when } (t + 1) \bmod H = 0,

  with :math:`\bar\theta_r` the global model at the start of the round
  (kept in the state), :math:`F` the importance weights (the diagonal
  Fisher information of the global model on a small proxy set at the
  server, `fisher_importance`), :math:`n_k` the ``client_weight`` given to
  ``update`` (the client's number of examples; 1 by default) and
  :math:`S_r` the round's participants: :math:`m = \max(\mathrm{round}(C
  K), 1)` clients drawn without replacement from the state's key
  (``client_fraction`` :math:`C`). The other clients hold the global model
  and do not train that round: their update is zero and their inner state
  does not move until the round's average reaches them. Each client keeps
  its inner optimizer state across rounds. With ``continual_weight`` 0 it
  is plain FedAvg; with ``importance_fn=None`` the weights are uniform
  (:math:`F = 1`, the proximal term of FedProx, Li et al. 2020).

  The average is one ``lax.cond`` on the replicated step count (never
  `optax.MultiSteps`), so the collective runs only at the end of a round.
  Under `jax.vmap` keep the count unbatched (``in_axes``/``out_axes`` of
  ``None`` for ``state.count``, from an unbatched ``init`` count): a
  batched count turns the ``cond`` into a select, and the all-reduce and
  ``importance_fn`` then run at every step (same numbers, H times the
  work). In `jax.shard_map` the count is replicated and this does not
  arise.
  ``importance_fn`` runs there (and at ``init``) on every client, each
  computing the same :math:`F` from the same global model: the server's
  work, replicated, with no messages. Place ``fedavg`` last: its update
  moves the parameters onto the new global model at the end of a round
  (up to one rounding of :math:`\theta_k + (\bar\theta - \theta_k)`).
  `optax_zoo.eval_params` gives the global model. On an axis of size one
  with ``local_steps=1`` it is exactly ``inner``.

  What crosses the wire: at the end of each round one all-reduce of
  :math:`n_k \theta_k` (zeros from the clients not drawn) in float32 at
  least, plus one float32 scalar :math:`n_k`: a ring all-reduce carries
  :math:`2 (K - 1) / K` times ``sum(p.size * max(p.dtype.itemsize, 4)) +
  4`` bytes sent (and as many received) per client per round, :math:`1/H`
  of that per step; nothing between rounds. (A real federated system moves
  only the :math:`m` participants' models to and from a server, plus
  :math:`F` downstream.) A non-finite parameter on a participant makes the
  next global model non-finite on every client; nothing is filtered.

  Args:
    inner: the local optimizer each client runs (with its learning rate).
    axis_name: the mapped client axis, bound by `jax.shard_map` or
      ``jax.vmap(..., axis_name=...)`` when ``update`` is traced.
    local_steps: :math:`H`, local steps per round, an integer >= 1.
    client_fraction: :math:`C`, the fraction of clients drawn each round, in
      (0, 1].
    continual_weight: :math:`\lambda \ge 0`, the weight of the continual
      training penalty.
    importance_fn: maps the global model to :math:`F` (a params-shaped tree
      of non-negative weights), e.g. ``lambda p: fisher_importance(loss_fn,
      p, proxy_batch)``; None for :math:`F = 1`.
    key: an int seed or a PRNG key for the client sampling.

  Returns:
    An `optax.GradientTransformationExtraArgs`; ``update`` needs ``params``,
    takes an optional ``client_weight`` (the client's :math:`n_k`, a
    non-negative scalar) and passes other extra arguments to ``inner``.

  Raises:
    ValueError: at construction for ``local_steps`` < 1, ``client_fraction``
      outside (0, 1], a negative ``continual_weight``, a bad ``inner``,
      ``importance_fn``, ``key`` or ``axis_name``; at trace time if
      ``axis_name`` is not bound.

  Example:
    Four clients simulated with `jax.vmap`; client :math:`k`'s loss is
    :math:`\frac12 (x - k)^2`, two local steps per round:

    >>> import jax, jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.fedavg(optax.sgd(0.5), 'clients', local_steps=2)
    >>> def step(x, state, target):
    ...   updates, state = tx.update(x - target, state, x)
    ...   return optax.apply_updates(x, updates), state
    >>> step = jax.vmap(step, axis_name='clients')
    >>> x, targets = jnp.zeros(4), jnp.arange(4.0)
    >>> state = jax.vmap(tx.init)(x)
    >>> x, state = step(x, state, targets)  # a local step: models differ
    >>> x
    Array([0. , 0.5, 1. , 1.5], dtype=float32)
    >>> x, state = step(x, state, targets)  # end of the round: the average
    >>> x
    Array([1.125, 1.125, 1.125, 1.125], dtype=float32)

    With continual training towards the global model, the importance from a
    proxy batch at the server (``loss_fn(params, batch)``):

    >>> loss_fn = lambda p, b: jnp.mean(0.5 * (p * b - 1.0) ** 2)
    >>> proxy = jnp.array([0.5, 1.0, 2.0])
    >>> tx = optax_zoo.fedavg(
    ...   optax.sgd(0.5), 'clients', local_steps=2, continual_weight=1.0,
    ...   importance_fn=lambda p: optax_zoo.fisher_importance(
    ...     loss_fn, p, proxy))

  References:
    Yao & Sun, `Continual Local Training for Better Initialization of
    Federated Models <https://arxiv.org/abs/2005.12657>`_, ICIP 2020.

    McMahan et al., `Communication-Efficient Learning of Deep Networks from
    Decentralized Data <https://arxiv.org/abs/1602.05629>`_, AISTATS 2017.

  Deviations: :math:`H` local steps per round instead of :math:`E` local
  epochs (a client's epoch is ``local_steps`` for its data); the average
  runs on every client in place of a server; the importance is computed by
  ``importance_fn`` on every client from the replicated global model.
  """
  v.check_transform('inner', inner)
  _check_axis_name(axis_name)
  v.check_int('local_steps', local_steps, minimum=1)
  v.check_in_range(
    'client_fraction',
    client_fraction,
    0.0,
    1.0,
    low_inclusive=False,
    high_inclusive=True,
  )
  if isinstance(client_fraction, jax.core.Tracer):
    raise ValueError(
      '`client_fraction` fixes how many clients are drawn: pass a Python '
      'number (a static argument of optax.inject_hyperparams).'
    )
  v.check_non_negative('continual_weight', continual_weight)
  if importance_fn is not None and not callable(importance_fn):
    raise ValueError(
      '`importance_fn` must be None or a callable of the global model, got '
      f'{importance_fn!r}.'
    )
  base = v.as_key(key)
  impl, key_data = jax.random.key_impl(base), jax.random.key_data(base)
  inner = optax.with_extra_args_support(inner)
  # A concrete zero weight drops the penalty: plain FedAvg, bit for bit.
  penalized = isinstance(continual_weight, jax.core.Tracer) or (
    float(np.asarray(continual_weight)) != 0.0
  )

  def importance_of(global_params):
    f = importance_fn(global_params)
    return jax.tree.map(lambda i, p: jnp.asarray(i, p.dtype), f, global_params)

  def init_fn(params):
    return FedAvgState(
      count=jnp.zeros([], jnp.int32),
      rng_key=jnp.array(key_data, copy=True),
      # A real copy: an alias of `params` breaks buffer donation of params
      # and state together.
      global_params=jax.tree.map(lambda p: jnp.array(p, copy=True), params),
      importance=None if importance_fn is None else importance_of(params),
      inner_state=inner.init(params),
    )

  def update_fn(updates, state, params=None, *, client_weight=1.0, **extra):
    if params is None:
      raise ValueError('fedavg averages the parameters: pass `params`.')
    size = compat.axis_size(axis_name)
    if size is None:
      raise ValueError(
        f'`axis_name` {axis_name!r} is not bound: call the update of fedavg '
        'inside jax.shard_map over a mesh with that axis '
        f'(optax_zoo.worker_map) or under jax.vmap(..., axis_name='
        f'{axis_name!r}).'
      )
    sample_key, next_key = jax.random.split(
      jax.random.wrap_key_data(state.rng_key, impl=impl)
    )
    mask = _participation(sample_key, size, client_fraction)
    active = mask[lax.axis_index(axis_name)]

    grads = updates
    if penalized:

      def pull(g, p, pg, f=None):
        diff = _wide(p) - _wide(pg)
        if f is not None:
          diff = _wide(f) * diff
        return (_wide(g) + continual_weight * diff).astype(g.dtype)

      trees = (updates, params, state.global_params)
      if state.importance is not None:
        trees += (state.importance,)
      grads = jax.tree.map(pull, *trees)
    local, inner_state = inner.update(grads, state.inner_state, params, **extra)
    if size > 1:
      local = jax.tree.map(
        lambda u: jnp.where(active > 0, u, jnp.zeros_like(u)), local
      )
      inner_state = jax.tree.map(
        lambda new, old: jnp.where(active > 0, new, old),
        inner_state,
        state.inner_state,
      )
    count = optax.safe_increment(state.count)

    def average(operands):
      local, params, importance = operands
      moved = jax.tree.map(
        lambda p, u: jnp.asarray(p + u).astype(p.dtype), params, local
      )
      if size == 1:
        new_global, out = moved, local
      else:
        w = active * jnp.asarray(client_weight, jnp.float32)
        total = lax.psum(w, axis_name)
        new_global = jax.tree.map(
          lambda x: (lax.psum(w * _wide(x), axis_name) / total).astype(x.dtype),
          moved,
        )
        out = jax.tree.map(
          lambda g, p, u: (g - p).astype(u.dtype), new_global, params, local
        )
      if importance_fn is not None:
        importance = importance_of(new_global)
      return compat.pcast_varying(
        (out, new_global, importance, jax.random.key_data(next_key)),
        axis_name,
      )

    def keep(operands):
      local, _, importance = operands
      return compat.pcast_varying(
        (local, state.global_params, importance, state.rng_key), axis_name
      )

    operands = (local, params, state.importance)
    if local_steps == 1:
      out = average(operands)
    else:
      out = lax.cond(count % local_steps == 0, average, keep, operands)
    out_updates, global_params, importance, rng_key = out
    return out_updates, FedAvgState(
      count=count,
      rng_key=rng_key,
      global_params=global_params,
      importance=importance,
      inner_state=inner_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def fisher_importance(
  loss_fn: Callable[[Any, Any], jax.Array], params: Any, proxy_batch: Any
) -> Any:
  r"""The diagonal empirical Fisher information on a proxy batch.

  .. math::
    F = \frac1N \sum_{i=1}^N \nabla_\theta \ell(\theta; x_i) \odot
    \nabla_\theta \ell(\theta; x_i),

  the mean of the squared per-example gradients (`jax.vmap` over the
  examples), the importance of Yao & Sun 2020 estimated at the server on a
  small proxy set (as in EWC, Kirkpatrick et al. 2017). Computed in float32
  at least, returned in the params' dtypes.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar``, the mean loss of a batch;
      each example is given to it as a batch of one.
    params: the model (the global model).
    proxy_batch: a pytree of arrays with a leading example axis.

  Returns:
    :math:`F`, shaped and typed like ``params``.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> loss_fn = lambda w, x: jnp.mean(0.5 * (w * x) ** 2)
    >>> optax_zoo.fisher_importance(loss_fn, jnp.array(1.0),
    ...                             jnp.array([1.0, 2.0]))  # (1 + 16) / 2
    Array(8.5, dtype=float32)
  """
  one = lambda ex: jax.grad(loss_fn)(
    params, jax.tree.map(lambda x: x[None], ex)
  )
  grads = jax.vmap(one)(proxy_batch)
  return jax.tree.map(
    lambda g, p: jnp.mean(jnp.square(_wide(g)), axis=0).astype(p.dtype),
    grads,
    params,
  )


def dirichlet_split(
  labels: Sequence[int] | np.ndarray, num_clients: int, alpha: float, seed: int
) -> list[np.ndarray]:
  r"""Non-iid client shards by Dirichlet label skew (Hsu et al. 2019).

  For each class :math:`c`, the proportions :math:`p_c \sim
  \mathrm{Dir}(\alpha \mathbf 1_K)` split that class's examples (shuffled)
  among the :math:`K` clients. Small :math:`\alpha` gives each client few
  classes; large :math:`\alpha` approaches the iid split.

  Args:
    labels: the integer class of each example, shape ``(N,)``.
    num_clients: :math:`K`, an integer >= 1.
    alpha: the Dirichlet concentration, > 0.
    seed: seeds `numpy.random.default_rng`.

  Returns:
    One sorted int64 array of example indices per client; together they
    hold every index exactly once.

  Raises:
    ValueError: for ``alpha`` <= 0, ``num_clients`` < 1, ``labels`` that
      are not a 1-D integer array, or a draw that leaves a client without
      examples (try another ``seed``, a larger ``alpha`` or fewer clients).

  Example:
    >>> import numpy as np, optax_zoo
    >>> shards = optax_zoo.dirichlet_split(np.arange(12) % 3, 2, 1.0, 0)
    >>> sorted(np.concatenate(shards).tolist()) == list(range(12))
    True
  """
  v.check_int('num_clients', num_clients, minimum=1)
  v.check_positive('alpha', alpha)
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(
      f'`labels` must be a 1-D integer array, got dtype {labels.dtype} and '
      f'shape {labels.shape}.'
    )
  rng = np.random.default_rng(seed)
  parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    p = rng.dirichlet(np.full(num_clients, float(alpha)))
    cuts = (np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
    for k, chunk in enumerate(np.split(idx, cuts)):
      parts[k].append(chunk)
  shards = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
  empty = [k for k, s in enumerate(shards) if s.size == 0]
  if empty:
    raise ValueError(
      f'`alpha`={alpha} with `num_clients`={num_clients} and `seed`={seed} '
      f'leaves clients {empty} without examples: use another seed, a larger '
      'alpha or fewer clients.'
    )
  return shards
