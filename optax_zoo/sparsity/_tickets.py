"""Sparse ensembles and superposed tickets: FreeTickets (EDST), Sup-tickets."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import tree_utils
from optax_zoo._src import validation as v
from optax_zoo.sparsity import _masks, _rigl

__all__ = [
  'GROWTH_MODES',
  'FreeTicketsState',
  'SupTicketsState',
  'ensemble_predict',
  'free_tickets',
  'free_tickets_members',
  'free_tickets_schedule',
  'sup_tickets',
  'sup_tickets_schedule',
]

GROWTH_MODES = ('gradient', 'random')


def _is_masked(x: Any) -> bool:
  return isinstance(x, optax.MaskedNode)


def _scalar(x: Any) -> jax.Array:
  """The one array in ``x`` (`nnx.Optimizer` wraps state scalars)."""
  (value,) = jax.tree.leaves(x)
  return value


def _find(opt_state: Any, cls: type) -> Any:
  """The outermost ``cls`` instance inside a (nested) optimizer state."""
  for node in jax.tree.leaves(opt_state, is_leaf=lambda n: isinstance(n, cls)):
    if isinstance(node, cls):
      return node
  raise ValueError(
    f'`opt_state` must contain a {cls.__name__}, found none; build the '
    f'optimizer with `{cls.__name__[: -len("State")].lower()}`.'
  )


def _accumulator_dtype(dtype: Any) -> Any:
  """float32 for floating parameters narrower than float32 (a bfloat16
  running mean stops moving after a few tickets), else the dtype."""
  dtype = jnp.dtype(dtype)
  if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
    return jnp.dtype(jnp.float32)
  return dtype


def _window_starts(total: int, exploration: int, num: int) -> list[int]:
  """``[s_0, ..., s_M]``: ticket ``m`` trains in ``[s_m, s_{m+1})``."""
  span = total - exploration
  return [exploration + m * span // num for m in range(num + 1)]


def _check_common(
  sparsity, distribution, update_every, drop_fraction, schedule, large, growth
):
  v.check_in_range('sparsity', sparsity, 0.0, 1.0)
  v.check_choice('distribution', distribution, _masks.DISTRIBUTIONS)
  v.check_int('update_every', update_every, minimum=1)
  v.check_in_range(
    'drop_fraction', drop_fraction, 0.0, 1.0, high_inclusive=True
  )
  v.check_choice(
    'drop_fraction_schedule', schedule, _rigl.DROP_FRACTION_SCHEDULES
  )
  v.check_in_range('large_drop_fraction', large, 0.0, 1.0, high_inclusive=True)
  v.check_choice('growth', growth, GROWTH_MODES)


def _explorer(
  inner,
  *,
  sparsity,
  distribution,
  mask,
  keep_dense,
  key,
  growth,
  schedule_fn,
):
  """The step-first dynamic sparse transform both methods train with."""
  return _rigl._sparse_wrapper(
    inner,
    sparsity=sparsity,
    distribution=distribution,
    mask=mask,
    keep_dense=keep_dense,
    key=key,
    grow=growth,
    step_first=True,
    schedule_fn=schedule_fn,
  )


# ----------------------------------------------------------------- FreeTickets


class FreeTicketsState(NamedTuple):
  """State of `free_tickets`.

  Attributes:
    count: steps taken, int32.
    n_stored: tickets stored so far, int32, at most ``num_tickets - 1``:
      the last ticket is the trained parameters themselves
      (`free_tickets_members` adds them).
    tickets: the finished tickets, leaves of shape ``(num_tickets - 1,
      *param.shape)`` in the parameters' dtype (masked copies).
    sparse_state: the `SparseState` of the dynamic sparse training (masks,
      key, the inner optimizer's state).
  """

  count: jax.Array
  n_stored: jax.Array
  tickets: Any
  sparse_state: _rigl.SparseState


def free_tickets_schedule(
  init_value: float,
  *,
  total_steps: int,
  num_tickets: int = 3,
  exploration_steps: int | None = None,
  ticket_values: Sequence[float] | None = None,
) -> optax.Schedule:
  """The learning-rate schedule of the EDST reference (``main_EDST.py``).

  ``init_value`` for the exploration phase ``[0, E)``; then in each
  ticket's window ``[s_m, s_{m+1})`` (`free_tickets` lays them out) the
  first value of ``ticket_values`` for the first ``ceil(L_m / 2)`` steps
  and the second for the rest: the rate restarts at every re-exploration.

  Args:
    init_value: the exploration rate (the reference's ``--lr`` 0.1).
    total_steps: the training length, as in `free_tickets`.
    num_tickets: as in `free_tickets`.
    exploration_steps: as in `free_tickets` (None: ``total_steps // 3``).
    ticket_values: the two rates of each window; None: ``init_value / 10``
      and ``init_value / 100``, the reference's hard-coded 0.01 and 0.001
      at its rate 0.1.

  Returns:
    An `optax.Schedule`.

  Example:
    >>> from optax_zoo.sparsity import free_tickets_schedule
    >>> lr = free_tickets_schedule(0.1, total_steps=12, num_tickets=2,
    ...                            exploration_steps=4)
    >>> [round(float(lr(t)), 4) for t in range(12)]
    [0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.01, 0.01, 0.001, 0.001]
  """
  v.check_positive('init_value', init_value)
  exploration = _check_layout(total_steps, num_tickets, exploration_steps)
  if ticket_values is None:
    ticket_values = (init_value / 10, init_value / 100)
  if len(ticket_values) != 2:
    raise ValueError(
      f'`ticket_values` must hold two rates, got {ticket_values!r}.'
    )
  for value in ticket_values:
    v.check_positive('ticket_values', value)
  starts = _window_starts(total_steps, exploration, num_tickets)
  bounds, values = [], [init_value]
  for a, b in itertools.pairwise(starts):
    bounds += [a, a + math.ceil((b - a) / 2)]
    values += list(ticket_values)
  bounds = jnp.asarray(bounds, jnp.int32)
  values = jnp.asarray(values, jnp.float32)

  def schedule(count):
    return values[jnp.searchsorted(bounds, count, side='right')]

  return schedule


def _check_layout(total_steps, num_tickets, exploration_steps) -> int:
  v.check_int('total_steps', total_steps, minimum=1)
  v.check_int('num_tickets', num_tickets, minimum=1, maximum=total_steps)
  if exploration_steps is None:
    exploration_steps = total_steps // 3
  v.check_int(
    'exploration_steps',
    exploration_steps,
    minimum=0,
    maximum=total_steps - num_tickets,
  )
  return int(exploration_steps)


def free_tickets(
  inner: optax.GradientTransformation,
  *,
  sparsity: float,
  total_steps: int,
  num_tickets: int = 3,
  exploration_steps: int | None = None,
  distribution: str = 'erk',
  update_every: int = 100,
  drop_fraction: jax.typing.ArrayLike = 0.5,
  drop_fraction_schedule: str = 'constant',
  large_drop_fraction: jax.typing.ArrayLike = 0.8,
  growth: str = 'gradient',
  mask: Any | Callable[[optax.Params], Any] | None = None,
  keep_dense: Any | Callable[[optax.Params], Any] | None = None,
  key: Any = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""FreeTickets (Liu et al. 2022): an ensemble from one sparse run (EDST).

  Efficient Dynamic Sparse Training ensembles: dynamic sparse training
  (masks beside the parameters as in `rigl`, ``sparsity`` spread by
  ``distribution``) explores for ``E = exploration_steps``; the rest of
  training is split into ``M = num_tickets`` windows ``[s_m, s_{m+1})``,
  :math:`s_m = E + \lfloor m (T - E) / M \rfloor`. The weights at the
  end of window ``m`` are ticket ``m``; the first step of the next window
  re-explores globally, every masked layer at once, with the large drop
  fraction ``q = large_drop_fraction``, so that the next ticket is a
  different subnetwork. `free_tickets_members` stacks the ``M`` tickets
  and `ensemble_predict` averages their softmax outputs. Pair ``inner``
  with `free_tickets_schedule`, whose rate restarts at every
  re-exploration, to reproduce the paper's run.

  Throughout training, step ``t`` with ``(t + 1) % update_every == 0`` is
  also a mask update with fraction ``alpha = drop_fraction`` (the
  reference counts its steps from 1); a re-exploration replaces a regular
  update that falls on the same step. As the reference's ``Masking.step``,
  a mask update first takes the ``inner`` step on the masked gradient,
  then in each masked layer drops the ``k = floor(f n_active)`` active
  weights of smallest stepped magnitude and grows the ``k`` connections
  of largest dense-gradient magnitude (``growth='gradient'``, the
  reference's ``--growth gradient``; 'random': uniform) among the rest,
  with `drop_and_grow`:

  .. math::
    \theta_{t+1} = M_{t+1} \odot (\theta_t + u_t), \qquad
    u_t = \text{inner}(M_t \odot g_t),

  with :math:`M_{t+1}` from :math:`|\theta_t + u_t|` and :math:`|g_t|`
  where ``t`` is a mask update (:math:`M_{t+1} = M_t` elsewhere) and
  ``f = q`` at :math:`t \in \{s_1, \dots, s_{M-1}\}`, ``alpha``
  otherwise.

  Grown connections start at zero weight with their parameter-shaped
  inner state (momentum, Adam's moments) zeroed, as `rigl`'s
  (``_reset_moments``). The reference never resets momentum: it masks the
  weights, not the gradients, so SGD's buffer at a pruned weight keeps
  integrating the dense gradient and a regrown weight starts with it.
  Here ``inner`` sees only masked gradients (the contract of every
  sparse wrapper in this package, and the RigL reference's), so a pruned
  weight's moment is a stale remnant, not that history; zeroing it is
  the consistent choice, and the one Sup-tickets' reference makes (it
  masks the momentum buffer after every step).

  The reference passes its constant ``--death-rate`` to every regular
  update (``truncate_weights(self.args.death_rate)``), so the cosine decay
  it computes (``death_rate_decay``) has no effect; the default
  ``drop_fraction_schedule='constant'`` follows what it does.
  ``'cosine'`` anneals ``alpha`` to 0 at ``total_steps`` as `rigl` does.

  Tickets are the ``params`` handed to the first update of the next
  window (the weights training reached, as `optax_zoo.fge`'s snapshots);
  the last is the trained parameters after the last step. The state adds
  ``M - 1`` parameter copies.

  Args:
    inner: the optimizer of the active weights (SGD with momentum and
      `free_tickets_schedule` in the paper).
    sparsity: the fraction of zeros over the masked leaves, in [0, 1).
    total_steps: the training length ``T``.
    num_tickets: ``M``, the ensemble size, in [1, T].
    exploration_steps: ``E``, in [0, T - M]; None: ``T // 3`` (the
      reference's 150 of 450 epochs).
    distribution: 'uniform', 'erdos_renyi' or 'erk'.
    update_every: steps between regular mask updates, >= 1 (the
      reference's ``--update-frequency``).
    drop_fraction: ``alpha``, the regular updates' fraction, in [0, 1]
      (the reference's ``--death-rate`` 0.5).
    drop_fraction_schedule: 'constant' (the reference) or 'cosine'.
    large_drop_fraction: ``q``, the re-explorations' fraction, in [0, 1]
      (``--large-death-rate`` 0.8).
    growth: 'gradient' or 'random'.
    mask: the leaves to sparsify, as in `rigl`.
    keep_dense: masked leaves kept dense, as in `rigl`.
    key: an int seed or PRNG key for the masks and tie-breaking noise.

  Returns:
    A `optax.GradientTransformationExtraArgs` with state
    `FreeTicketsState`.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from optax_zoo.sparsity import (
    ...   ensemble_predict, free_tickets, free_tickets_members)
    >>> tx = free_tickets(optax.sgd(0.1), sparsity=0.5, total_steps=32,
    ...                   num_tickets=3, exploration_steps=6,
    ...                   update_every=5)
    >>> params = {'w': jnp.ones((4, 3)), 'b': jnp.zeros(3)}
    >>> state = tx.init(params)
    >>> x = jnp.linspace(-1.0, 1.0, 8).reshape(2, 4)
    >>> loss = lambda p: jnp.sum((x @ p['w'] + p['b'] - 1.0) ** 2)
    >>> step = jax.jit(tx.update)
    >>> for _ in range(32):
    ...   updates, state = step(jax.grad(loss)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> members, valid = free_tickets_members(state, params)
    >>> members['w'].shape, [int((m != 0).sum()) for m in members['w']]
    ((3, 4, 3), [6, 6, 6])
    >>> apply_fn = lambda p, x: x @ p['w'] + p['b']
    >>> ensemble_predict(apply_fn, members, x).shape
    (2, 3)

  References:
    Liu et al., `Deep Ensembling with No Overhead for either Training or
    Testing: The All-Round Blessings of Dynamic Sparsity
    <https://arxiv.org/abs/2106.14568>`_, ICLR 2022; VITA-Group/FreeTickets
    (``main_EDST.py``, ``sparselearning/core.py`` ``Masking``).

  Deviations: the re-exploration is the first step of the next window,
  after its ``inner`` step (the reference re-explores right after the
  window's last step, one step earlier); a ticket is the window's last
  weights (the reference keeps the window's best validation checkpoint);
  ``k = floor(f n_active)`` with ties to the lower index (reference:
  ``ceil(f n_active)`` and a magnitude threshold that drops every tie);
  a weight dropped and grown back in one update keeps its value (the
  reference zeroes it in between with ``apply_mask``); grown moments are
  zeroed (above); counted in steps, not epochs.
  """
  exploration = _check_layout(total_steps, num_tickets, exploration_steps)
  _check_common(
    sparsity,
    distribution,
    update_every,
    drop_fraction,
    drop_fraction_schedule,
    large_drop_fraction,
    growth,
  )
  starts = _window_starts(total_steps, exploration, num_tickets)
  explore_at = jnp.asarray(starts[1:-1], jnp.int32)

  def schedule_fn(count):
    explore = jnp.any(count == explore_at)
    regular = (count + 1) % update_every == 0
    fraction = _rigl.drop_fraction_at(
      count, drop_fraction, total_steps, drop_fraction_schedule
    )
    large = jnp.asarray(large_drop_fraction, jnp.float32)
    return explore | regular, jnp.where(explore, large, fraction)

  sparse = _explorer(
    inner,
    sparsity=sparsity,
    distribution=distribution,
    mask=mask,
    keep_dense=keep_dense,
    key=key,
    growth=growth,
    schedule_fn=schedule_fn,
  )

  def init_fn(params):
    return FreeTicketsState(
      count=jnp.zeros([], jnp.int32),
      n_stored=jnp.zeros([], jnp.int32),
      tickets=jax.tree.map(
        lambda p: jnp.zeros((num_tickets - 1, *jnp.shape(p)), p.dtype),
        params,
      ),
      sparse_state=sparse.init(params),
    )

  def update_fn(updates, state, params=None, **extra):
    if params is None:
      raise ValueError('`params` must be given: sparse training masks them.')
    new_updates, sparse_state = sparse.update(
      updates, state.sparse_state, params, **extra
    )
    due = jnp.any(state.count == explore_at)
    slot = jnp.minimum(state.n_stored, max(num_tickets - 2, 0))
    tickets = jax.tree.map(
      lambda t, p: jnp.where(due, t.at[slot].set(p.astype(t.dtype)), t),
      state.tickets,
      params,
    )
    return new_updates, FreeTicketsState(
      count=optax.safe_int32_increment(state.count),
      n_stored=state.n_stored + due.astype(jnp.int32),
      tickets=tickets,
      sparse_state=sparse_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def free_tickets_members(opt_state: Any, params: Any) -> tuple[Any, jax.Array]:
  """The `free_tickets` ensemble: the stored tickets and the current one.

  Args:
    opt_state: a state holding a `FreeTicketsState` (the outermost is
      used).
    params: the trained parameters: the last ticket (or, before the last
      window ends, the one in training).

  Returns:
    ``(members, valid)``: a tree like ``params`` with leaves of shape
    ``(num_tickets, *param.shape)``, member ``n_stored`` being ``params``,
    and a bool ``(num_tickets,)`` array, True for the tickets finished or
    in training (all of them after ``total_steps``); pass it to
    `ensemble_predict`. A part of ``params`` an `optax.masked` branch does
    not train is the same in every member.
  """
  state = _find(opt_state, FreeTicketsState)
  n = _scalar(state.n_stored)
  tickets = tree_utils.unwrap(state.tickets)
  stored = jax.tree.leaves(tickets)
  size = stored[0].shape[0] + 1 if stored else 1

  def member(t, p):
    if _is_masked(t):
      return jnp.broadcast_to(p, (size, *jnp.shape(p)))
    p = jnp.asarray(p, t.dtype)
    return jnp.concatenate([t, p[None]]).at[n].set(p)

  members = jax.tree.map(
    member, tickets, tree_utils.unwrap(params), is_leaf=_is_masked
  )
  return members, jnp.arange(size) <= n


def ensemble_predict(
  apply_fn: Callable[..., jax.Array],
  members: Any,
  *args: Any,
  valid: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""The ensemble's prediction: the mean of the members' softmax outputs.

  .. math::
    p(y \mid x) = \frac{1}{M} \sum_{m=1}^{M}
    \operatorname{softmax}(f(\theta_m, x)),

  probabilities averaged, not logits, as ``ensemble_freetickets.py``
  (computed in float32, one member at a time with `jax.lax.map`).

  Args:
    apply_fn: ``apply_fn(params, *args) -> logits`` (classes on the last
      axis).
    members: parameter trees stacked on a leading axis (from
      `free_tickets_members`, or any ensemble).
    *args: the inputs, passed to every member.
    valid: optional bool ``(M,)``: average only these members.

  Returns:
    The mean probabilities, shaped like one member's logits.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo.sparsity import ensemble_predict
    >>> members = jnp.array([[0.0, 0.0], [2.0, 0.0]])  # two members
    >>> ensemble_predict(lambda w, x: w * x, members, 1.0).round(4)
    Array([0.6904, 0.3096], dtype=float32)
  """
  if not callable(apply_fn):
    raise ValueError(f'`apply_fn` must be callable, got {apply_fn!r}.')
  probs = jax.lax.map(
    lambda m: jax.nn.softmax(jnp.asarray(apply_fn(m, *args), jnp.float32)),
    members,
  )
  if valid is None:
    return jnp.mean(probs, axis=0)
  w = jnp.asarray(valid, jnp.float32)
  return jnp.tensordot(w / jnp.sum(w), probs, axes=1)


# ----------------------------------------------------------------- Sup-tickets


def _prune_global(leaves, prunable, budget):
  """``leaves`` with all but the ``budget`` entries of largest magnitude over
  the ``prunable`` leaves zeroed (ties to the lower flat index); the other
  leaves as they are."""
  if not leaves:
    return []
  score = jnp.concatenate(
    [jnp.abs(x.astype(jnp.float32)).ravel() for x in leaves]
  )
  eligible = jnp.concatenate(
    [
      jnp.broadcast_to(pr, jnp.shape(x)).ravel()
      for x, pr in zip(leaves, prunable, strict=True)
    ]
  )
  keep = _rigl._top_k(score, eligible, budget) | ~eligible
  out, start = [], 0
  for x in leaves:
    k = keep[start : start + x.size].reshape(x.shape)
    out.append(jnp.where(k, x, jnp.zeros((), x.dtype)))
    start += x.size
  return out


def _superpose(old, new, factor, prunable, budget):
  """``prune((1 - factor) old + factor new)`` leaf lists, in ``old``'s dtype."""
  mixed = [
    (1 - factor) * o + factor * n.astype(o.dtype)
    for o, n in zip(old, new, strict=True)
  ]
  return _prune_global(mixed, prunable, budget)


class SupTicketsState(NamedTuple):
  """State of `sup_tickets`.

  Attributes:
    count: steps taken, int32.
    n_superposed: models averaged into ``superposed``, int32: 0 before
      pre-training ends, then 1 (the pre-trained model) plus one per cycle.
    pending: bool, whether the parameters handed to the next update end a
      cycle (they reach the state then; ``eval_params`` folds them in).
    factor: float32, the weight the pending ticket gets.
    superposed: the superposed, pruned ticket (float32 for parameters
      narrower than float32).
    prunable: a bool scalar per leaf: whether the global pruning ranks it.
    budget: int32, the weights the superposed ticket keeps over the
      prunable leaves (as many as the training masks hold).
    sparse_state: the `SparseState` of the dynamic sparse training.
  """

  count: jax.Array
  n_superposed: jax.Array
  pending: jax.Array
  factor: jax.Array
  superposed: Any
  prunable: Any
  budget: jax.Array
  sparse_state: _rigl.SparseState

  def eval_params(self, params: Any) -> Any:
    """The superposed ticket (a pending one folded in), else ``params``.

    ``params`` until the first cycle ends; the BatchNorm statistics a
    training loop recomputes for these weights are the reference's
    ``--update_bn``.
    """
    plain = tree_utils.unwrap(params)
    leaves, treedef = jax.tree.flatten(plain)
    try:
      sup = treedef.flatten_up_to(tree_utils.unwrap(self.superposed))
      prunable = treedef.flatten_up_to(tree_utils.unwrap(self.prunable))
    except ValueError as e:
      raise ValueError(
        '`params` must have the structure of the parameters the optimizer '
        f'was initialized with; {e}'
      ) from None
    idx = [i for i, s in enumerate(sup) if not _is_masked(s)]
    for i in idx:
      if jnp.shape(sup[i]) != jnp.shape(leaves[i]):
        raise ValueError(
          f'`params` has a leaf of shape {jnp.shape(leaves[i])} where the '
          f'state holds {jnp.shape(sup[i])}.'
        )
    pending = _scalar(self.pending)
    old = [sup[i] for i in idx]
    folded = jax.lax.cond(
      pending,
      lambda: _superpose(
        old,
        [leaves[i] for i in idx],
        _scalar(self.factor),
        [prunable[i] for i in idx],
        _scalar(self.budget),
      ),
      lambda: old,
    )
    use_params = ~pending & (_scalar(self.n_superposed) < 2)
    out = list(leaves)
    for j, i in enumerate(idx):
      out[i] = jnp.where(use_params, leaves[i], folded[j]).astype(
        leaves[i].dtype
      )
    return jax.tree.unflatten(jax.tree.structure(params), out)


def sup_tickets_schedule(
  init_value: float,
  *,
  total_steps: int,
  cycle_steps: int,
  num_cycles: int = 3,
  cycle_end_value: float | None = None,
  cycle_mid_value: float | None = None,
) -> optax.Schedule:
  r"""The learning-rate schedule of the Sup-tickets reference.

  Pre-training ``[0, P)``, ``P = total_steps - num_cycles * cycle_steps``,
  decays ``init_value`` by 10 at ``floor(P / 2)`` and again at
  ``floor(3 P / 4)`` (its ``MultiStepLR``); each cycle then runs the
  reference's ``cyclic_learning_rate``, a triangle from ``a =
  cycle_end_value`` to ``b = cycle_mid_value`` at mid-cycle and back, with
  :math:`u = ((t - P) \bmod K) / K`:

  .. math::
    \eta_t = a (1 - 2u) + 2 b u \; (u < 1/2), \qquad
    a (2u - 1) + b (2 - 2u) \; (u \ge 1/2).

  The reference's help calls its ``--lr_1`` (``a``) the maximum, but its
  README runs ``--lr_1 0.001 --lr_2 0.005``: the rate rises to ``b``
  mid-cycle and tickets are taken at the low ``a`` ("save current ticket
  at lowest LR"), the default here.

  Args:
    init_value: the pre-training rate (the reference's ``--lr`` 0.1).
    total_steps: as in `sup_tickets`.
    cycle_steps: as in `sup_tickets`.
    num_cycles: as in `sup_tickets`.
    cycle_end_value: ``a``; None: ``init_value / 100`` (0.001 at 0.1).
    cycle_mid_value: ``b``; None: ``init_value / 20`` (0.005 at 0.1).

  Returns:
    An `optax.Schedule`.

  Example:
    >>> from optax_zoo.sparsity import sup_tickets_schedule
    >>> lr = sup_tickets_schedule(0.1, total_steps=12, cycle_steps=4,
    ...                           num_cycles=1)
    >>> [round(float(lr(t)), 4) for t in range(12)]
    [0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.001, 0.003, 0.005, 0.003]
  """
  v.check_positive('init_value', init_value)
  pretrain = _check_cycles(total_steps, cycle_steps, num_cycles)
  a = init_value / 100 if cycle_end_value is None else cycle_end_value
  b = init_value / 20 if cycle_mid_value is None else cycle_mid_value
  v.check_positive('cycle_end_value', a)
  v.check_positive('cycle_mid_value', b)

  def schedule(count):
    t = jnp.asarray(count, jnp.int32)
    decays = (t >= pretrain // 2).astype(jnp.float32) + (
      t >= (3 * pretrain) // 4
    ).astype(jnp.float32)
    pre = init_value * 0.1**decays
    u = ((t - pretrain) % cycle_steps).astype(jnp.float32) / cycle_steps
    tri = jnp.where(
      u < 0.5, a * (1 - 2 * u) + b * 2 * u, a * (2 * u - 1) + b * (2 - 2 * u)
    )
    return jnp.where(t < pretrain, pre, tri)

  return schedule


def _check_cycles(total_steps, cycle_steps, num_cycles) -> int:
  v.check_int('total_steps', total_steps, minimum=2)
  v.check_int('cycle_steps', cycle_steps, minimum=1, maximum=total_steps - 1)
  v.check_int(
    'num_cycles',
    num_cycles,
    minimum=1,
    maximum=(total_steps - 1) // cycle_steps,
  )
  return int(total_steps - num_cycles * cycle_steps)


def sup_tickets(
  inner: optax.GradientTransformation,
  *,
  sparsity: float,
  total_steps: int,
  cycle_steps: int,
  num_cycles: int = 3,
  distribution: str = 'erk',
  update_every: int = 100,
  drop_fraction: jax.typing.ArrayLike = 0.5,
  drop_fraction_schedule: str = 'constant',
  large_drop_fraction: jax.typing.ArrayLike = 0.5,
  superposition_factor: jax.typing.ArrayLike | None = None,
  growth: str = 'gradient',
  mask: Any | Callable[[optax.Params], Any] | None = None,
  keep_dense: Any | Callable[[optax.Params], Any] | None = None,
  key: Any = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""Sup-tickets (Yin et al. 2022): cheap tickets superposed into one.

  Dynamic sparse pre-training for ``P = total_steps - C K`` steps (masks
  as in `rigl`, regular mask updates at ``(t + 1) % update_every == 0``
  with fraction ``alpha``, step-first as `free_tickets`), then ``C =
  num_cycles`` cycles of ``K = cycle_steps`` steps (pair ``inner`` with
  `sup_tickets_schedule`'s cyclic rate) without regular mask updates,
  each starting with a re-exploration of fraction ``q =
  large_drop_fraction``. The pre-trained weights :math:`S_0 = \theta_P`
  and the weights :math:`T_c = \theta_{P + cK}` at the end of each cycle
  are superposed by a running average, pruned back to the target density
  every time, as the reference's ``CAA_average``:

  .. math::
    S_c = \operatorname{prune}\big((1 - \lambda_c) S_{c-1}
    + \lambda_c T_c\big), \qquad \lambda_c = \tfrac{1}{c + 1},

  (``superposition_factor=lambda`` instead: the reference's ``CIMA``,
  a constant ``lambda``). ``prune`` keeps the weights of largest
  magnitude over all masked layers together (global, as the reference's
  ``torch.topk`` over the concatenated layers), as many as the training
  masks hold, so the superposed ticket has exactly the target density
  overall; its per-layer densities are the global ranking's, not
  ``distribution``'s. Dense leaves (biases) are averaged, not pruned.
  Training continues from the current weights, not from :math:`S_c`.

  The state's ``eval_params`` returns the latest :math:`S_c`, folding in
  a ticket that ends at the last step (so `optax_zoo.eval_params` and the
  training loop evaluate the superposed ticket, with BatchNorm statistics
  recomputed, the reference's ``--update_bn``), and ``params`` until
  the first cycle ends. The state adds one parameter copy.

  Moments of regrown weights: zeroed, as `rigl`. The reference masks SGD's
  momentum buffer after every step (``apply_mask``), so a pruned weight's
  momentum is zero and a regrown one starts from it: the same.

  Args:
    inner: the optimizer of the active weights.
    sparsity: the fraction of zeros over the masked leaves, in [0, 1).
    total_steps: ``T``, >= 2.
    cycle_steps: ``K``, in [1, T - 1].
    num_cycles: ``C``, >= 1, with ``C K < T`` (pre-training takes at
      least one step).
    distribution: 'uniform', 'erdos_renyi' or 'erk'.
    update_every: steps between pre-training mask updates, >= 1.
    drop_fraction: ``alpha``, in [0, 1] (the reference's
      ``--prune-rate`` 0.5).
    drop_fraction_schedule: 'constant' (the reference's ``--decay-schedule
      constant``) or 'cosine' (annealed to 0 at ``P``).
    large_drop_fraction: ``q``, in [0, 1] (``--large-death-rate`` 0.5).
    superposition_factor: None (CAA, the README's runs) or the constant
      CIMA factor in (0, 1].
    growth: 'gradient' (the README's RigL runs) or 'random' (SET).
    mask: the leaves to sparsify, as in `rigl`.
    keep_dense: masked leaves kept dense (and out of the pruning).
    key: an int seed or PRNG key.

  Returns:
    A `optax.GradientTransformationExtraArgs` with state
    `SupTicketsState`.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_zoo
    >>> from optax_zoo.sparsity import sup_tickets
    >>> tx = sup_tickets(optax.sgd(0.1), sparsity=0.5, total_steps=20,
    ...                  cycle_steps=4, num_cycles=2, update_every=5)
    >>> params = {'w': jnp.ones((4, 3)), 'b': jnp.zeros(3)}
    >>> state = tx.init(params)
    >>> x = jnp.linspace(-1.0, 1.0, 8).reshape(2, 4)
    >>> loss = lambda p: jnp.sum((x @ p['w'] + p['b'] - 1.0) ** 2)
    >>> step = jax.jit(tx.update)
    >>> for _ in range(20):
    ...   updates, state = step(jax.grad(loss)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> superposed = optax_zoo.eval_params(state, params)
    >>> int((superposed['w'] != 0).sum()), int(state.n_superposed)
    (6, 2)

  References:
    Yin et al., `Superposing Many Tickets into One: A Performance Booster
    for Sparse Neural Network Training <https://arxiv.org/abs/2205.15322>`_,
    UAI 2022; luuyin/Sup-tickets (``CIFAR/main_suptickets.py``,
    ``CIFAR/sparselearning/core.py``).

  Deviations: a cycle's re-exploration is its first step, after the
  ``inner`` step (the reference re-explores before it, from the previous
  step's gradient); the pruning keeps exactly the masks' count, ties to
  the lower index (reference: ``int(N d)`` and every weight tied at the
  threshold); ``k = floor(f n_active)`` (reference ``ceil``); BatchNorm
  statistics are recomputed, not averaged with the weights; only the
  README's DST path (no GraNet gradual pruning); counted in steps, not
  epochs.
  """
  pretrain = _check_cycles(total_steps, cycle_steps, num_cycles)
  _check_common(
    sparsity,
    distribution,
    update_every,
    drop_fraction,
    drop_fraction_schedule,
    large_drop_fraction,
    growth,
  )
  if superposition_factor is not None:
    v.check_in_range(
      'superposition_factor',
      superposition_factor,
      0.0,
      1.0,
      low_inclusive=False,
      high_inclusive=True,
    )

  def schedule_fn(count):
    in_cycles = (count >= pretrain) & (count < total_steps)
    explore = in_cycles & ((count - pretrain) % cycle_steps == 0)
    regular = (count < pretrain) & ((count + 1) % update_every == 0)
    fraction = _rigl.drop_fraction_at(
      count, drop_fraction, pretrain, drop_fraction_schedule
    )
    large = jnp.asarray(large_drop_fraction, jnp.float32)
    return explore | regular, jnp.where(explore, large, fraction)

  sparse = _explorer(
    inner,
    sparsity=sparsity,
    distribution=distribution,
    mask=mask,
    keep_dense=keep_dense,
    key=key,
    growth=growth,
    schedule_fn=schedule_fn,
  )

  def next_factor(n):
    if superposition_factor is None:
      return 1.0 / (n + 1).astype(jnp.float32)
    return jnp.asarray(superposition_factor, jnp.float32)

  def init_fn(params):
    sparse_state = sparse.init(params)
    treedef = jax.tree.structure(params)
    flags = _masks.sparse_leaves(params, mask, keep_dense)
    masks = treedef.flatten_up_to(sparse_state.masks)
    budget = sum(
      jnp.sum(m, dtype=jnp.int32)
      for m, f in zip(masks, flags, strict=True)
      if f
    )
    n = jnp.zeros([], jnp.int32)
    return SupTicketsState(
      count=jnp.zeros([], jnp.int32),
      n_superposed=n,
      pending=jnp.zeros([], bool),
      factor=next_factor(n),
      superposed=jax.tree.map(
        lambda p: jnp.zeros(jnp.shape(p), _accumulator_dtype(p.dtype)),
        params,
      ),
      prunable=treedef.unflatten([jnp.asarray(f) for f in flags]),
      budget=jnp.asarray(budget, jnp.int32),
      sparse_state=sparse_state,
    )

  def update_fn(updates, state, params=None, **extra):
    if params is None:
      raise ValueError('`params` must be given: sparse training masks them.')
    new_updates, sparse_state = sparse.update(
      updates, state.sparse_state, params, **extra
    )
    leaves, treedef = jax.tree.flatten(params)
    old = treedef.flatten_up_to(state.superposed)
    prunable = treedef.flatten_up_to(state.prunable)
    folded = jax.lax.cond(
      state.pending,
      lambda: _superpose(old, leaves, state.factor, prunable, state.budget),
      lambda: old,
    )
    start = state.count == pretrain
    superposed = [
      jnp.where(start, p.astype(s.dtype), s)
      for p, s in zip(leaves, folded, strict=True)
    ]
    n = jnp.where(
      start, 1, state.n_superposed + state.pending.astype(jnp.int32)
    )
    after = state.count + 1
    pending = (
      (after >= pretrain + cycle_steps)
      & (after <= total_steps)
      & ((after - pretrain) % cycle_steps == 0)
    )
    return new_updates, SupTicketsState(
      count=optax.safe_int32_increment(state.count),
      n_superposed=n.astype(jnp.int32),
      pending=pending,
      factor=next_factor(n),
      superposed=treedef.unflatten(superposed),
      prunable=state.prunable,
      budget=state.budget,
      sparse_state=sparse_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
