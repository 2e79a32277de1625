r"""K-FAC: Kronecker-factored approximate curvature for Flax NNX models.

For a linear layer :math:`s = W^\top a` (Flax's kernel :math:`W` is
``(d_in, d_out)``; a bias is the last row of :math:`W` against a constant 1
appended to :math:`a`) the layer's block of the Fisher is approximated by
:math:`A \otimes G`, with the input factor :math:`A = E[a a^\top]` and the
output-gradient factor :math:`G = E[g g^\top]`, :math:`g = \partial \ell /
\partial s` (Martens & Grosse, 2015). For a convolution :math:`a` runs over
the im2col patches of every output position (KFC, Grosse & Martens, 2016):
:math:`A` is the mean over examples and positions, :math:`G` the mean over
examples of the sum over positions (the "expand" form; curvlinops'
``KFACLinearOperator`` with ``kfac_approx='expand'``). The preconditioned
gradient of the layer is :math:`(A + \pi \sqrt\lambda I)^{-1} \nabla W (G +
\sqrt\lambda / \pi\, I)^{-1}` with :math:`\pi = \sqrt{(\operatorname{tr}
A / d_A) / (\operatorname{tr} G / d_G)}` (Tikhonov damping split by the
:math:`\pi` heuristic, Martens & Grosse §6.3), or with ``inverse='eigen'``
the exact damped inverse :math:`(A \otimes G + \lambda I)^{-1}` in the
factors' eigenbases.

Two pieces:

- `kfac_value_and_grad` (and the functional `kfac_layer_stats`): the loss,
  the gradient and every ``nnx.Linear``/``nnx.Conv`` layer's input rows and
  per-example output gradients from ONE forward and backward pass of an
  unmodified model (the capture ghost clipping uses,
  ``optax_zoo._src.layers``).
- `scale_by_kfac`: the optax transform. It takes those statistics as the
  extra ``update`` argument ``kfac_stats``, keeps running averages of the
  factors, refreshes their damped inverses every ``inverse_every`` steps and
  preconditions each layer's kernel and bias gradient. `kfac` adds the
  KL-clipping of the update, momentum and the learning rate.

The math is written for this package. What it is checked against:
curvlinops-for-pytorch (``KFACLinearOperator`` for the factors,
``KFACInverseLinearOperator`` for the damped inverses, live in
``tests/reference``) and a dense float64 Fisher built from per-example
gradients. kfac-jax 0.0.8 fails on jax 0.10.2 (its graph matcher), and optax
declines K-FAC as out of scope.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from optax_zoo._src import layers as layers_lib
from optax_zoo._src import validation as v

__all__ = [
  'FISHER_TYPES',
  'INVERSE_MODES',
  'KFACLayer',
  'KFACLayerStats',
  'KFACState',
  'kfac',
  'kfac_check_stats',
  'kfac_factors',
  'kfac_init',
  'kfac_inverses',
  'kfac_layer_stats',
  'kfac_layers',
  'kfac_precondition',
  'kfac_precondition_updates',
  'kfac_running_factors',
  'kfac_value_and_grad',
  'scale_by_kfac',
]

FISHER_TYPES = ('empirical', 'mc')
INVERSE_MODES = ('pi', 'eigen')
_HI = jax.lax.Precision.HIGHEST


class KFACLayerStats(NamedTuple):
  """One layer's captured statistics for one batch.

  Attributes:
    a: input rows ``(B, T, d_A)``: the layer's inputs (for a convolution
      its im2col patches; ``T`` counts output positions and repeated calls),
      with a column of ones appended when the layer has a bias.
    g: output gradients ``(B, T, d_G)``: the gradient of each example's own
      loss with respect to the layer's output (the batch-mean loss's
      gradient times ``B``); for ``fisher='mc'`` at labels sampled from the
      model.
  """

  a: jax.Array
  g: jax.Array


class KFACLayer(NamedTuple):
  """Where a layer's parameters sit in the parameter tree (static)."""

  kernel: tuple[Any, ...]
  bias: tuple[Any, ...] | None
  kernel_shape: tuple[int, ...]

  @property
  def dims(self) -> tuple[int, int]:
    """``(d_A, d_G)``: the sizes of the input and output factors."""
    d_in = 1
    for s in self.kernel_shape[:-1]:
      d_in *= s
    return d_in + (self.bias is not None), self.kernel_shape[-1]


