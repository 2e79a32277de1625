"""Curvature-vector products on flat vectors, over one batch or a data set.

Every analysis tool works on the flattened parameter vector
(`jax.flatten_util.ravel_pytree`) and hands pytrees back to the user. This
module builds the flat operator ``v -> C v`` for a curvature ``C`` (Hessian or
generalized Gauss-Newton) of either ``fun(params)`` or the batch-size weighted
average of ``fun(params, batch)`` over a list of batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = ['ggn_vp', 'hvp']


def hvp(fun: Callable[..., jax.Array], params: Any, v: Any, *args) -> Any:
  """Hessian-vector product by forward-over-reverse differentiation.

  .. math::
    H v = \\left.\\frac{d}{dt} \\nabla f(\\theta + t v)\\right|_{t=0}

  costs about one gradient and one forward pass more, and never forms the
  Hessian.

  Args:
    fun: ``fun(params, *args) -> scalar``.
    params: any pytree of arrays, including a Flax NNX ``nnx.State``.
    v: a pytree with the structure of ``params``.
    *args: passed on to ``fun`` (for example a batch).

  Returns:
    ``H v`` as a pytree with the structure of ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo.analysis import hvp
    >>> f = lambda p: jnp.sum(p['x'] ** 3)
    >>> hvp(f, {'x': jnp.array([1.0, 2.0])}, {'x': jnp.array([1.0, 1.0])})
    {'x': Array([ 6., 12.], dtype=float32)}
  """
  grad = lambda p: jax.grad(fun)(p, *args)
  return jax.jvp(grad, (params,), (v,))[1]


def ggn_vp(
  model_fn: Callable[..., Any],
  loss_fn: Callable[..., jax.Array],
  params: Any,
  v: Any,
  *args,
) -> Any:
  """Generalized Gauss-Newton-vector product :math:`J^\\top H_L J v`.

  For a loss ``loss_fn(model_fn(params))``, the generalized Gauss-Newton
  matrix (Schraudolph, 2002) drops the second derivatives of the model and
  keeps the curvature of the loss in the outputs:

  .. math::
    G = J^\\top \\nabla^2_z L(z)\\, J, \\qquad J = \\partial z / \\partial
    \\theta, \\quad z = \\text{model\\_fn}(\\theta).

  For softmax cross-entropy on logits, :math:`\\nabla^2_z L` is
  :math:`\\operatorname{diag}(p) - p p^\\top` per example, so :math:`G` is
  positive semi-definite and equals the Fisher information. The product costs
  one JVP and one VJP of the model and one Hessian-vector product of the
  loss in the outputs.

  Args:
    model_fn: ``model_fn(params, *args) -> outputs`` (for example logits).
    loss_fn: ``loss_fn(outputs, *args) -> scalar``.
    params: any pytree of arrays.
    v: a pytree with the structure of ``params``.
    *args: passed on to both functions (for example a batch).

  Returns:
    ``G v`` as a pytree with the structure of ``params``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from optax_zoo.analysis import ggn_vp
    >>> x, y = jnp.ones((4, 3)), jnp.array([0, 1, 1, 0])
    >>> model_fn = lambda w: x @ w
    >>> loss_fn = lambda z: optax.softmax_cross_entropy_with_integer_labels(
    ...   z, y).mean()
    >>> ggn_vp(model_fn, loss_fn, jnp.zeros((3, 2)), jnp.ones((3, 2))).shape
    (3, 2)

  References:
    Schraudolph, `Fast Curvature Matrix-Vector Products for Second-Order
    Gradient Descent <https://doi.org/10.1162/08997660260028683>`_, 2002.
  """
  outputs, jv = jax.jvp(lambda p: model_fn(p, *args), (params,), (v,))
  hjv = hvp(lambda z: loss_fn(z, *args), outputs, jv)
  _, vjp = jax.vjp(lambda p: model_fn(p, *args), params)
  return vjp(hjv)[0]


class FlatOperator(NamedTuple):
  """A symmetric curvature operator on the flat parameter vector.

  Attributes:
    matvec: ``matvec(operands, flat_v) -> flat (C v)``, a pure, hashable
      callable to pass to jit as a static argument; the arrays it needs come
      in ``operands`` rather than as closed-over constants, so a data set is
      not baked into the program.
    operands: the flat parameters and the batches.
    unravel: maps a flat vector back to the parameter pytree.
  """

  matvec: Callable[[Any, jax.Array], jax.Array]
  operands: Any
  unravel: Callable[[jax.Array], Any]

  @property
  def flat_params(self) -> jax.Array:
    return self.operands[0]

  @property
  def dim(self) -> int:
    return self.flat_params.shape[0]


def _batch_size(batch: Any) -> int:
  leaves = jax.tree.leaves(batch)
  return int(jnp.shape(leaves[0])[0]) if leaves and jnp.ndim(leaves[0]) else 1


def _check_scalar(value: jax.ShapeDtypeStruct, what: str) -> None:
  if value.shape != ():
    raise ValueError(f'`{what}` must return a scalar, got shape {value.shape}.')


def make_operator(
  fun: Callable[..., Any],
  params: Any,
  *,
  batches: Iterable[Any] | None = None,
  ggn_loss_fn: Callable[..., jax.Array] | None = None,
) -> FlatOperator:
  """The flat curvature operator of ``fun`` at ``params``.

  Without ``batches`` the curvature is that of ``fun(params)``. With
  ``batches`` it is the average over the batches of the curvature of
  ``fun(params, batch)``, weighted by each batch's size (the leading axis of
  its first leaf), which is the curvature of the data-set mean loss when
  ``fun`` is a per-batch mean. Batches of one shape are stacked and scanned;
  otherwise each is traced once.

  With ``ggn_loss_fn``, ``fun`` returns model outputs and the curvature is the
  generalized Gauss-Newton matrix of ``ggn_loss_fn(fun(params, *batch),
  *batch)``; without it the curvature is the Hessian of ``fun``.
  """
  flat, unravel = ravel_pytree(params)
  batches = None if batches is None else list(batches)
  if batches is not None and not batches:
    raise ValueError('`batches` must hold at least one batch, got none.')
  if batches is None:
    mode, operands = 'single', (flat,)
  else:
    sizes = jnp.asarray([_batch_size(b) for b in batches], flat.dtype)
    weights = sizes / jnp.sum(sizes)
    shapes = [jax.tree.map(jnp.shape, b) for b in batches]
    if all(shape == shapes[0] for shape in shapes):
      stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
      mode, operands = 'stacked', (flat, weights, stacked)
    else:
      mode, operands = 'unrolled', (flat, weights, batches)
  layout = (
    jax.tree.structure(params),
    tuple((jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(params)),
  )
  return FlatOperator(
    _Matvec(fun, ggn_loss_fn, layout, mode), operands, unravel
  )


@dataclasses.dataclass(frozen=True)
class _Matvec:
  """``matvec(operands, flat_v)``, equal for equal functions and layouts.

  The jitted loops take the matvec as a static argument, so jit's own cache
  compiles once per distinct matvec: two operators of the same function on
  parameters of the same layout compare and hash equal, and a second call
  on new parameters or data skips compilation. Only hashable descriptions
  are kept (no arrays, no closures over them), and jit's cache, not this
  module, decides how long they live (``jax.clear_caches`` drops them).

  Attributes:
    fun: the loss, or the model with ``ggn_loss_fn``.
    ggn_loss_fn: the loss of the model's outputs, or None for the Hessian.
    layout: the parameters' tree structure and leaf shapes and dtypes.
    mode: 'single', 'stacked' or 'unrolled' (see `make_operator`).
  """

  fun: Callable[..., Any]
  ggn_loss_fn: Callable[..., jax.Array] | None
  layout: tuple[Any, tuple[tuple[tuple[int, ...], Any], ...]]
  mode: str

  def _unravel(self) -> Callable[[jax.Array], Any]:
    treedef, leaves = self.layout
    zeros = [np.zeros(shape, dtype) for shape, dtype in leaves]
    return ravel_pytree(jax.tree.unflatten(treedef, zeros))[1]

  def _check(self, params: Any, *args) -> None:
    # At trace time, so once per compilation: tracing ``fun`` costs as much
    # as a few Hessian-vector products.
    out = jax.eval_shape(self.fun, params, *args)
    if self.ggn_loss_fn is None:
      _check_scalar(out, 'fun')
    else:
      loss = jax.eval_shape(self.ggn_loss_fn, out, *args)
      _check_scalar(loss, 'ggn_loss_fn')

  def __call__(self, operands: Any, v: jax.Array) -> jax.Array:
    unravel = self._unravel()

    def flat_vp(flat_params, *args):
      # Products in the parameters' pytree, then back to one flat vector.
      params = unravel(flat_params)
      if self.ggn_loss_fn is None:
        out = hvp(self.fun, params, unravel(v), *args)
      else:
        out = ggn_vp(self.fun, self.ggn_loss_fn, params, unravel(v), *args)
      return ravel_pytree(out)[0]

    if self.mode == 'single':
      self._check(unravel(operands[0]))
      return flat_vp(operands[0])
    flat_params, weights, batches = operands
    if self.mode == 'stacked':
      self._check(unravel(flat_params), jax.tree.map(lambda x: x[0], batches))

      def body(acc, inputs):
        weight, batch = inputs
        return acc + weight * flat_vp(flat_params, batch), None

      return jax.lax.scan(body, jnp.zeros_like(v), (weights, batches))[0]
    self._check(unravel(flat_params), batches[0])
    return sum(
      w * flat_vp(flat_params, b) for w, b in zip(weights, batches, strict=True)
    )
