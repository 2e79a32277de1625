"""Dynamic sparse training: RigL, SET and a static sparse baseline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v
from optax_zoo.sparsity import _masks

__all__ = [
  'DROP_FRACTION_SCHEDULES',
  'SparseState',
  'drop_and_grow',
  'drop_fraction_at',
  'rigl',
  'set_sparse',
  'static_sparse',
]

DROP_FRACTION_SCHEDULES = ('cosine', 'constant')
# The reference's tie-breaking noise on the drop scores.
_NOISE_STD = 1e-5


class SparseState(NamedTuple):
  """State of `rigl`, `set_sparse` and `static_sparse`.

  Attributes:
    count: steps taken (mask updates included), int32; a first step on
      parameters that are not zero off the mask does not count (the mask
      schedule starts at the first step on the sparse network).
    rng_key: the raw data (uint32, `jax.random.key_data`) of the key the
      next step splits.
    masks: a bool array per parameter leaf, True where the weight is
      active; all True for the dense leaves.
    inner_state: the state of the wrapped optimizer.
  """

  count: jax.Array
  rng_key: jax.Array
  masks: Any
  inner_state: Any


def drop_fraction_at(
  count: jax.typing.ArrayLike,
  drop_fraction: jax.typing.ArrayLike,
  end_step: jax.typing.ArrayLike,
  schedule: str = 'cosine',
) -> jax.Array:
  r"""The fraction of active weights replaced at mask update ``count``.

  ``'cosine'``: :math:`\frac{\alpha}{2}(1 + \cos(\pi \min(t, T_{end}) /
  T_{end}))`, as the reference's ``tf.train.cosine_decay``;
  ``'constant'``: :math:`\alpha`.
  """
  drop_fraction = jnp.asarray(drop_fraction, jnp.float32)
  if schedule == 'constant':
    return drop_fraction
  t = jnp.minimum(jnp.asarray(count, jnp.float32), end_step)
  return drop_fraction / 2 * (1 + jnp.cos(jnp.pi * t / end_step))


def _order_keys(score: jax.Array, eligible: jax.Array) -> jax.Array:
  """uint32 keys ordered as ``score`` among eligible entries, ineligible last.

  The float bits are mapped monotonically to uint32 (negative floats have
  their bits flipped, the others their sign bit set); ``-0.0`` counts as
  ``0.0``, a NaN score as below ``-inf`` (key 1) and an ineligible entry as
  below everything (key 0). Both those keys are NaN bit patterns, which no
  score keeps.
  """
  score = score.astype(jnp.float32)
  score = jnp.where(score == 0, jnp.zeros((), jnp.float32), score)
  bits = jax.lax.bitcast_convert_type(score, jnp.uint32)
  key = jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(1 << 31))
  key = jnp.where(jnp.isnan(score), jnp.uint32(1), key)
  return jnp.where(eligible, key, jnp.uint32(0))


def _top_k(score: jax.Array, eligible: jax.Array, k: jax.Array) -> jax.Array:
  """The ``k`` eligible entries of largest score, as a bool mask.

  ``k`` may be traced and must not exceed the eligible count. Ties go to the
  lower flat index and a NaN score ranks below every number, as the
  reference's ``top_k``. Exact without a sort: the ``k``-th largest key is
  built bit by bit from the top (32 counting passes over the entries;
  XLA:CPU's sort of a million float32 takes ~0.4 s, these passes ~20 ms).
  """
  key = _order_keys(score, eligible)
  k = jnp.asarray(k, jnp.int32)

  def set_bit(i, threshold):
    candidate = threshold | (jnp.uint32(1) << (31 - i).astype(jnp.uint32))
    enough = jnp.sum(key >= candidate, dtype=jnp.int32) >= k
    return jnp.where(enough, candidate, threshold)

  # The largest t with at least k keys >= t: the k-th largest key.
  threshold = jax.lax.fori_loop(0, 32, set_bit, jnp.uint32(0))
  above = key > threshold
  ties = key == threshold
  room = k - jnp.sum(above, dtype=jnp.int32)
  return above | (ties & (jnp.cumsum(ties, dtype=jnp.int32) <= room))


def drop_and_grow(
  mask: jax.Array,
  weight: jax.Array,
  grow_score: jax.Array,
  drop_fraction: jax.typing.ArrayLike,
  key: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """One layer's mask update: drop the weakest active weights, grow others.

  ``k = floor(drop_fraction * n_active)`` (in float32, as the reference).
  The ``n_active - k`` active weights of largest ``|weight| + noise``
  (noise ~ N(0, 1e-5^2) from ``key``, to break ties) stay; of the rest,
  just-dropped included, the ``k`` of largest ``grow_score`` become
  active. Ties go to the lower flat index (the reference's ``top_k``); a
  NaN score ranks lowest, so the number of active weights never changes.

  Args:
    mask: the layer's bool mask.
    weight: its weights.
    grow_score: the score that picks connections to grow (RigL: the dense
      gradient's magnitude; SET: uniform noise).
    drop_fraction: the fraction ``k / n_active``.
    key: the key of the tie-breaking noise.

  Returns:
    ``(new_mask, grown)``: the new mask, and where connections were grown
    that were not active before (to start from zero weight and state).
  """
  flat_mask = mask.reshape(-1)
  n_active = jnp.sum(flat_mask, dtype=jnp.int32)
  drop_fraction = jnp.asarray(drop_fraction, jnp.float32)
  n_drop = (n_active.astype(jnp.float32) * drop_fraction).astype(jnp.int32)
  noise = _NOISE_STD * jax.random.normal(key, flat_mask.shape, jnp.float32)
  drop_score = jnp.abs(weight.reshape(-1).astype(jnp.float32)) + noise
  kept = _top_k(drop_score, flat_mask, n_active - n_drop)
  grown = _top_k(grow_score.reshape(-1), ~kept, n_drop)
  new_mask = kept | grown
  return new_mask.reshape(mask.shape), (grown & ~flat_mask).reshape(mask.shape)


def _off_mask_zero(params: Any, masks: Any) -> jax.Array:
  """Whether every parameter is zero where its mask is False."""
  zero = jax.tree.map(
    lambda p, m: jnp.all(jnp.where(m, True, p == 0)), params, masks
  )
  checks = jax.tree.leaves(zero)
  return jnp.all(jnp.stack(checks)) if checks else jnp.ones((), bool)


def _reset_moments(state: Any, params: Any, grown: Any) -> Any:
  """``state`` with its parameter-shaped subtrees zeroed where ``grown``.

  A subtree is parameter-shaped when it has the structure and leaf shapes
  of ``params``: Adam's ``mu`` and ``nu``, a momentum trace, any inner
  optimizer's moments, found without knowing its state type.
  """
  target = jax.tree.structure(params)
  shapes = [jnp.shape(p) for p in jax.tree.leaves(params)]
  grown_leaves = jax.tree.leaves(grown)

  def reset(x, g):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
      return x
    return jnp.where(g, jnp.zeros((), x.dtype), x)

  def visit(node):
    leaves, treedef = jax.tree.flatten(node)
    if treedef == target and [jnp.shape(x) for x in leaves] == shapes:
      return treedef.unflatten(
        [reset(x, g) for x, g in zip(leaves, grown_leaves, strict=True)]
      )
    children, treedef = jax.tree.flatten(node, is_leaf=lambda x: x is not node)
    if len(children) == 1 and children[0] is node:  # a leaf
      return node
    return treedef.unflatten([visit(c) for c in children])

  return visit(state)


def _sparse_wrapper(
  inner: optax.GradientTransformation,
  *,
  sparsity: float,
  distribution: str,
  mask: Any,
  keep_dense: Any,
  key: Any,
  grow: str | None,
  update_every: Any = 1,
  drop_fraction: Any = 0.0,
  drop_fraction_schedule: str = 'cosine',
  end_fraction: Any = 1.0,
  total_steps: Any = 1,
  step_first: bool | None = None,
  schedule_fn: Callable[[jax.Array], tuple[Any, Any]] | None = None,
) -> optax.GradientTransformationExtraArgs:
  """The transform `rigl` (grow='gradient'), `set_sparse` (grow='random')
  and `static_sparse` (grow=None) share.

  ``step_first``: whether a mask update also takes the ``inner`` step and
  drops from the stepped weights (default: for random growth only, as the
  RigL authors' SET; the FreeTickets and Sup-tickets references step first
  with gradient growth too). ``schedule_fn(count) -> (is_update,
  fraction)`` replaces the ``update_every`` / ``end_fraction`` /
  ``drop_fraction`` schedule when given.
  """
  v.check_transform('inner', inner)
  v.check_in_range('sparsity', sparsity, 0.0, 1.0)
  v.check_choice('distribution', distribution, _masks.DISTRIBUTIONS)
  if grow is not None:
    v.check_int('update_every', update_every, minimum=1)
    v.check_in_range(
      'drop_fraction', drop_fraction, 0.0, 1.0, high_inclusive=True
    )
    v.check_choice(
      'drop_fraction_schedule', drop_fraction_schedule, DROP_FRACTION_SCHEDULES
    )
    v.check_in_range(
      'end_fraction',
      end_fraction,
      0.0,
      1.0,
      low_inclusive=False,
      high_inclusive=True,
    )
    v.check_int('total_steps', total_steps, minimum=1)
  base_key = v.as_key(key)
  impl = jax.random.key_impl(base_key)
  if step_first is None:
    step_first = grow != 'gradient'
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    mask_key, state_key = jax.random.split(base_key)
    masks = _masks.init_masks(
      mask_key,
      params,
      sparsity,
      distribution,
      mask=mask,
      keep_dense=keep_dense,
    )
    return SparseState(
      count=jnp.zeros([], jnp.int32),
      rng_key=jax.random.key_data(state_key),
      masks=masks,
      inner_state=inner.init(params),
    )

  def new_masks(masks, weights, grads, step_key, fraction, sparse):
    """Drop-and-grow in every masked leaf: the new masks and the grown."""
    leaves, treedef = jax.tree.flatten(weights)
    keys = jax.random.split(step_key, max(1, len(leaves)))
    out_masks, out_grown = [], []
    old = treedef.flatten_up_to(masks)
    grads = treedef.flatten_up_to(grads)
    for i, (m, w, g) in enumerate(zip(old, leaves, grads, strict=True)):
      if not sparse[i]:  # an all-True mask: nothing to drop or grow
        out_masks.append(m)
        out_grown.append(jnp.zeros(jnp.shape(m), bool))
        continue
      drop_key, grow_key = jax.random.split(keys[i])
      if grow == 'gradient':
        score = jnp.abs(g)
      else:
        score = jax.random.uniform(grow_key, jnp.shape(g), jnp.float32)
      m, g = drop_and_grow(m, w, score, fraction, drop_key)
      out_masks.append(m)
      out_grown.append(g)
    return treedef.unflatten(out_masks), treedef.unflatten(out_grown)

  def update_fn(updates, state, params=None, **extra):
    if params is None:
      raise ValueError('`params` must be given: sparse training masks them.')
    next_key, step_key = jax.random.split(
      jax.random.wrap_key_data(state.rng_key, impl=impl)
    )
    # Every step runs ``inner`` on the masked gradient; RigL's mask-update
    # steps then keep the old inner state and a zero step. Only the mask
    # computation sits under a `lax.cond`: a cond over the whole step makes
    # XLA copy the optimizer state through its branches on every step.
    masked = _masks.apply_masks(updates, state.masks)
    steps, inner_state = inner.update(
      masked, state.inner_state, params, **extra
    )
    steps = jax.tree.map(lambda u, p: u.astype(p.dtype), steps, params)
    masks = state.masks
    grown = jax.tree.map(lambda m: jnp.zeros(jnp.shape(m), bool), masks)
    unmasked = jnp.zeros((), bool)
    if grow is not None:
      sparse = _masks.sparse_leaves(params, mask, keep_dense)
      if schedule_fn is None:
        end_step = jnp.asarray(end_fraction, jnp.float32) * total_steps
        is_update = (state.count % update_every == 0) & (
          state.count.astype(jnp.float32) < end_step
        )
        fraction = drop_fraction_at(
          state.count, drop_fraction, end_step, drop_fraction_schedule
        )
      else:
        is_update, fraction = schedule_fn(state.count)
      # A mask update needs the gradient of the masked network. The first
      # ``params`` are often the dense initialization (the training loop's
      # and `nnx.Optimizer`'s), whose gradient is the dense network's: if a
      # mask update is due then, that step trains without counting, so the
      # schedule, and the update, start at the next step, whose parameters
      # the first update has masked. Later parameters are masked by the updates
      # themselves, so only count 0 is checked.
      unmasked = is_update & jax.lax.cond(
        state.count == 0,
        lambda: ~_off_mask_zero(params, masks),
        lambda: jnp.zeros((), bool),
      )
      is_update = is_update & ~unmasked
      if not step_first:
        # RigL skips the inner step; ``g * 0`` keeps a non-finite gradient
        # visible in the update.
        steps = jax.tree.map(
          lambda u, g, p: jnp.where(is_update, (g * 0).astype(p.dtype), u),
          steps,
          updates,
          params,
        )
        inner_state = jax.tree.map(
          lambda new, old: jnp.where(is_update, old, new),
          inner_state,
          state.inner_state,
        )
        weights = params
      else:
        # SET steps first and updates the mask from the new weights, as the
        # reference's SparseSETOptimizerBase.apply_gradients does (and the
        # FreeTickets and Sup-tickets ``Masking.step``, growing by gradient).
        weights = jax.tree.map(
          lambda p, u, m: jnp.where(m, p + u, jnp.zeros((), p.dtype)),
          params,
          steps,
          masks,
        )
      masks, grown = jax.lax.cond(
        is_update,
        lambda: new_masks(masks, weights, updates, step_key, fraction, sparse),
        lambda: (masks, grown),
      )
      inner_state = _reset_moments(inner_state, params, grown)
    # Active weights take the step (a connection dropped and regrown in
    # one update keeps its weight); pruned and newly grown ones become 0.
    new_updates = jax.tree.map(
      lambda u, p, m, n: jnp.where(m & ~n, u, -p), steps, params, masks, grown
    )
    return new_updates, SparseState(
      count=jnp.where(
        unmasked, state.count, optax.safe_int32_increment(state.count)
      ),
      rng_key=jax.random.key_data(next_key),
      masks=masks,
      inner_state=inner_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def rigl(
  inner: optax.GradientTransformation,
  *,
  sparsity: float,
  total_steps: int,
  distribution: str = 'erk',
  update_every: int = 100,
  drop_fraction: jax.typing.ArrayLike = 0.3,
  drop_fraction_schedule: str = 'cosine',
  end_fraction: float = 0.75,
  mask: Any | Callable[[optax.Params], Any] | None = None,
  keep_dense: Any | Callable[[optax.Params], Any] | None = None,
  key: Any = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""Rigged Lottery sparse training (RigL; Evci et al. 2020).

  Trains a sparse network whose connectivity changes: the state holds a
  boolean mask per parameter, random at init with the per-layer
  densities of ``distribution`` (`sparsity_distribution`), and the
  returned updates keep the parameters exactly zero off the mask.
  Every ``update_every`` steps while ``t < end_fraction * total_steps``
  (from step 0) the step is a mask update instead of an ``inner`` step:
  in each masked layer the ``k = floor(f(t) n_active)`` active weights of
  smallest magnitude are dropped and the ``k`` connections of largest
  dense-gradient magnitude ``|g_t|`` are grown (`drop_and_grow`), with

  .. math::
    f(t) = \frac{\alpha}{2}\left(1 + \cos\frac{\pi t}{T_{end}}\right),
    \qquad T_{end} = \text{end\_fraction} \cdot \text{total\_steps}.

  Grown connections start at zero weight and every parameter-shaped leaf
  of the inner state (momentum, Adam's moments, any optimizer's) is zeroed
  there; a connection dropped and grown in the same update keeps its
  weight and state. On training steps ``inner`` sees the masked gradient
  ``M_t * g_t``, as the reference's masked weights give it:

  .. math::
    g_t = \nabla L(\theta_t \odot M_t), \qquad
    \theta_{t+1} = M_{t+1} \odot (\theta_t + u_t),

  where ``u_t = inner(M_t * g_t)`` on training steps and 0 on mask
  updates.

  The gradient ``update`` receives, taken at the masked parameters, is the
  dense gradient RigL grows with. Pass masked parameters from the start
  (`apply_masks` with ``state.masks``), or the first update zeroes them off
  the mask: that first step then trains without counting, since its
  gradient is the dense network's, and the schedule (with the mask update
  due at step 0) starts at the next.

  Non-finite gradients: on training steps a NaN or inf at an active (or
  dense) weight gives a non-finite update; on mask updates the update is
  ``0 * g`` there (NaN where ``g`` is not finite). Gradients at pruned
  weights are ignored, except that NaN scores rank last for growth.

  Args:
    inner: the optimizer of the active weights.
    sparsity: the overall fraction of zeros over the masked leaves, in
      [0, 1).
    total_steps: the training length ``T``.
    distribution: how sparsity is spread over layers: 'uniform',
      'erdos_renyi' or 'erk'.
    update_every: steps between mask updates (``Delta T``), >= 1.
    drop_fraction: ``alpha``, the fraction replaced at the first update,
      in [0, 1].
    drop_fraction_schedule: 'cosine' (above) or 'constant'.
    end_fraction: the last mask update comes before ``end_fraction * T``,
      in (0, 1].
    mask: the leaves to sparsify: a tree of bools over the parameters (or
      a prefix) or a function of them; None: leaves with ndim >= 2.
    keep_dense: masked leaves kept dense but counted in ``sparsity`` (same
      forms as ``mask``; the reference's first-layer option); None: none.
    key: an int seed or PRNG key for the masks and the tie-breaking noise.
      One transform gives every model it initializes the same masks: under
      `optax_zoo.training.train_seeds` all seeds share them (build one
      transform per seed, or derive ``key`` from each seed's parameters in
      ``init``, as ``experiments/sparsity`` does, for independent masks).

  Returns:
    A `optax.GradientTransformationExtraArgs` with state `SparseState`.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from optax_zoo.sparsity import apply_masks, rigl
    >>> tx = rigl(optax.sgd(0.1, momentum=0.9), sparsity=0.75,
    ...           total_steps=100, update_every=10)
    >>> params = {'w': jnp.ones((8, 8)), 'b': jnp.zeros(8)}
    >>> state = tx.init(params)
    >>> params = apply_masks(params, state.masks)
    >>> loss = lambda p: jnp.sum((p['w'] - 2.0) ** 2) + jnp.sum(p['b'] ** 2)
    >>> step = jax.jit(tx.update)
    >>> for _ in range(20):
    ...   updates, state = step(jax.grad(loss)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> int(jnp.sum(params['w'] != 0)), int(state.masks['w'].sum())
    (16, 16)

  References:
    Evci et al., `Rigging the Lottery: Making All Tickets Winners
    <https://arxiv.org/abs/1911.11134>`_, 2020; google-research/rigl
    (``SparseRigLOptimizerBase``).

  Deviations: only active weights compete to stay (the reference ranks
  pruned entries by their noise too, so an active weight below ~1e-5 can
  lose its place to a pruned one); the last update is the last multiple
  of ``update_every`` below ``end_fraction * T`` (the reference's
  ``<= end_step``, where the cosine fraction is 0 anyway); initial masks
  have ``round(density * size)`` ones (the reference
  ``size - floor(sparsity * size)``); grown weights start at zero (the
  reference's default ``grow_init``); masks are bool, one per leaf. Every
  call counts as a step: the reference does not advance its global step
  on a mask update, so it takes ``update_every`` training steps between
  updates where this takes ``update_every - 1``.
  """
  return _sparse_wrapper(
    inner,
    sparsity=sparsity,
    distribution=distribution,
    mask=mask,
    keep_dense=keep_dense,
    key=key,
    grow='gradient',
    update_every=update_every,
    drop_fraction=drop_fraction,
    drop_fraction_schedule=drop_fraction_schedule,
    end_fraction=end_fraction,
    total_steps=total_steps,
  )


def set_sparse(
  inner: optax.GradientTransformation,
  *,
  sparsity: float,
  total_steps: int,
  distribution: str = 'erk',
  update_every: int = 100,
  drop_fraction: jax.typing.ArrayLike = 0.3,
  drop_fraction_schedule: str = 'cosine',
  end_fraction: float = 0.75,
  mask: Any | Callable[[optax.Params], Any] | None = None,
  keep_dense: Any | Callable[[optax.Params], Any] | None = None,
  key: Any = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""Sparse Evolutionary Training (SET; Mocanu et al. 2018).

  `rigl`'s schedule with random growth, as the RigL authors'
  ``SparseSETOptimizer``: a mask-update step is also an ``inner`` step;
  from the weights it gives, the ``k`` active ones of smallest magnitude
  are dropped and ``k`` connections drawn uniformly from the rest
  (just-dropped included) are grown, starting at zero with their
  parameter-shaped inner state zeroed. ``inner`` sees masked gradients:

  .. math::
    g_t = \nabla L(\theta_t \odot M_t), \qquad
    \theta_{t+1} = M_{t+1} \odot (\theta_t + u_t),

  where ``u_t = inner(M_t * g_t)`` on every step.

  Args:
    inner: the optimizer of the active weights.
    sparsity: the overall fraction of zeros, in [0, 1).
    total_steps: the training length.
    distribution: 'uniform', 'erdos_renyi' or 'erk'.
    update_every: steps between mask updates, >= 1.
    drop_fraction: the fraction replaced at the first update, in [0, 1].
    drop_fraction_schedule: 'cosine' or 'constant'.
    end_fraction: mask updates stop at ``end_fraction * total_steps``.
    mask: the leaves to sparsify, as in `rigl`.
    keep_dense: masked leaves kept dense, as in `rigl`.
    key: an int seed or PRNG key.

  Returns:
    A `optax.GradientTransformationExtraArgs` with state `SparseState`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from optax_zoo.sparsity import set_sparse
    >>> tx = set_sparse(optax.sgd(0.1), sparsity=0.5, total_steps=10,
    ...                 update_every=2, distribution='uniform')
    >>> params = {'w': jnp.ones((4, 4))}
    >>> state = tx.init(params)
    >>> updates, state = tx.update(params, state, params)
    >>> int(state.masks['w'].sum())
    8

  References:
    Mocanu et al., `Scalable training of artificial neural networks with
    adaptive sparse connectivity inspired by network science
    <https://arxiv.org/abs/1707.04780>`_, Nature Communications 2018;
    Evci et al. 2020 (arXiv:1911.11134) for this form.

  Deviations: the RigL authors' SET (fixed drop fraction per update,
  magnitude drop of a fraction per layer, annealed), not the paper's
  Erdos-Renyi-only epoch-wise version with separate positive and negative
  thresholds; see `rigl` for the rest.
  """
  return _sparse_wrapper(
    inner,
    sparsity=sparsity,
    distribution=distribution,
    mask=mask,
    keep_dense=keep_dense,
    key=key,
    grow='random',
    update_every=update_every,
    drop_fraction=drop_fraction,
    drop_fraction_schedule=drop_fraction_schedule,
    end_fraction=end_fraction,
    total_steps=total_steps,
  )


def static_sparse(
  inner: optax.GradientTransformation,
  *,
  sparsity: float,
  distribution: str = 'erk',
  mask: Any | Callable[[optax.Params], Any] | None = None,
  keep_dense: Any | Callable[[optax.Params], Any] | None = None,
  key: Any = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""Static sparse training: a fixed random mask (the RigL paper's baseline).

  The masks are drawn at init as in `rigl` and never change; every step
  is an ``inner`` step on the masked gradient:

  .. math::
    g_t = \nabla L(\theta_t \odot M_t), \qquad
    \theta_{t+1} = M_{t+1} \odot (\theta_t + u_t),

  where ``u_t = inner(M_t * g_t)`` and ``M_t = M_0``.

  Args:
    inner: the optimizer of the active weights.
    sparsity: the overall fraction of zeros, in [0, 1).
    distribution: 'uniform', 'erdos_renyi' or 'erk'.
    mask: the leaves to sparsify, as in `rigl`.
    keep_dense: masked leaves kept dense, as in `rigl`.
    key: an int seed or PRNG key.

  Returns:
    A `optax.GradientTransformationExtraArgs` with state `SparseState`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from optax_zoo.sparsity import static_sparse
    >>> tx = static_sparse(optax.sgd(0.1), sparsity=0.5)
    >>> params = {'w': jnp.ones((4, 4))}
    >>> state = tx.init(params)
    >>> updates, state = tx.update(params, state, params)
    >>> new = optax.apply_updates(params, updates)
    >>> int((new['w'] != 0).sum())
    8

  References:
    Evci et al., `Rigging the Lottery: Making All Tickets Winners
    <https://arxiv.org/abs/1911.11134>`_, 2020 ("Static" in its tables).

  Deviations: the reference's ``SparseStaticOptimizer`` instead drops and
  re-initializes connections in place; this is the fixed-mask baseline
  the paper's tables report.
  """
  return _sparse_wrapper(
    inner,
    sparsity=sparsity,
    distribution=distribution,
    mask=mask,
    keep_dense=keep_dense,
    key=key,
    grow=None,
  )