class KFACState(NamedTuple):
  """State of `scale_by_kfac`.

  Attributes:
    count: steps taken.
    factors: per layer ``(A, G)``, the running averages (float32).
    inverses: per layer, ``(A_inv, G_inv)`` (``inverse='pi'``) or the
      eigendecompositions ``(Q_A, e_A, Q_G, e_G)`` (``'eigen'``), refreshed
      every ``inverse_every`` steps.
  """

  count: jax.Array
  factors: dict[str, tuple[jax.Array, jax.Array]]
  inverses: dict[str, tuple[jax.Array, ...]]


# --------------------------------------------------------------- capture --


def _key_name(k) -> Any:
  for attr in ('key', 'name', 'idx'):
    if hasattr(k, attr):
      return getattr(k, attr)
  return str(k)


def _param_paths(params) -> list[tuple[tuple[Any, ...], Any]]:
  """(names, leaf) for every leaf; a trailing Variable ``value`` dropped."""
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = tuple(_key_name(k) for k in path)
    if names and names[-1] in ('value', 'raw_value'):
      names = names[:-1]
    out.append((names, leaf))
  return out


def kfac_layers(params: Any) -> dict[str, KFACLayer]:
  """The layers K-FAC can precondition, by ``'.'``-joined path.

  A layer is a node of the parameter tree holding a ``kernel`` of rank >= 2
  (``(d_in, d_out)`` dense, ``(k..., in, out)`` convolution) and optionally
  a ``bias`` of rank 1; the names are the ones `kfac_layer_stats` records
  (`nnx.iter_modules` paths).
  """
  groups: dict[tuple[Any, ...], dict[str, Any]] = {}
  for names, leaf in _param_paths(params):
    if names and names[-1] in layers_lib.PARAM_NAMES:
      groups.setdefault(names[:-1], {})[names[-1]] = (names, leaf)
  found = {}
  for owner, members in groups.items():
    if 'kernel' not in members:
      continue
    kpath, kernel = members['kernel']
    if jnp.ndim(kernel) < 2:
      continue
    bias = members.get('bias')
    bpath = bias[0] if bias is not None and jnp.ndim(bias[1]) == 1 else None
    found['.'.join(map(str, owner))] = KFACLayer(
      kpath, bpath, tuple(jnp.shape(kernel))
    )
  return found


def _check_fisher(fisher: str) -> None:
  v.check_choice('fisher', fisher, FISHER_TYPES)


def _capturable(model: nnx.Module) -> dict[str, nnx.Module]:
  """Supported layers; a Linear/Conv the capture cannot handle raises."""
  bad = []
  for path, module in nnx.iter_modules(model):
    if isinstance(module, layers_lib.SUPPORTED):
      problem = layers_lib.layer_problem(module)
      if problem is not None:
        name = '.'.join(map(str, path)) or '<root>'
        bad.append(f'{name} ({type(module).__name__}): {problem}')
  if bad:
    raise ValueError(
      'K-FAC cannot capture these layers (no factors for them): '
      f'{"; ".join(bad)}.'
    )
  return layers_lib.layer_modules(model)


