"""The one supplier of extra `update` arguments (value, grad_fn, ...).

A method that needs more than the gradient takes it through optax's extra
update arguments, ``tx.update(grads, state, params, **extra)``, and its
registry entry names them (`MethodInfo.extra_args`). `supply` builds every
one of them from a per-example loss, the parameters and the batch; the
training loop, the common tests and the benchmark all call it, so there is
one definition of each argument:

``value``
  the batch loss at ``params``: the mean of the per-example losses.
``value_sq_mean``
  the mean of the squared per-example losses (the spread of the losses
  about the target loss 0, which is what KOALA's official training loop
  feeds its filter, ``loss_var = mean(loss ** 2)``; it is not the variance
  of the losses about their mean). ``value_variance`` is its former name,
  still supplied (KOALA accepts it, deprecated).
``grad_fn``
  ``grad_fn(params, index=0, num_splits=1)``: the gradient of the batch
  loss at other parameters on the same batch (SAM's ascent point, an
  extragradient). With ``num_splits > 1`` the batch is cut into
  ``num_splits`` equal consecutive parts and the gradient is taken on part
  ``index`` (a Python int or a traced int32 scalar): m-sharpness takes one
  ascent step per part, Entropy-SGD's Langevin steps each draw their own
  minibatch from a batch that holds several. ``num_splits`` must be a
  Python int dividing the batch size. Model state such as BatchNorm running
  statistics is read, never written: only the training step updates it.
``kfac_stats``
  a zero-argument function returning K-FAC's per-layer statistics
  (`optax_zoo.kfac_layer_stats`) of the step's batch. Supplied only when
  the caller passes ``kfac_stats_fn`` (it needs the model, not just a loss
  of the parameters); lazy, so a method that does not call it traces and
  pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ['NAMES', 'PerExampleLossFn', 'supply']

# A per-example loss: ``loss_fn(params, batch) -> losses`` of shape (B,),
# where every leaf of ``batch`` has the leading batch axis B.
PerExampleLossFn = Callable[[Any, Any], jax.Array]

NAMES = ('value', 'value_sq_mean', 'value_variance', 'grad_fn', 'kfac_stats')


def _batch_size(batch: Any) -> int:
  sizes = {jnp.shape(x)[0] for x in jax.tree.leaves(batch)}
  if len(sizes) != 1:
    raise ValueError(
      '`batch` must have one leading batch size on every leaf, got '
      f'{sorted(sizes)}.'
    )
  return sizes.pop()


def _part(batch: Any, index: Any, num_splits: int) -> Any:
  if isinstance(num_splits, bool) or not isinstance(num_splits, int):
    raise ValueError(
      f'`num_splits` must be a Python int >= 1, got {num_splits!r}.'
    )
  size = _batch_size(batch)
  if num_splits < 1 or size % num_splits:
    raise ValueError(
      f'`num_splits` must be >= 1 and divide the batch size {size}, got '
      f'{num_splits}.'
    )
  if num_splits == 1:
    return batch
  part = size // num_splits
  start = jnp.asarray(index, jnp.int32) * part
  return jax.tree.map(
    lambda x: jax.lax.dynamic_slice_in_dim(x, start, part, axis=0), batch
  )


def make_grad_fn(loss_fn: PerExampleLossFn, batch: Any) -> Callable[..., Any]:
  """``grad_fn(params, index=0, num_splits=1)`` on ``batch`` (see module)."""

  def grad_fn(params: Any, index: Any = 0, num_splits: int = 1) -> Any:
    part = _part(batch, index, num_splits)
    return jax.grad(lambda p: jnp.mean(loss_fn(p, part)))(params)

  return grad_fn


def supply(
  names: Sequence[str] | None,
  loss_fn: PerExampleLossFn,
  params: Any,
  batch: Any,
  *,
  losses: jax.Array | None = None,
  kfac_stats_fn: Callable[[], Any] | None = None,
) -> dict[str, Any]:
  """The extra update arguments ``names`` for one step.

  Args:
    names: the arguments to build (a registry entry's ``extra_args``), or
      None for all of `NAMES`. Transforms ignore the ones they do not take
      (optax chains drop them; `optax.with_extra_args_support` makes a plain
      transform do the same), and what is unused costs nothing under jit.
    loss_fn: ``loss_fn(params, batch) -> losses``, the per-example losses,
      shape ``(B,)``.
    params: the parameters the step's gradient is taken at.
    batch: the step's batch, a pytree with the leading batch axis ``B``.
    losses: ``loss_fn(params, batch)`` when the caller has it already (the
      training loop computes it with the gradient); computed otherwise.
    kfac_stats_fn: the ``kfac_stats`` supplier, or None where there is no
      model (then ``kfac_stats`` is left out of ``names=None`` and is an
      error when named).

  Returns:
    Keyword arguments for ``tx.update``.

  Raises:
    ValueError: for a name not in `NAMES`, losses that are not a vector, or
      ``kfac_stats`` named without ``kfac_stats_fn``.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo._src import extra_args
    >>> loss_fn = lambda p, x: (x * p) ** 2
    >>> extra = extra_args.supply(None, loss_fn, 2.0, jnp.array([1.0, 3.0]))
    >>> float(extra['value']), float(extra['value_sq_mean'])  # of 4 and 36
    (20.0, 656.0)
    >>> float(extra['grad_fn'](1.0)), float(extra['grad_fn'](1.0, 1, 2))
    (10.0, 18.0)
  """
  if names is None:
    names = tuple(
      n for n in NAMES if n != 'kfac_stats' or kfac_stats_fn is not None
    )
  names = tuple(names)
  unknown = [n for n in names if n not in NAMES]
  if unknown:
    raise ValueError(
      f'`names` must be extra update arguments in {NAMES}, got {unknown}.'
    )
  if 'kfac_stats' in names and kfac_stats_fn is None:
    raise ValueError(
      '`kfac_stats` needs `kfac_stats_fn` (the statistics come from the '
      "model's layers, not from a loss of the parameters)."
    )
  if losses is None and {'value', 'value_sq_mean', 'value_variance'} & set(
    names
  ):
    losses = loss_fn(params, batch)
  if losses is not None and jnp.ndim(losses) != 1:
    raise ValueError(
      '`loss_fn` must return per-example losses of shape (B,), got shape '
      f'{jnp.shape(losses)}.'
    )
  builders = {
    'value': lambda: jnp.mean(losses),
    'value_sq_mean': lambda: jnp.mean(jnp.square(losses)),
    'value_variance': lambda: jnp.mean(jnp.square(losses)),
    'grad_fn': lambda: make_grad_fn(loss_fn, batch),
    'kfac_stats': lambda: kfac_stats_fn,
  }
  return {n: builders[n]() for n in names}
