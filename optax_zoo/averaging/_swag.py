"""SWA-Gaussian (SWAG): a Gaussian posterior from the SGD trajectory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_zoo._src import validation as v
from optax_zoo.averaging import _tree
from optax_zoo.averaging._swa import _check_schedule_args

__all__ = ['SWAGState', 'bayesian_model_average', 'swag', 'swag_sample']

# swag.py's var_clamp: keeps sqrt(var) finite where rounding makes the
# variance estimate negative.
_VAR_CLAMP = 1e-30


class SWAGState(NamedTuple):
  """State of `swag`.

  Attributes:
    count: steps taken, int32.
    n_models: snapshots collected, int32.
    mean: first moment of the snapshots (the SWA mean).
    sq_mean: second (uncentered) moment of the snapshots.
    deviations: the last ``rank`` deviations ``theta - mean`` (each against
      the mean after its snapshot), leaves of shape ``(rank, *param.shape)``,
      a ring buffer; unfilled columns are zero.
    inner_state: the inner optimizer's state.
  """

  count: jax.Array
  n_models: jax.Array
  mean: Any
  sq_mean: Any
  deviations: Any
  inner_state: optax.OptState

  def eval_params(self, params: Any) -> Any:
    """The SWA mean; ``params`` until the first snapshot."""
    return _tree.mean_or_params(self.n_models, self.mean, params)


def swag(
  inner: optax.GradientTransformation,
  *,
  rank: int = 20,
  start_step: jax.typing.ArrayLike,
  every_k: jax.typing.ArrayLike = 1,
) -> optax.GradientTransformationExtraArgs:
  r"""SWA-Gaussian (Maddox et al., 2019).

  At each snapshot (the steps of `optax_zoo.swa`) it updates the first and
  second moments and stores the deviation from the new mean, keeping the
  last :math:`K` = ``rank`` of them as the columns of :math:`D`:

  .. math::
    \bar\theta \leftarrow \tfrac{n\bar\theta + \theta}{n+1},\quad
    \overline{\theta^2} \leftarrow
    \tfrac{n\overline{\theta^2} + \theta^2}{n+1},\quad
    D \leftarrow [D, \theta - \bar\theta]_{\text{last }K}.

  The posterior is
  :math:`\mathcal N(\bar\theta, \tfrac12(\Sigma_{diag} + \tfrac{DD^\top}
  {K-1}))` with :math:`\Sigma_{diag} = \overline{\theta^2} - \bar\theta^2`;
  draw from it with `swag_sample` and average predictions with
  `bayesian_model_average`. `optax_zoo.eval_params` returns the mean.

  The state adds ``rank + 2`` parameter copies to the inner state.

  Args:
    inner: the optimizer that trains the weights (SGD in the paper).
    rank: :math:`K`, deviation columns kept, an integer >= 1 (static: pass
      it in ``static_args`` of `optax.inject_hyperparams`).
    start_step: completed steps before the first snapshot, an integer >= 0.
    every_k: steps between snapshots, an integer >= 1.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.swag(optax.sgd(0.1), rank=2, start_step=0)
    >>> params = jnp.array([1.0, -1.0])
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...   updates, state = tx.update(params, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> sample = optax_zoo.swag_sample(state, jax.random.key(0))
    >>> sample.shape
    (2,)

  References:
    Maddox et al., `A Simple Baseline for Bayesian Uncertainty in Deep
    Learning <https://arxiv.org/abs/1902.02476>`_, 2019; reference code
    wjmaddox/swa_gaussian, ``swag/posteriors/swag.py``.

  Deviations: counted in steps, not epochs; moments kept in the parameters'
  dtype.
  """
  v.check_transform('inner', inner)
  v.check_int('rank', rank, minimum=1)
  _check_schedule_args(start_step, every_k)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return SWAGState(
      count=jnp.zeros([], jnp.int32),
      n_models=jnp.zeros([], jnp.int32),
      mean=_tree.copy(params),
      sq_mean=jax.tree.map(jnp.square, params),
      deviations=jax.tree.map(
        lambda p: jnp.zeros((rank, *p.shape), p.dtype), params
      ),
      inner_state=inner.init(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError('swag needs `params` in update().')
    updates, inner_state = inner.update(
      updates, state.inner_state, params, **extra_args
    )
    snap = _tree.is_event(state.count + 1, start_step, every_k)
    n = state.n_models

    def moments(m, sq, dev, p, u):
      theta = p + u
      w = (1.0 / (n + 1)).astype(m.dtype)
      new_m = m * (1 - w) + theta * w
      new_sq = sq * (1 - w) + jnp.square(theta) * w
      new_dev = dev.at[n % rank].set((theta - new_m).astype(dev.dtype))
      pick = lambda new, old: jnp.where(snap, new, old).astype(old.dtype)
      return pick(new_m, m), pick(new_sq, sq), pick(new_dev, dev)

    out = jax.tree.map(
      moments, state.mean, state.sq_mean, state.deviations, params, updates
    )
    unzip = lambda i: jax.tree.map(lambda _, o: o[i], params, out)
    return updates, SWAGState(
      count=optax.safe_increment(state.count),
      n_models=n + snap.astype(jnp.int32),
      mean=unzip(0),
      sq_mean=unzip(1),
      deviations=unzip(2),
      inner_state=inner_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def swag_sample(
  opt_state: optax.OptState,
  key: jax.Array,
  *,
  scale: jax.typing.ArrayLike = 0.5,
  diagonal_only: bool = False,
) -> Any:
  r"""Draws weights from the SWAG posterior in ``opt_state``.

  .. math::
    \tilde\theta = \bar\theta + \sqrt{s}\,\Big(\Sigma_{diag}^{1/2} z_1
    + \tfrac{1}{\sqrt{K-1}} D z_2\Big),\quad z_1, z_2 \sim \mathcal N(0, I),

  as ``SWAG.sample`` in swag.py (:math:`s` = ``scale``; the paper's
  :math:`s = 1/2`). :math:`K` is the registered ``rank`` (the reference's
  ``max_num_models``, also before all columns are filled); with ``rank=1``
  the low-rank term is divided by 1.

  Args:
    opt_state: a state holding a `SWAGState` (anywhere in a chain).
    key: a JAX PRNG key.
    scale: :math:`s`, the covariance scale, >= 0.
    diagonal_only: draw from the diagonal part only (SWAG-Diagonal).

  Returns:
    Weights with the structure of the parameters.

  Raises:
    ValueError: without a `SWAGState`, or (when the state is concrete) before
      the first snapshot.
  """
  v.check_non_negative('scale', scale)
  state = _tree.find_state(opt_state, SWAGState)
  n_models = state.n_models
  if not isinstance(n_models, jax.core.Tracer) and np.asarray(n_models) < 1:
    raise ValueError(
      '`opt_state` must hold at least one SWAG snapshot, got 0: sample after '
      '`start_step`.'
    )
  leaves, treedef = jax.tree.flatten(state.mean)
  k1, k2 = jax.random.split(key)
  z1 = jax.random.split(k1, len(leaves))
  rank = jax.tree.leaves(state.deviations)[0].shape[0]
  z2 = jax.random.normal(k2, (rank,))

  def draw(m, sq, dev, k):
    var = jnp.maximum(sq - jnp.square(m), _VAR_CLAMP)
    noise = jnp.sqrt(var) * jax.random.normal(k, m.shape, m.dtype)
    if not diagonal_only:
      low_rank = jnp.tensordot(z2.astype(dev.dtype), dev, axes=1)
      noise = noise + low_rank / jnp.sqrt(max(rank - 1, 1)).astype(m.dtype)
    return (m + jnp.sqrt(scale).astype(m.dtype) * noise).astype(m.dtype)

  return jax.tree.unflatten(
    treedef,
    [
      draw(m, sq, d, k)
      for m, sq, d, k in zip(
        leaves,
        treedef.flatten_up_to(state.sq_mean),
        treedef.flatten_up_to(state.deviations),
        z1,
        strict=True,
      )
    ],
  )


def bayesian_model_average(
  predict_fn: Callable[[Any], jax.Array],
  opt_state: optax.OptState,
  key: jax.Array,
  *,
  num_samples: int = 30,
  scale: jax.typing.ArrayLike = 0.5,
  diagonal_only: bool = False,
) -> jax.Array:
  r"""Averages predicted probabilities over SWAG posterior samples.

  .. math::
    p(y \mid x) \approx \frac1S \sum_{s=1}^S p(y \mid x, \tilde\theta_s),
    \quad \tilde\theta_s \sim \text{SWAG}.

  Models with BatchNorm need fresh statistics for every sample (as the
  reference's ``bn_update`` after each ``sample``): let ``predict_fn`` call
  `optax_zoo.update_batch_stats` before predicting.

  Args:
    predict_fn: maps weights to class probabilities (not logits).
    opt_state: a state holding a `SWAGState`.
    key: a JAX PRNG key, split once per sample.
    num_samples: :math:`S`, an integer >= 1.
    scale: covariance scale, as in `swag_sample`.
    diagonal_only: as in `swag_sample`.

  Returns:
    The mean of ``predict_fn`` over the samples.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.swag(optax.sgd(0.1), rank=2, start_step=0)
    >>> params = jnp.array([1.0, -1.0])
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...   updates, state = tx.update(params, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> probs = optax_zoo.bayesian_model_average(
    ...   jax.nn.softmax, state, jax.random.key(0), num_samples=4)
    >>> float(probs.sum())
    1.0
  """
  v.check_int('num_samples', num_samples, minimum=1)
  total = None
  for k in jax.random.split(key, num_samples):
    sample = swag_sample(opt_state, k, scale=scale, diagonal_only=diagonal_only)
    probs = predict_fn(sample)
    total = probs if total is None else total + probs
  return total / num_samples