def kfac_layer_stats(
  graphdef: nnx.GraphDef,
  params: Any,
  rest: Any,
  loss_fn: Callable[..., Any],
  *args: Any,
  fisher: str = 'empirical',
  key: jax.Array | None = None,
  has_aux: bool = False,
) -> tuple[Any, Any, Any, dict[str, KFACLayerStats]]:
  """Loss, gradient and K-FAC statistics of a split model, in one pass.

  Args:
    graphdef, params, rest: ``nnx.split(model, nnx.Param, ...)``.
    loss_fn: ``loss_fn(model, *args)``, the mean over the batch (the leading
      axis of every supported layer's input) of per-example losses; with
      ``has_aux`` it returns ``(loss, aux)``. For ``fisher='mc'`` it must
      return ``(loss, logits)`` (``has_aux`` is implied), the logits of a
      softmax cross-entropy over their last axis.
    *args: passed to ``loss_fn``.
    fisher: ``'empirical'`` (output gradients of the training loss itself,
      as distributed K-FAC implementations do) or ``'mc'`` (of labels
      sampled from the model's softmax, one sample per example: the Fisher
      of Martens & Grosse); ``'mc'`` needs ``key``.
    key: PRNG key for ``fisher='mc'``.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  Returns:
    ``(out, grads, new_rest, stats)``: ``out`` is the loss (or ``(loss,
    aux)``), ``grads`` the gradient with respect to ``params``, ``new_rest``
    the model's non-parameter state after the forward pass (BatchNorm
    statistics), ``stats`` a `KFACLayerStats` per supported layer.

  Raises:
    ValueError: for an unknown ``fisher``, ``'mc'`` without ``key``, or an
      ``nnx.Linear``/``nnx.Conv`` the capture cannot handle (named).
  """
  _check_fisher(fisher)
  if fisher == 'mc':
    if key is None:
      raise ValueError("`key` is required for fisher='mc'.")
    has_aux = True
  model0 = nnx.merge(graphdef, params, rest, copy=True)
  modules = _capturable(model0)

  box = {}

  def run(p, probes):
    model, paths = layers_lib.tapped_copy(graphdef, p, rest)
    with layers_lib.taping(layers_lib.Tape(paths, probes)) as tape:
      out = loss_fn(model, *args)
    box['shapes'] = tape.shapes
    new_rest = nnx.split(model, nnx.Param, ...)[2]
    return out, (tape.inputs, new_rest)

  jax.eval_shape(lambda p: run(p, None)[0], params)
  shapes = box['shapes']
  # Zeros that vary like the batch: under `jax.shard_map` a probe created
  # as a constant is replicated, and its gradient would come back summed
  # over the workers instead of each worker's own.
  ref = next(iter(jax.tree.leaves(args)), None)
  zero = (
    jnp.zeros([], jnp.float32)
    if ref is None
    else jnp.zeros_like(jnp.ravel(ref)[:1], jnp.float32).reshape(())
  )
  probes = {
    path: [jnp.broadcast_to(zero, s.shape).astype(s.dtype) for s in calls]
    for path, calls in shapes.items()
  }
  out, vjp_fn, (inputs, new_rest) = jax.vjp(run, params, probes, has_aux=True)
  loss = out[0] if has_aux else out
  ones = jnp.ones_like(loss)
  if has_aux:
    cot = (ones, jax.tree.map(jnp.zeros_like, out[1]))
  else:
    cot = ones
  grads, probe_grads = vjp_fn(cot)
  if fisher == 'mc':
    logits = out[1]
    sampled = jax.random.categorical(key, logits, axis=-1)
    terms = logits.size // logits.shape[-1]
    dlogits = (
      jax.nn.softmax(logits, axis=-1)
      - jax.nn.one_hot(sampled, logits.shape[-1], dtype=logits.dtype)
    ) / terms
    _, probe_grads = vjp_fn((jnp.zeros_like(loss), dlogits))

  stats = {}
  for path, calls in inputs.items():
    module = modules[path]
    a = jnp.concatenate(layers_lib.layer_rows(module, calls), axis=1)
    g = jnp.concatenate(
      [layers_lib.flat_rows(y, y.shape[-1]) for y in probe_grads[path]],
      axis=1,
    )
    a = jax.lax.stop_gradient(a).astype(jnp.float32)
    if module.bias is not None:
      a = jnp.concatenate([a, jnp.ones((*a.shape[:2], 1), a.dtype)], axis=-1)
    g = g.astype(jnp.float32) * a.shape[0]
    stats[path] = KFACLayerStats(a, g)
  return out, grads, new_rest, stats


