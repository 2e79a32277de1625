r"""Stochastic Block-ADMM (Khorram et al. 2021) and DeepFacto's NMF layer.

A network is cut into blocks :math:`f_1, \dots, f_B`; auxiliary variables
:math:`z_b` stand for the blocks' outputs, kept per training example, and
the constraints :math:`z_b = f_b(z_{b-1}; W_b)` (:math:`z_0 = x`) are
enforced by an augmented Lagrangian with duals :math:`\lambda_b` and
penalty :math:`\rho`. Per example :math:`i`,

.. math::
  \mathcal L_i = \ell(f_B(z_{B-1,i}; W_B), y_i) + \sum_{b<B}
  \lambda_{b,i}^\top r_{b,i} + \frac\rho2 \|r_{b,i}\|^2, \qquad
  r_{b,i} = z_{b,i} - f_b(z_{b-1,i}; W_b),

and each step on a mini-batch :math:`S` of example ids runs (the algorithm
box implemented here):

1. **W-step**, every block in parallel, ``w_steps`` steps of its own optax
   ``inner`` on :math:`\frac1{|S|}\sum_{i\in S} \mathcal L_i` as a function
   of :math:`W_b` alone (backpropagation only inside block :math:`b`; for
   :math:`b < B` that is :math:`\frac\rho2\|r_b + \lambda_b/\rho\|^2`);
2. **z-step**, every auxiliary in parallel, ``z_steps`` projected gradient
   steps :math:`z_{b,i} \leftarrow \Pi_b(z_{b,i} - \eta_z \nabla_{z_{b,i}}
   \mathcal L_i)` with the new weights; the gradient has block
   :math:`b`'s own term :math:`\rho r_{b,i} + \lambda_{b,i}` and block
   :math:`b+1`'s term differentiated through :math:`f_{b+1}` only;
3. **dual ascent**, :math:`\lambda_{b,i} \leftarrow \lambda_{b,i} + \tau
   \rho\, r_{b,i}` (:math:`\tau` = ``dual_step``, 1 by default) with the new
   weights and auxiliaries.

Auxiliaries and duals of the examples outside the batch are left as they
are; `BlockADMM.init` sets :math:`z` by a forward pass over the training set
and :math:`\lambda = 0`. A block may replace the forward constraint by its
own residual (`ADMMBlock.residual`) and project its parameters and
outputs (`ADMMBlock.project_params`, `ADMMBlock.project_output`):
DeepFacto's non-negative matrix factorization layer (`nmf_block`) is the
residual :math:`r = z_{b-1} - H D` between its input and its non-negative codes
:math:`H = z_b` under a non-negative dictionary :math:`D`. Such a layer has
no gradient to backpropagate through (its forward pass is an NNLS solve),
which is what Block-ADMM is for.

**Parallel blocks, and what crosses the wire.** The W-steps are independent
given :math:`z`, and so are the z-steps given the weights. With ``mesh``
(identical blocks, one per device of a ``'blocks'`` axis) the step is one
`jax.shard_map` program: device :math:`b` holds :math:`W_b`, its optimizer
state, :math:`z_b` and :math:`\lambda_b` of every example. The W-steps
exchange nothing; per step, device :math:`b` sends the batch's
:math:`z_b` to device :math:`b+1` ``z_steps + 2`` times (before the W-step,
once per z-step, before the dual step) and receives
:math:`\partial \mathcal L / \partial z_b` through :math:`f_{b+1}` back
``z_steps`` times: each message ``4 * batch * prod(z_b.shape[1:])`` bytes
(float32) between neighbours, ``(2 z_steps + 2)`` messages per boundary and
step, never weights or end-to-end gradients. The mini-batch (``x``,
``y``, ``ids``) is replicated to every device; only the first block reads
``x`` and only the last ``y``.

Deviations, all choices where the paper's text was not at hand (no
reference code exists; this transcribes the abstract and the standard
formulation): W- and z-steps are Jacobi (all blocks from the same
:math:`z`), not Gauss-Seidel; the z-step is plain projected gradient descent
on the per-example Lagrangian (a step size ``z_learning_rate``, optimizer
state not kept across visits); the dual step is :math:`\rho` times
``dual_step`` (1 by default; 0 gives the quadratic-penalty method); the last
block carries the loss and has no auxiliary of its own. Dual ascent assumes
the primal steps nearly solve their subproblems: with too few ``w_steps``
and ``z_steps`` the residuals can grow instead of vanishing. Non-finite
losses or gradients are not filtered: they reach the weights, auxiliaries
and duals and show in ``metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from optax_zoo._src import validation as v
from optax_zoo.distributed import _mesh

__all__ = [
  'ADMMBlock',
  'BlockADMM',
  'BlockADMMState',
  'block_admm',
  'nmf_block',
]


class ADMMBlock(NamedTuple):
  """One block of a network split for `block_admm`.

  Attributes:
    forward: ``forward(params, inputs) -> outputs`` on a batch (leading
      example axis): the block's map, used for the auxiliaries' first values
      and for inference.
    residual: ``residual(params, inputs, outputs) -> r``, the constraint
      ``r = 0`` tying the block's auxiliary outputs to its inputs; None for
      ``outputs - forward(params, inputs)``.
    project_params: applied to the parameters after every W-step (e.g. onto
      a constraint set); None for none.
    project_output: applied to the block's auxiliaries after every z-step;
      None for none.
  """

  forward: Callable[[Any, jax.Array], jax.Array]
  residual: Callable[[Any, jax.Array, jax.Array], jax.Array] | None = None
  project_params: Callable[[Any], Any] | None = None
  project_output: Callable[[jax.Array], jax.Array] | None = None


class BlockADMMState(NamedTuple):
  """State of `block_admm`.

  Attributes:
    count: steps taken, int32.
    params: the blocks' parameters :math:`W_1..W_B`, a tuple (with
      ``mesh``: one tree stacked on a leading block axis).
    inner_states: the blocks' ``inner`` states, likewise.
    z: auxiliaries :math:`z_1..z_{B-1}` of every training example, shaped
      ``(num_examples, *block_output_shape)`` (with ``mesh``: stacked
      ``(B, num_examples, ...)``, the last block's row unused).
    duals: :math:`\\lambda_1..\\lambda_{B-1}`, shaped as the residuals.
  """

  count: jax.Array
  params: Any
  inner_states: Any
  z: Any
  duals: Any


class BlockADMM(NamedTuple):
  """The functions of `block_admm`.

  Attributes:
    init: ``init(params, inputs) -> state``: ``params`` one tree per block,
      ``inputs`` the whole training set (example ids index its rows).
    step: ``step(state, x, y, ids) -> (state, metrics)`` on a mini-batch
      ``x = inputs[ids]`` with labels ``y``; jitted. ``metrics['loss']`` is
      the batch mean of the loss on :math:`f_B(z_{B-1})`,
      ``metrics['residual']`` the root mean square per example of
      :math:`\\|r_b\\|`, one per constraint.
    predict: ``predict(params, x)``, the network's forward pass (the state's
      ``params``); jitted.
  """

  init: Callable[[Sequence[Any], jax.Array], BlockADMMState]
  step: Callable[..., tuple[BlockADMMState, dict[str, jax.Array]]]
  predict: Callable[[Any, jax.Array], jax.Array]


def _as_block(block: Any) -> ADMMBlock:
  return block if isinstance(block, ADMMBlock) else ADMMBlock(forward=block)


def _sq_per_example(x: jax.Array) -> jax.Array:
  return jnp.sum(jnp.reshape(x, (x.shape[0], -1)) ** 2, axis=1)


def _residual(block: ADMMBlock, w, a, z) -> jax.Array:
  if block.residual is None:
    return z - block.forward(w, a)
  return block.residual(w, a, z)


def _terms(block, loss_fn, rho, last, w, a, z, lam, y) -> jax.Array:
  """Block ``b``'s part of :math:`\\mathcal L_i` per example (the constant
  :math:`-\\|\\lambda\\|^2/2\\rho` dropped); ``last`` a bool or a traced
  one (on a mesh)."""

  def loss(w, a):
    return loss_fn(block.forward(w, a), y)

  def penalty(w, a):
    r = _residual(block, w, a, z)
    return 0.5 * rho * _sq_per_example(r + lam / rho)

  if isinstance(last, bool):
    return (loss if last else penalty)(w, a)
  return lax.cond(last, loss, penalty, w, a)


def _w_step(block, tx, steps, term_fn, w, opt):
  """``steps`` steps of ``tx`` on the batch mean of ``term_fn(w)``."""
  value_fn = lambda p: jnp.mean(term_fn(p))

  def one(carry, _):
    w, opt = carry
    value, grad = jax.value_and_grad(value_fn)(w)
    updates, opt = tx.update(
      grad, opt, w, value=value, grad=grad, value_fn=value_fn
    )
    w = optax.apply_updates(w, updates)
    if block.project_params is not None:
      w = block.project_params(w)
    return (w, opt), None

  (w, opt), _ = lax.scan(one, (w, opt), None, steps)
  return w, opt


def _z_move(block, z, grad, z_learning_rate):
  z = z - z_learning_rate * grad
  return z if block.project_output is None else block.project_output(z)


def _rms(r: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.mean(_sq_per_example(r)))


def block_admm(
  blocks: Sequence[ADMMBlock | Callable[[Any, jax.Array], jax.Array]],
  *,
  loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
  rho: float,
  inner: optax.GradientTransformation | Sequence[optax.GradientTransformation],
  z_learning_rate: float,
  dual_step: float = 1.0,
  w_steps: int = 1,
  z_steps: int = 1,
  mesh: Mesh | None = None,
  axis_name: Hashable = 'blocks',
) -> BlockADMM:
  r"""Stochastic Block-ADMM: trains a network split into blocks without
  end-to-end backpropagation.

  See the module docstring for the algorithm box, the deviations and what
  crosses the wire. Not an optax transform: it owns the weights, the
  per-example auxiliaries and the duals.

  Args:
    blocks: the blocks in order, each an `ADMMBlock` or a plain
      ``forward(params, inputs)``; the last one's output goes to the loss.
    loss_fn: ``loss_fn(outputs, labels)``, the loss per example, shape
      ``(batch,)``.
    rho: the penalty :math:`\rho > 0`; times ``dual_step``, the dual step.
    inner: every block's optimizer, or one per block; an optax transform
      that needs ``value``, ``grad`` or ``value_fn`` (`optax.lbfgs`) gets
      them from the block's own objective.
    z_learning_rate: :math:`\eta_z > 0` of the z-step, per example.
    dual_step: the dual ascent step as a multiple of ``rho`` (>= 0).
    w_steps: ``inner`` steps per block and step (>= 1).
    z_steps: gradient steps on the auxiliaries per step (>= 1).
    mesh: a mesh with the axis ``axis_name`` of ``len(blocks)`` devices to
      put block ``b`` on device ``b``; the blocks must then be one `ADMMBlock`
      with parameters of one shape whose output shape equals its input
      shape, and ``inner`` one transform. None: all on one device.
    axis_name: the block axis of ``mesh``.

  Returns:
    A `BlockADMM` of ``init``, ``step`` and ``predict``.

  Raises:
    ValueError: naming ``rho``, ``z_learning_rate``, ``dual_step``,
      ``w_steps``, ``z_steps``, ``blocks`` (empty, or not identical on a
      mesh), ``inner`` (not one per block) or ``mesh``; ``init`` names
      ``params`` or ``blocks`` when the blocks' shapes do not chain.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> import optax_zoo as oz
    >>> linear = lambda w, x: x @ w
    >>> sq = lambda out, y: jnp.sum((out - y) ** 2, axis=1)
    >>> admm = oz.block_admm([linear, linear], loss_fn=sq, rho=1.0,
    ...   inner=optax.sgd(0.1), z_learning_rate=0.1)
    >>> x = jax.random.normal(jax.random.key(0), (8, 3))
    >>> y = x @ jnp.ones((3, 2))
    >>> state = admm.init([jnp.zeros((3, 4)), jnp.zeros((4, 2))], x)
    >>> state, metrics = admm.step(state, x, y, jnp.arange(8))
    >>> admm.predict(state.params, x).shape
    (8, 2)

  References:
    Khorram, Fu, Danesh, Qi and Li, `Stochastic Block-ADMM for Training
    Deep Networks <https://arxiv.org/abs/2105.00339>`_, 2021.
  """
  v.check_positive('rho', rho)
  v.check_positive('z_learning_rate', z_learning_rate)
  v.check_non_negative('dual_step', dual_step)
  v.check_int('w_steps', w_steps, minimum=1)
  v.check_int('z_steps', z_steps, minimum=1)
  blocks = tuple(_as_block(b) for b in blocks)
  if not blocks:
    raise ValueError('`blocks` must hold at least one block, got none.')
  n = len(blocks)
  per_block = not hasattr(inner, 'update')
  txs = tuple(inner) if per_block else (inner,) * n
  if len(txs) != n or not all(hasattr(t, 'update') for t in txs):
    raise ValueError(
      f'`inner` must be one optax transform or one per block ({n}), got '
      f'{inner!r}.'
    )
  txs = tuple(optax.with_extra_args_support(t) for t in txs)
  if mesh is not None:
    if axis_name not in mesh.axis_names or mesh.shape[axis_name] != n:
      raise ValueError(
        f'`mesh` must have an axis {axis_name!r} of {n} devices (one per '
        f'block), got {dict(mesh.shape)}.'
      )
    if any(b != blocks[0] for b in blocks) or per_block:
      raise ValueError(
        '`blocks` must be one block repeated, with one `inner`, to run on '
        'a mesh (every device runs the same program).'
      )

  def term(b, w, a, z, lam, y):
    return _terms(blocks[b], loss_fn, rho, b == n - 1, w, a, z, lam, y)

  def forward_all(params, x):
    outs = []
    for block, w in zip(blocks, params, strict=True):
      x = block.forward(w, x)
      outs.append(x)
    return outs

  def predict(params, x):
    if mesh is None:
      return forward_all(params, x)[-1]
    return lax.scan(lambda a, w: (blocks[0].forward(w, a), None), x, params)[0]

  def init(params, inputs):
    params = tuple(params)
    if len(params) != n:
      raise ValueError(
        f'`params` must hold one tree per block ({n}), got {len(params)}.'
      )
    inputs = jnp.asarray(inputs)
    shape = inputs.shape
    for b, (block, w) in enumerate(zip(blocks, params, strict=True)):
      try:
        out = jax.eval_shape(
          block.forward, w, jax.ShapeDtypeStruct(shape, inputs.dtype)
        )
      except (TypeError, ValueError) as e:
        raise ValueError(
          f'`blocks` do not chain: block {b} cannot take inputs of shape '
          f'{shape} (the output of block {b - 1} or the data): {e}'
        ) from e
      if out.shape[:1] != shape[:1]:
        raise ValueError(
          f'`blocks` must keep the example axis: block {b} maps inputs of '
          f'shape {shape} to {out.shape}.'
        )
      if mesh is not None and out.shape != shape:
        raise ValueError(
          f'`blocks` on a mesh must map inputs of shape {shape} to the same '
          f'shape; block {b} gives {out.shape}.'
        )
      shape = out.shape
    z = tuple(jax.jit(forward_all)(params, inputs)[:-1])
    duals = tuple(
      jnp.zeros_like(_residual(blocks[b], params[b], a, zb))
      for b, (a, zb) in enumerate(zip((inputs, *z)[:-1], z, strict=True))
    )
    inner_states = tuple(t.init(w) for t, w in zip(txs, params, strict=True))
    state = BlockADMMState(
      jnp.zeros([], jnp.int32), params, inner_states, z, duals
    )
    if mesh is None:
      return state
    # The last block has no auxiliary: its rows on the mesh are unused.
    dummy = jnp.zeros(shape, inputs.dtype)
    last = _residual(blocks[-1], params[-1], (inputs, *z)[-1], dummy)
    return _to_mesh(state, dummy, jnp.zeros_like(last))

  def step(state, x, y, ids):
    z = [zb[ids] for zb in state.z]
    lam = [lb[ids] for lb in state.duals]
    ins = lambda z: (x, *z)
    outs = lambda z: (*z, None)
    lams = (*lam, None)
    params, inner_states = [], []
    for b in range(n):
      fn = lambda w, b=b: term(b, w, ins(z)[b], outs(z)[b], lams[b], y)
      w, s = _w_step(
        blocks[b], txs[b], w_steps, fn, state.params[b], state.inner_states[b]
      )
      params.append(w)
      inner_states.append(s)

    def z_iter(z, _):
      a, o = ins(z), outs(z)
      grads = [
        jax.grad(
          lambda a, zb, b=b: jnp.sum(term(b, params[b], a, zb, lams[b], y)),
          argnums=(0, 1),
        )(a[b], o[b])
        for b in range(n)
      ]
      z = tuple(
        _z_move(blocks[b], z[b], grads[b][1] + grads[b + 1][0], z_learning_rate)
        for b in range(n - 1)
      )
      return z, None

    z, _ = lax.scan(z_iter, tuple(z), None, z_steps)
    a = ins(z)
    res = [_residual(blocks[b], params[b], a[b], z[b]) for b in range(n - 1)]
    lam = [lam[b] + dual_step * rho * res[b] for b in range(n - 1)]
    loss = jnp.mean(loss_fn(blocks[-1].forward(params[-1], a[-1]), y))
    new = BlockADMMState(
      state.count + 1,
      tuple(params),
      tuple(inner_states),
      tuple(zf.at[ids].set(zb) for zf, zb in zip(state.z, z, strict=True)),
      tuple(
        lf.at[ids].set(lb) for lf, lb in zip(state.duals, lam, strict=True)
      ),
    )
    residual = jnp.stack([_rms(r) for r in res]) if res else jnp.zeros(0)
    return new, {'loss': loss, 'residual': residual}

  if mesh is None:
    return BlockADMM(init, jax.jit(step), jax.jit(predict))

  block, tx = blocks[0], txs[0]
  last_of = lambda: lax.axis_index(axis_name) == n - 1
  fwd = [(b, b + 1) for b in range(n - 1)]
  bwd = [(b + 1, b) for b in range(n - 1)]

  def local_step(w, opt, zf, lf, x, y, ids):
    """Block ``axis_index``'s step; its neighbours' values by ppermute."""
    first, last = lax.axis_index(axis_name) == 0, last_of()
    z, lam = zf[ids], lf[ids]
    inputs = lambda z: jnp.where(first, x, lax.ppermute(z, axis_name, fwd))
    local = lambda w, a, z: _terms(block, loss_fn, rho, last, w, a, z, lam, y)
    a = inputs(z)
    w, opt = _w_step(block, tx, w_steps, lambda w: local(w, a, z), w, opt)

    def z_iter(z, _):
      da, dz = jax.grad(lambda a, z: jnp.sum(local(w, a, z)), argnums=(0, 1))(
        inputs(z), z
      )
      moved = _z_move(
        block, z, dz + lax.ppermute(da, axis_name, bwd), z_learning_rate
      )
      return jnp.where(last, z, moved), None

    z, _ = lax.scan(z_iter, z, None, z_steps)
    a = inputs(z)
    r = jnp.where(last, 0.0, _residual(block, w, a, z))
    loss = jnp.where(last, jnp.mean(loss_fn(block.forward(w, a), y)), 0.0)
    return (
      w,
      opt,
      zf.at[ids].set(z),
      lf.at[ids].set(lam + dual_step * rho * r),
      lax.psum(loss, axis_name),
      _rms(r),
    )

  def _to_mesh(state, z_last, dual_last):
    stack = lambda *trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
    put = lambda tree: _mesh.shard_workers(tree, mesh, axis_name)
    params = put(stack(*state.params))
    return BlockADMMState(
      _mesh.replicate_on_mesh(state.count, mesh),
      params,
      _mesh.init_on_workers(tx, params, mesh, axis_name),
      put(stack(*state.z, z_last)),
      put(stack(*state.duals, dual_last)),
    )

  def mesh_step(state, x, y, ids):
    specs = _mesh.worker_specs(state.inner_states, axis_name)
    b = P(axis_name)
    run = _mesh.worker_map(
      local_step,
      mesh,
      in_specs=(b, specs, b, b, P(), P(), P()),
      out_specs=(b, specs, b, b, P(), b),
      axis_name=axis_name,
      check_vma=False,
    )
    w, opt, zs, ls, loss, res = run(
      state.params, state.inner_states, state.z, state.duals, x, y, ids
    )
    new = BlockADMMState(state.count + 1, w, opt, zs, ls)
    return new, {'loss': loss, 'residual': res[:-1]}

  return BlockADMM(init, jax.jit(mesh_step), jax.jit(predict))


def nmf_block(code_steps: int = 100) -> ADMMBlock:
  r"""DeepFacto's non-negative matrix factorization layer, as an `ADMMBlock`.

  Its parameters are a dictionary :math:`D \ge 0` of shape ``(rank,
  features)``, its inputs non-negative features :math:`A` (a batch of
  rows), its outputs the codes :math:`H \ge 0`, ``(batch, rank)``, with
  :math:`A \approx H D`. Inside `block_admm` the constraint is the
  reconstruction residual :math:`r = A - H D` and both factors are kept
  non-negative by projection (:math:`D` after every W-step, :math:`H` after
  every z-step), so the factors are trained through the constraint, never
  by backpropagating through the factorization. ``forward`` (first
  auxiliaries, inference) solves :math:`\min_{H \ge 0} \|A - H D\|^2` by
  ``code_steps`` projected gradient steps of size :math:`1/\|D D^\top\|_2`
  from :math:`H = 0`.

  Args:
    code_steps: projected gradient steps of the NNLS solve (>= 1).

  Returns:
    The `ADMMBlock`.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax_zoo as oz
    >>> nmf = oz.nmf_block()
    >>> d = jnp.eye(2, 3)
    >>> nmf.forward(d, jnp.array([[2.0, 1.0, 5.0]])).round(3)
    Array([[2., 1.]], dtype=float32)

  References:
    Khorram, Fu, Danesh, Qi and Li, `Stochastic Block-ADMM for Training
    Deep Networks <https://arxiv.org/abs/2105.00339>`_, 2021 (DeepFacto).
  """
  v.check_int('code_steps', code_steps, minimum=1)

  def forward(d, a):
    gram = d @ d.T
    step = 1.0 / jnp.maximum(jnp.linalg.norm(gram, 2), 1e-12)
    rhs = a @ d.T
    h = jnp.zeros((a.shape[0], d.shape[0]), a.dtype)
    h = lax.fori_loop(
      0, code_steps, lambda _, h: jax.nn.relu(h - step * (h @ gram - rhs)), h
    )
    return h

  return ADMMBlock(
    forward=forward,
    residual=lambda d, a, h: a - h @ d,
    project_params=jax.nn.relu,
    project_output=jax.nn.relu,
  )
