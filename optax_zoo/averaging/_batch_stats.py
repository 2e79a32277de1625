"""Recomputing BatchNorm statistics for averaged or sampled weights."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import numpy as np
from flax import nnx

from optax_zoo.averaging._eval_params import eval_params

__all__ = ['eval_model', 'update_batch_stats']


def _batch_norms(model: nnx.Module) -> list[nnx.BatchNorm]:
  return [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]


def update_batch_stats(
  model: nnx.Module, params: Any, batches: Iterable[jax.Array]
) -> nnx.Module:
  r"""A copy of ``model`` with ``params`` and BatchNorm statistics for them.

  Averaged (SWA) or sampled (SWAG) weights never produced the running
  statistics stored in the model, so BatchNorm must see the training data
  again (Izmailov et al., 2018, section 3.2). As ``torch.optim.swa_utils.
  update_bn`` with ``momentum=None``, each BatchNorm's running mean and
  variance become the plain average over ``batches`` of the per-batch
  statistics:

  .. math::
    \mu = \tfrac1B \textstyle\sum_b \mu_b,\quad
    \sigma^2 = \tfrac1B \textstyle\sum_b \sigma^2_b,

  with Flax's (biased) per-batch variance. The input model is not changed.

  Args:
    model: a Flax NNX module; parameters are replaced by ``params``.
    params: an `nnx.State` of the model's `nnx.Param` variables (for example
      ``eval_params(opt_state, params)`` of the training loop).
    batches: an iterable of input arrays (no labels), at least one.

  Returns:
    A new module in eval mode; a model without BatchNorm just gets
    ``params``.

  Example:
    >>> import jax.numpy as jnp, optax_zoo
    >>> from flax import nnx
    >>> from optax_zoo.training import ResNet1D
    >>> model = ResNet1D(rngs=nnx.Rngs(0))
    >>> params = nnx.state(model, nnx.Param)
    >>> x = jnp.ones((4, 40))
    >>> fresh = optax_zoo.update_batch_stats(model, params, [x, 2 * x])
    >>> fresh(x).shape
    (4, 10)
  """
  twin = nnx.clone(model)
  nnx.update(twin, params)
  norms = _batch_norms(twin)
  if not norms:
    twin.eval()
    return twin
  # Momentum 0 makes each forward pass store its own batch statistics.
  momenta = [bn.momentum for bn in norms]
  for bn in norms:
    bn.momentum = 0.0
  twin.train()
  graphdef, state = nnx.split(twin)

  @jax.jit
  def batch_stats(state, x):
    m = nnx.merge(graphdef, state)
    m(x)
    return [(bn.mean[...], bn.var[...]) for bn in _batch_norms(m)]

  sums, count = None, 0
  for x in batches:
    stats = batch_stats(state, x)
    sums = stats if sums is None else jax.tree.map(np.add, sums, stats)
    count += 1
  if count == 0:
    raise ValueError('`batches` must hold at least one batch, got none.')
  for bn, momentum, (mean, var) in zip(norms, momenta, sums, strict=True):
    bn.mean[...] = mean / count
    bn.var[...] = var / count
    bn.momentum = momentum
  twin.eval()
  return twin


def eval_model(
  optimizer: Any,
  model: nnx.Module,
  batches: Iterable[jax.Array] | None = None,
) -> nnx.Module:
  """A copy of ``model`` with the weights to evaluate, ready to evaluate.

  The one evaluation path for Flax NNX: the weights are
  ``optax_zoo.eval_params(optimizer, model)`` (the SWA mean, the lookahead
  slow weights, ... or the model's own where nothing averages); given
  ``batches``, BatchNorm's statistics are recomputed for them as in
  `update_batch_stats`. Averaged weights never produced the statistics
  stored in the model, so pass training batches whenever the model has
  BatchNorm. The input model is not changed.

  Args:
    optimizer: the `nnx.Optimizer` (or its ``opt_state``, for a
      ``wrt=nnx.Param`` optimizer).
    model: the trained model.
    batches: an iterable of training inputs (no labels) for BatchNorm, or
      None to keep the stored statistics.

  Returns:
    A new module in eval mode.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_zoo
    >>> from flax import nnx
    >>> rngs = nnx.Rngs(0)
    >>> model = nnx.Sequential(
    ...   nnx.Linear(3, 4, rngs=rngs), nnx.BatchNorm(4, rngs=rngs))
    >>> opt = nnx.Optimizer(
    ...   model, optax_zoo.swa(optax.sgd(0.1), start_step=0), wrt=nnx.Param)
    >>> x = jax.random.normal(jax.random.key(0), (8, 3))
    >>> for _ in range(3):
    ...   _ = opt.update(model, nnx.grad(lambda m: jnp.sum(m(x) ** 3))(model))
    >>> averaged = optax_zoo.eval_model(opt, model, [x, 2 * x])
    >>> averaged(x).shape
    (8, 4)
  """
  params = eval_params(optimizer, model)
  if batches is not None:
    return update_batch_stats(model, params, batches)
  twin = nnx.clone(model)
  nnx.update(twin, params)
  twin.eval()
  return twin