def kfac_value_and_grad(
  loss_fn: Callable[..., Any],
  *,
  fisher: str = 'empirical',
  has_aux: bool = False,
) -> Callable[..., Any]:
  """Like `nnx.value_and_grad`, plus the K-FAC statistics of the pass.

  ``kfac_value_and_grad(loss_fn)(model, *args, key=None)`` returns
  ``(value, grads, stats)``: ``value`` is ``loss_fn(model, *args)`` (with
  its aux), ``grads`` an ``nnx.State`` of the model's parameters, ``stats``
  the ``kfac_stats`` argument of `scale_by_kfac`. The model's non-parameter
  state (BatchNorm statistics) is updated in place, as
  `nnx.value_and_grad` does. See `kfac_layer_stats` for ``loss_fn``,
  ``fisher`` and ``key``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import optax_zoo
    >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    >>> loss_fn = lambda m, x: jnp.mean(m(x) ** 2)
    >>> loss, grads, stats = optax_zoo.kfac_value_and_grad(loss_fn)(
    ...   model, jnp.ones((4, 3)))
    >>> stats[''].a.shape, stats[''].g.shape  # (B, T, d_in + 1), (B, T, d_out)
    ((4, 1, 4), (4, 1, 2))
  """
  _check_fisher(fisher)

  def fn(model: nnx.Module, *args: Any, key: jax.Array | None = None):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    out, grads, new_rest, stats = kfac_layer_stats(
      graphdef,
      params,
      rest,
      loss_fn,
      *args,
      fisher=fisher,
      key=key,
      has_aux=has_aux,
    )
    nnx.update(model, new_rest)
    return out, grads, stats

  return fn


# ------------------------------------------------------------------ math --


def kfac_factors(
  stats: Mapping[str, KFACLayerStats],
) -> dict[str, tuple[jax.Array, jax.Array]]:
  r"""Each layer's ``(A, G)`` of one batch from its statistics.

  :math:`A = \frac{1}{BT} \sum_{b,t} a_{bt} a_{bt}^\top` and :math:`G =
  \frac{1}{B} \sum_{b,t} g_{bt} g_{bt}^\top` (float32, full precision).
  """
  out = {}
  for name, s in stats.items():
    a = s.a.reshape(-1, s.a.shape[-1])
    g = s.g.reshape(-1, s.g.shape[-1])
    big_a = jnp.matmul(a.T, a, precision=_HI) / a.shape[0]
    big_g = jnp.matmul(g.T, g, precision=_HI) / s.g.shape[0]
    out[name] = (big_a, big_g)
  return out


def _pi(big_a, big_g):
  ta = jnp.trace(big_a) / big_a.shape[0]
  tg = jnp.trace(big_g) / big_g.shape[0]
  # A zero factor (a dead layer) makes the ratio 0/0 or x/0: split evenly.
  ok = (ta > 0) & (tg > 0) & jnp.isfinite(ta) & jnp.isfinite(tg)
  return jnp.where(ok, jnp.sqrt(ta / jnp.where(ok, tg, 1.0)), 1.0)


def _one_at_a_time(fn):
  """``fn`` (a LAPACK-backed factorization) mapped, not batched, by vmap.

  jaxlib 0.10.2's batched CPU Cholesky and eigh kernels can deadlock when
  several of different sizes run in one ``lax.scan`` under `jax.vmap`
  (``train_seeds`` hung with no CPU use; a 5-line repro: vmap of a scan
  inverting a 97x97 and a 513x513 matrix). Mapping the batch with
  ``lax.map`` calls the unbatched kernel once per element, which does not.
  """
  fn = jax.custom_batching.custom_vmap(fn)

  @fn.def_vmap
  def _rule(axis_size, in_batched, *args):
    args = tuple(
      a if b else jnp.broadcast_to(a, (axis_size, *jnp.shape(a)))
      for a, b in zip(args, in_batched, strict=True)
    )
    out = jax.lax.map(lambda xs: fn(*xs), args)
    return out, jax.tree.map(lambda _: True, out)

  return fn


@_one_at_a_time
def _damped_inverse(m, damping):
  eye = jnp.eye(m.shape[0], dtype=m.dtype)
  chol = jax.scipy.linalg.cho_factor(m + damping * eye, lower=True)
  return jax.scipy.linalg.cho_solve(chol, eye)


@_one_at_a_time
def _eigh(m):
  return jnp.linalg.eigh(m)


