"""SWA-Gaussian (SWAG): a Gaussian posterior from the SGD trajectory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v
from optax_zoo.averaging import _tree

__all__ = ['SWAGState', 'bayesian_model_average', 'swag', 'swag_sample']

# swag.py's var_clamp: keeps sqrt(var) finite where rounding makes the
# variance estimate negative.
_VAR_CLAMP = 1e-30


class SWAGState(NamedTuple):
  """State of `swag`.

  Attributes:
    count: steps taken, int32.
    n_models: snapshots collected into the moments, int32.
    pending: whether the parameters after the last step are a snapshot not
      yet collected (bool): they reach the wrapper as the next update's
      ``params``; `optax_zoo.eval_params` and `swag_sample` given
      ``params`` collect them meanwhile.
    mean: first moment of the snapshots (the SWA mean).
    sq_mean: second (uncentered) moment of the snapshots.
    deviations: the last ``rank`` deviations ``theta - mean`` (each against
      the mean after its snapshot), leaves of shape ``(rank, *param.shape)``,
      a ring buffer; unfilled columns are zero.
    inner_state: the inner optimizer's state.

  The moments and deviations are kept in the accumulator dtype.
  """

  count: jax.Array
  n_models: jax.Array
  pending: jax.Array
  mean: Any
  sq_mean: Any
  deviations: Any
  inner_state: optax.OptState

  def eval_params(self, params: Any) -> Any:
    """The SWA mean with ``params`` collected if due; else ``params``."""
    n, due = _tree.scalar(self.n_models), _tree.scalar(self.pending)
    return _tree.map_params(
      lambda p, m: jnp.where((n > 0) | due, _mean(m, p, n, due), p),
      params,
      self.mean,
    )


def _mean(m, theta, n, due):
  """The first moment with ``theta`` collected where ``due``."""
  w = (1.0 / (n + 1)).astype(m.dtype)
  return jnp.where(due, m * (1 - w) + theta.astype(m.dtype) * w, m)


def _collect(m, sq, dev, theta, n, due, rank):
  """The moments and deviations with ``theta`` collected where ``due``.

  As ``SWAG.collect_model`` in swag.py: the deviation is taken against the
  updated mean; ``dev`` is a ring buffer of ``rank`` columns.
  """
  theta = theta.astype(m.dtype)
  w = (1.0 / (n + 1)).astype(m.dtype)
  new_m = _mean(m, theta, n, True)
  new_sq = sq * (1 - w) + jnp.square(theta) * w
  new_dev = dev.at[n % rank].set((theta - new_m).astype(dev.dtype))
  pick = lambda new, old: jnp.where(due, new, old).astype(old.dtype)
  return pick(new_m, m), pick(new_sq, sq), pick(new_dev, dev)


def swag(
  inner: optax.GradientTransformation,
  *,
  rank: int = 20,
  start_step: jax.typing.ArrayLike,
  every_k: jax.typing.ArrayLike = 1,
  accumulator_dtype: Any | None = None,
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

  :math:`\theta` is the ``params`` the next update is handed, the weights
  training actually reached, so the wrapper may sit anywhere in a chain.
  The moments are kept in float32 for bfloat16 or float16 parameters
  (``accumulator_dtype``): in bfloat16 the diagonal variance
  :math:`\overline{\theta^2} - \bar\theta^2` is mostly rounding error.

  The state adds ``rank + 2`` parameter copies (in the accumulator dtype)
  to the inner state.

  Args:
    inner: the optimizer that trains the weights (SGD in the paper).
    rank: :math:`K`, deviation columns kept, an integer >= 1 (static: pass
      it in ``static_args`` of `optax.inject_hyperparams`).
    start_step: completed steps before the first snapshot, an integer >= 0.
    every_k: steps between snapshots, an integer >= 1.
    accumulator_dtype: dtype of the moments and deviations; None: float32
      for parameters narrower than float32, else the parameters' dtype.

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
    >>> sample = optax_zoo.swag_sample(state, jax.random.key(0), params=params)
    >>> sample.shape
    (2,)

  References:
    Maddox et al., `A Simple Baseline for Bayesian Uncertainty in Deep
    Learning <https://arxiv.org/abs/1902.02476>`_, 2019; reference code
    wjmaddox/swa_gaussian, ``swag/posteriors/swag.py``.

  Deviations: counted in steps, not epochs.
  """
  v.check_transform('inner', inner)
  v.check_int('rank', rank, minimum=1)
  v.check_schedule_args(start_step, every_k)
  v.check_float_dtype('accumulator_dtype', accumulator_dtype)
  inner = optax.with_extra_args_support(inner)
  dtype_fn = _tree.accumulator_dtype(accumulator_dtype)

  def init_fn(params):
    mean = _tree.copy(params, dtype_fn)
    return SWAGState(
      count=jnp.zeros([], jnp.int32),
      n_models=jnp.zeros([], jnp.int32),
      pending=jnp.zeros([], bool),
      mean=mean,
      sq_mean=jax.tree.map(jnp.square, mean),
      deviations=jax.tree.map(
        lambda m: jnp.zeros((rank, *m.shape), m.dtype), mean
      ),
      inner_state=inner.init(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError('swag needs `params` in update().')
    updates, inner_state = inner.update(
      updates, state.inner_state, params, **extra_args
    )
    n, due = state.n_models, state.pending
    out = jax.tree.map(
      lambda m, sq, dev, p: _collect(m, sq, dev, p, n, due, rank),
      state.mean,
      state.sq_mean,
      state.deviations,
      params,
    )
    unzip = lambda i: jax.tree.map(lambda _, o: o[i], state.mean, out)
    return updates, SWAGState(
      count=optax.safe_increment(state.count),
      n_models=n + due.astype(jnp.int32),
      pending=_tree.is_event(state.count + 1, start_step, every_k),
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
  params: Any | None = None,
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
    params: the current parameters. A snapshot due at the last step is
      collected from them (they reach the state only at the next update),
      and the sample takes their structure and dtype. Without them the
      sample is in the accumulator dtype and a pending snapshot is left out.
    scale: :math:`s`, the covariance scale, >= 0.
    diagonal_only: draw from the diagonal part only (SWAG-Diagonal).

  Returns:
    Weights with the structure of the parameters.

  Raises:
    ValueError: without a `SWAGState`, or (when the state is concrete)
      before the first snapshot, or without ``params`` while a snapshot is
      pending.
  """
  v.check_non_negative('scale', scale)
  state = _tree.find_state(opt_state, SWAGState)
  n, due = _tree.scalar(state.n_models), _tree.scalar(state.pending)
  concrete = not isinstance(n, jax.core.Tracer) and not isinstance(
    due, jax.core.Tracer
  )
  if concrete and params is None and bool(due):
    raise ValueError(
      '`params` must be given: the parameters after the last step are a '
      'SWAG snapshot not yet collected; call '
      '`swag_sample(opt_state, key, params=params)`.'
    )
  if concrete and int(n) + (params is not None and bool(due)) < 1:
    raise ValueError(
      '`opt_state` must hold at least one SWAG snapshot, got 0: sample after '
      '`start_step`.'
    )
  rank = jax.tree.leaves(state.deviations)[0].shape[0]
  k1, k2 = jax.random.split(key)
  z2 = jax.random.normal(k2, (rank,))

  def draw(m, sq, dev, k):
    var = jnp.maximum(sq - jnp.square(m), _VAR_CLAMP)
    noise = jnp.sqrt(var) * jax.random.normal(k, m.shape, m.dtype)
    if not diagonal_only:
      low_rank = jnp.tensordot(z2.astype(dev.dtype), dev, axes=1)
      noise = noise + low_rank / jnp.sqrt(max(rank - 1, 1)).astype(m.dtype)
    return m + jnp.sqrt(scale).astype(m.dtype) * noise

  mean, sq_mean, deviations = (
    jax.tree.leaves(t) for t in (state.mean, state.sq_mean, state.deviations)
  )
  keys = jax.random.split(k1, len(mean))
  if params is None:
    leaves = [
      draw(*x) for x in zip(mean, sq_mean, deviations, keys, strict=True)
    ]
    return jax.tree.unflatten(jax.tree.structure(state.mean), leaves)
  p_leaves, treedef = jax.tree.flatten(params)
  if len(p_leaves) != len(mean):
    raise ValueError(
      '`params` must have the structure of the parameters the optimizer '
      f'was initialized with: {len(p_leaves)} leaves, the state has '
      f'{len(mean)}.'
    )
  leaves = []
  for m, sq, dev, k, p in zip(
    mean, sq_mean, deviations, keys, p_leaves, strict=True
  ):
    m, sq, dev = _collect(m, sq, dev, p, n, due, rank)
    leaves.append(draw(m, sq, dev, k).astype(p.dtype))
  return jax.tree.unflatten(treedef, leaves)


def bayesian_model_average(
  predict_fn: Callable[[Any], jax.Array],
  opt_state: optax.OptState,
  key: jax.Array,
  *,
  num_samples: int = 30,
  params: Any | None = None,
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
    params: the current parameters, as in `swag_sample`.
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
    ...   jax.nn.softmax, state, jax.random.key(0), num_samples=4,
    ...   params=params)
    >>> float(probs.sum())
    1.0
  """
  v.check_int('num_samples', num_samples, minimum=1)
  total = None
  for k in jax.random.split(key, num_samples):
    sample = swag_sample(
      opt_state, k, params=params, scale=scale, diagonal_only=diagonal_only
    )
    probs = predict_fn(sample)
    total = probs if total is None else total + probs
  return total / num_samples