def kfac_inverses(
  factors: Mapping[str, tuple[jax.Array, jax.Array]],
  damping: Any,
  inverse: str = 'pi',
) -> dict[str, tuple[jax.Array, ...]]:
  r"""Damped inverses (``'pi'``) or eigendecompositions (``'eigen'``).

  ``'pi'``: :math:`((A + \pi\sqrt\lambda I)^{-1}, (G + \sqrt\lambda/\pi
  I)^{-1})` by Cholesky; ``'eigen'``: ``(Q_A, e_A, Q_G, e_G)`` with the
  eigenvalues clipped at 0 (the factors are PSD up to roundoff).
  """
  v.check_choice('inverse', inverse, INVERSE_MODES)
  out = {}
  for name, (big_a, big_g) in factors.items():
    if inverse == 'pi':
      pi = _pi(big_a, big_g)
      root = jnp.sqrt(jnp.asarray(damping, jnp.float32))
      out[name] = (
        _damped_inverse(big_a, pi * root),
        _damped_inverse(big_g, root / pi),
      )
    else:
      ea, qa = _eigh(big_a)
      eg, qg = _eigh(big_g)
      out[name] = (qa, jnp.maximum(ea, 0.0), qg, jnp.maximum(eg, 0.0))
  return out


def kfac_precondition(
  grad_rows: jax.Array,
  inverse_state: tuple[jax.Array, ...],
  damping: Any,
  inverse: str = 'pi',
) -> jax.Array:
  r"""A layer's ``(d_A, d_G)`` gradient preconditioned by its factors.

  ``'pi'``: :math:`A_\pi^{-1} M G_\pi^{-1}`; ``'eigen'``: :math:`Q_A [(Q_A^\top
  M Q_G) / (e_A e_G^\top + \lambda)] Q_G^\top`.
  """
  m = grad_rows.astype(jnp.float32)
  if inverse == 'pi':
    a_inv, g_inv = inverse_state
    return jnp.matmul(jnp.matmul(a_inv, m, precision=_HI), g_inv, precision=_HI)
  qa, ea, qg, eg = inverse_state
  rot = jnp.matmul(jnp.matmul(qa.T, m, precision=_HI), qg, precision=_HI)
  rot = rot / (jnp.outer(ea, eg) + damping)
  return jnp.matmul(jnp.matmul(qa, rot, precision=_HI), qg.T, precision=_HI)


def _rows(layer: KFACLayer, leaves: dict) -> jax.Array:
  k = layers_lib.conv_kernel_rows(leaves[layer.kernel].astype(jnp.float32))
  if layer.bias is None:
    return k
  return jnp.concatenate([k, leaves[layer.bias].astype(jnp.float32)[None]])


def _unrows(layer: KFACLayer, rows: jax.Array, out: dict, leaves: dict):
  k_rows = rows if layer.bias is None else rows[:-1]
  kernel = leaves[layer.kernel]
  out[layer.kernel] = layers_lib.conv_kernel_from_rows(
    k_rows, layer.kernel_shape
  ).astype(kernel.dtype)
  if layer.bias is not None:
    out[layer.bias] = rows[-1].astype(leaves[layer.bias].dtype)


def _check_stats(stats, layers: dict[str, KFACLayer]) -> None:
  unknown = sorted(set(stats) - set(layers))
  if unknown:
    raise ValueError(
      f'`kfac_stats` has layers {unknown} that are not layers of the '
      f'parameters (known: {sorted(layers)}).'
    )
  for name, s in stats.items():
    d_a, d_g = layers[name].dims
    if s.a.shape[-1] != d_a or s.g.shape[-1] != d_g:
      raise ValueError(
        f'`kfac_stats[{name!r}]` has factor sizes ({s.a.shape[-1]}, '
        f"{s.g.shape[-1]}), the layer's parameters need ({d_a}, {d_g}); "
        'is a bias missing from the parameters or the statistics?'
      )


def check_kfac_args(damping, factor_decay, inverse_every, inverse, kl_clip):
  """The `ValueError` checks shared by `scale_by_kfac` and its variants."""
  v.check_positive('damping', damping)
  v.check_in_range('factor_decay', factor_decay, 0.0, 1.0)
  v.check_int('inverse_every', inverse_every, minimum=1)
  v.check_choice('inverse', inverse, INVERSE_MODES)
  if kl_clip is not None:
    v.check_positive('kl_clip', kl_clip)


def scale_by_kfac(
  *,
  damping: jax.typing.ArrayLike = 1e-3,
  factor_decay: jax.typing.ArrayLike = 0.95,
  inverse_every: int = 10,
  inverse: str = 'pi',
  kl_clip: jax.typing.ArrayLike | None = None,
  learning_rate: optax.ScalarOrSchedule | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Preconditions each layer's gradient by its Kronecker factors.

  At step :math:`k` (from 0) with this batch's factors :math:`\hat A,
  \hat G` (`kfac_factors` of ``kfac_stats``):

  .. math::
    \epsilon_k = \min(1 - 1/(k+1), \rho), \quad
    A \leftarrow \epsilon_k A + (1 - \epsilon_k) \hat A, \quad
    G \leftarrow \epsilon_k G + (1 - \epsilon_k) \hat G,

  the damped inverses are recomputed when :math:`k \bmod T_{inv} = 0`, and
  each layer's gradient rows :math:`M` (kernel as ``(d_in, d_out)``, bias
  as its last row) become :math:`\Delta = A_\pi^{-1} M G_\pi^{-1}`
  (`kfac_precondition`). With ``kl_clip`` :math:`\kappa` and the learning
  rate :math:`\eta` the preconditioned rows are scaled by :math:`\nu =
  \min(1, \sqrt{\kappa / (\eta^2 \sum_l \langle \Delta_l, M_l \rangle)})`
  (Ba et al., 2017), which bounds the update's KL divergence under the
  quadratic model.

  Parameters outside a layer (norm scales, embeddings), and layers that
  ``kfac_stats`` does not cover (a kernel-holding module other than
  ``nnx.Linear``/``nnx.Conv``), pass through unchanged: the documented
  fallback to the plain gradient (unclipped, as in kfac_pytorch).

  Args:
    damping: Tikhonov damping :math:`\lambda > 0`.
    factor_decay: :math:`\rho \in [0, 1)`, the running average's decay.
    inverse_every: :math:`T_{inv} \ge 1`, steps between inverse refreshes.
    inverse: ``'pi'`` (Tikhonov damping split by :math:`\pi`, Cholesky
      inverses) or ``'eigen'`` (exact damping, eigendecompositions).
    kl_clip: :math:`\kappa > 0`, or None for no clipping.
    learning_rate: :math:`\eta` (a float or a schedule of the step count)
      for the KL clip; required with ``kl_clip``.

  Returns:
    A transformation whose ``update`` takes ``kfac_stats``: a mapping from
    layer path to `KFACLayerStats` (`kfac_value_and_grad`), or a zero-
    argument function returning one (the training loop's lazy supply). It
    is required when the parameters have layers (`kfac_layers`).

  Raises:
    ValueError: for ``damping <= 0``, ``factor_decay`` outside [0, 1),
      ``inverse_every < 1``, an unknown ``inverse``, ``kl_clip <= 0`` or
      without ``learning_rate``; at ``update``, missing or mismatched
      ``kfac_stats``.

  References:
    Martens & Grosse, 2015, "Optimizing Neural Networks with
    Kronecker-factored Approximate Curvature" (arXiv:1503.05671).
    Grosse & Martens, 2016, "A Kronecker-factored approximate Fisher matrix
    for convolution layers" (arXiv:1602.01407).
    Ba, Grosse & Martens, 2017, "Distributed Second-Order Optimization using
    Kronecker-Factored Approximations" (KL clipping).

  Deviations:
    No adaptive damping (Levenberg-Marquardt) and no learning rate and
    momentum from the quadratic model (Martens & Grosse §6-7): like the
    distributed K-FAC implementations (kfac_pytorch, DP-KFAC), a fixed
    damping, KL clipping and SGD momentum (`kfac`). The factors are
    refreshed every step the statistics are supplied.
  """
  check_kfac_args(damping, factor_decay, inverse_every, inverse, kl_clip)
  if kl_clip is not None and learning_rate is None:
    raise ValueError('`kl_clip` needs `learning_rate` (the step size).')
  v.check_learning_rate(learning_rate, allow_none=True)

  def init_fn(params):
    return kfac_init(params, inverse)

  def update_fn(updates, state, params=None, *, kfac_stats=None, **extra):
    del extra
    layers = kfac_layers(updates)
    if not layers:
      return updates, state._replace(count=optax.safe_increment(state.count))
    stats = kfac_check_stats(kfac_stats, layers)
    count = state.count
    factors = kfac_running_factors(
      state.factors, kfac_factors(stats), count, factor_decay
    )
    covered = {n: factors[n] for n in stats}
    old_inv = {n: state.inverses[n] for n in stats}
    new_inv = jax.lax.cond(
      count % inverse_every == 0,
      lambda f: kfac_inverses(f, damping, inverse),
      lambda f: old_inv,
      covered,
    )
    new = kfac_precondition_updates(
      updates,
      {n: layers[n] for n in stats},
      lambda name, rows: kfac_precondition(
        rows, new_inv[name], damping, inverse
      ),
      kl_clip=kl_clip,
      learning_rate=_at(learning_rate, count),
    )
    inverses = {**state.inverses, **new_inv}
    return new, KFACState(optax.safe_increment(count), factors, inverses)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _at(learning_rate, count):
  return learning_rate(count) if callable(learning_rate) else learning_rate


def kfac_init(params: Any, inverse: str = 'pi') -> KFACState:
  """`KFACState` at step 0: zero factors, identity inverses per layer."""
  v.check_choice('inverse', inverse, INVERSE_MODES)
  factors, inverses = {}, {}
  for name, layer in kfac_layers(params).items():
    d_a, d_g = layer.dims
    eye_a = jnp.eye(d_a, dtype=jnp.float32)
    eye_g = jnp.eye(d_g, dtype=jnp.float32)
    factors[name] = (jnp.zeros_like(eye_a), jnp.zeros_like(eye_g))
    if inverse == 'pi':
      inverses[name] = (eye_a, eye_g)
    else:
      inverses[name] = (
        eye_a,
        jnp.zeros((d_a,), jnp.float32),
        eye_g,
        jnp.zeros((d_g,), jnp.float32),
      )
  return KFACState(jnp.zeros([], jnp.int32), factors, inverses)


def kfac_check_stats(
  kfac_stats: Any, layers: Mapping[str, KFACLayer]
) -> dict[str, KFACLayerStats]:
  """``kfac_stats`` (a mapping or a function returning one), checked.

  Raises:
    ValueError: if it is None, names a layer not in ``layers``, or has
      factor sizes the layer's parameters do not have.
  """
  if kfac_stats is None:
    raise ValueError(
      'K-FAC needs the extra update argument `kfac_stats` (from '
      '`kfac_value_and_grad` or `kfac_layer_stats`) for the layers '
      f'{sorted(layers)}.'
    )
  stats = kfac_stats() if callable(kfac_stats) else kfac_stats
  _check_stats(stats, layers)
  return dict(stats)


def kfac_running_factors(
  factors: Mapping[str, tuple[jax.Array, jax.Array]],
  batch: Mapping[str, tuple[jax.Array, jax.Array]],
  count: jax.Array,
  factor_decay: Any,
) -> dict[str, tuple[jax.Array, jax.Array]]:
  r"""The running averages with ``batch`` folded in at step ``count``.

  :math:`\epsilon = \min(1 - 1/(k+1), \rho)` (the first step takes the
  batch's factors); layers not in ``batch`` keep their factors.
  """
  eps = jnp.minimum(1.0 - 1.0 / (count + 1.0), factor_decay)
  out = dict(factors)
  for name, (ba, bg) in batch.items():
    a, g = factors[name]
    out[name] = (eps * a + (1 - eps) * ba, eps * g + (1 - eps) * bg)
  return out


def kfac_precondition_updates(
  updates: Any,
  layers: Mapping[str, KFACLayer],
  precondition_fn: Callable[[str, jax.Array], jax.Array],
  *,
  kl_clip: Any = None,
  learning_rate: Any = None,
  combine_fn: Callable[[dict], dict] | None = None,
) -> Any:
  r"""Preconditions the ``layers`` of ``updates``; the rest pass through.

  Each layer's gradient rows :math:`M` (``(d_A, d_G)``: kernel rows, then
  the bias) become ``precondition_fn(name, M)``; ``combine_fn`` (if given)
  maps the dict of preconditioned rows by layer name to the final one (a
  distributed variant sums the owners' rows across workers there). With
  ``kl_clip`` the preconditioned layers are scaled by :math:`\nu =
  \min(1, \sqrt{\kappa / (\eta^2 \sum_l \langle \Delta_l, M_l
  \rangle)})`.
  """
  leaves = dict(_param_paths(updates))
  rows = {name: _rows(layer, leaves) for name, layer in layers.items()}
  pre = {name: precondition_fn(name, m) for name, m in rows.items()}
  if combine_fn is not None:
    pre = combine_fn(pre)
  if kl_clip is not None:
    vg = sum(jnp.sum(pre[n] * rows[n]) for n in pre)
    lr = jnp.asarray(learning_rate, jnp.float32)
    denom = jnp.maximum(jnp.abs(vg) * lr * lr, 1e-30)
    nu = jnp.minimum(1.0, jnp.sqrt(kl_clip / denom))
    pre = {n: x * nu for n, x in pre.items()}
  out = dict(leaves)
  for name, layer in layers.items():
    _unrows(layer, pre[name], out, leaves)
  return _rebuild(updates, out)


def _rebuild(updates, by_path):
  treedef = jax.tree_util.tree_structure(updates)
  paths = [names for names, _ in _param_paths(updates)]
  return jax.tree_util.tree_unflatten(treedef, [by_path[p] for p in paths])


def kfac(
  learning_rate: optax.ScalarOrSchedule,
  *,
  momentum: jax.typing.ArrayLike = 0.9,
  damping: jax.typing.ArrayLike = 1e-3,
  factor_decay: jax.typing.ArrayLike = 0.95,
  inverse_every: int = 10,
  inverse: str = 'pi',
  kl_clip: jax.typing.ArrayLike | None = 1e-3,
  weight_decay: jax.typing.ArrayLike = 0.0,
  mask: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""K-FAC with KL clipping, SGD momentum and the learning rate.

  ``chain(scale_by_kfac(..., kl_clip, learning_rate),
  add_decayed_weights(weight_decay, mask), trace(momentum),
  scale_by_learning_rate(learning_rate))``:
  the update of kfac_pytorch and DP-KFAC's reference code (the weight
  decay is added after preconditioning, as torch's SGD does).

  Args:
    learning_rate: :math:`\eta \ge 0`, a float or a schedule.
    momentum: heavy-ball momentum in [0, 1).
    damping, factor_decay, inverse_every, inverse, kl_clip: as in
      `scale_by_kfac` (``kl_clip=None`` turns clipping off).
    weight_decay: L2 coefficient >= 0 (coupled, after preconditioning).
    mask: pytree or callable selecting the parameters that decay (None:
      all), as in `optax.add_decayed_weights`.

  Returns:
    An optax transformation taking the extra argument ``kfac_stats`` (see
    `kfac_value_and_grad`); `optax_zoo.training.train` supplies it.

  Example (a Flax NNX training step):
    >>> import jax.numpy as jnp, optax
    >>> from flax import nnx
    >>> import optax_zoo
    >>> model = nnx.Sequential(
    ...   nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu,
    ...   nnx.Linear(8, 3, rngs=nnx.Rngs(1)))
    >>> opt = nnx.Optimizer(model, optax_zoo.kfac(0.1), wrt=nnx.Param)
    >>> def loss_fn(model, x, y):
    ...   logits = model(x)
    ...   return optax.softmax_cross_entropy_with_integer_labels(
    ...     logits, y).mean()
    >>> @nnx.jit
    ... def step(model, opt, x, y):
    ...   loss, grads, stats = optax_zoo.kfac_value_and_grad(loss_fn)(
    ...     model, x, y)
    ...   opt.update(model, grads, kfac_stats=stats)
    ...   return loss
    >>> x, y = jnp.ones((16, 4)), jnp.arange(16) % 3
    >>> losses = [float(step(model, opt, x, y)) for _ in range(5)]
    >>> losses[-1] < losses[0]
    True
  """
  v.check_learning_rate(learning_rate)
  v.check_in_range('momentum', momentum, 0.0, 1.0)
  v.check_weight_decay(weight_decay)
  return optax.chain(
    scale_by_kfac(
      damping=damping,
      factor_decay=factor_decay,
      inverse_every=inverse_every,
      inverse=inverse,
      kl_clip=kl_clip,
      learning_rate=learning_rate if kl_clip is not None else None,
    ),
    optax.add_decayed_weights(weight_decay, mask),
    optax.trace(decay=momentum),
    optax.scale_by_learning_rate(learning_rate),
  )
