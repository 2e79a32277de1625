"""Weight rescaling (WRS): fixed weight norms instead of weight decay.

Non-finite updates are not sanitized: a NaN from the inner optimizer in a
rescaled unit makes its norm NaN and so the whole unit's update NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v

__all__ = ['WeightRescalingState', 'weight_rescaling']

Mask = Any | Callable[[Any], Any]


class WeightRescalingState(NamedTuple):
  """State of `weight_rescaling`.

  Attributes:
    count: steps taken, int32.
    target_norms: per rescaled leaf, the norm of each unit to restore
      (float32, with the leaf's rank and size 1 on the reduced axes); an
      empty array for leaves left alone.
    inner_state: the wrapped optimizer's state.
  """

  count: jax.Array
  target_norms: Any
  inner_state: optax.OptState


def _kernels(params: Any) -> Any:
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def _unit_norms(x: jax.Array, per_unit: bool) -> jax.Array:
  """Norms over all axes but the last (one per output unit) or over all."""
  axes = tuple(range(x.ndim - 1)) if per_unit and x.ndim >= 2 else None
  return jnp.sqrt(
    jnp.sum(jnp.square(x.astype(jnp.float32)), axis=axes, keepdims=True)
  )


def weight_rescaling(
  inner: optax.GradientTransformation,
  mask: Mask | None = None,
  every_k: jax.typing.ArrayLike = 1,
  target_norm: jax.typing.ArrayLike | None = None,
  *,
  per_unit: bool = True,
) -> optax.GradientTransformationExtraArgs:
  r"""Weight rescaling (Liu et al., 2021) around any optimizer.

  Weights followed by BatchNorm are scale invariant: the loss depends on
  their direction only, yet every SGD step grows their norm (the step is
  orthogonal to the weight), which shrinks the effective learning rate and
  lets noise orthogonal to the input features pile up. Weight decay fights
  this by shrinking them; WRS instead puts the norm back. After the inner
  optimizer's step, every ``every_k`` steps, each selected weight unit
  :math:`w` is projected back to its target norm:

  .. math::
    w' = w + u_t,\qquad
    w \leftarrow \rho \, \frac{w'}{\|w'\|},

  where :math:`u_t` is the inner update and :math:`\rho` the unit's norm at
  ``init`` (default) or ``target_norm``. The projection is folded into the
  returned update (:math:`w - w_{\text{old}}`), so the training loop applies
  it as any other. A unit is one output feature of a kernel, the norm taken
  over all axes but the last (Flax's layout for ``Dense`` and ``Conv``), or
  the whole leaf with ``per_unit=False`` and for leaves of rank < 2. A unit
  of norm 0 is left as it is.

  Args:
    inner: the optimizer whose steps are rescaled.
    mask: which leaves to rescale: a pytree of Python bools with the
      structure of the params, or a function of the params returning one.
      None: every leaf of rank >= 2 (kernels; not biases or BatchNorm
      scales, which are not scale invariant).
    every_k: steps between rescalings, an integer >= 1.
    target_norm: the norm :math:`\rho` of every unit, > 0, or None to keep
      each unit's norm at initialization.
    per_unit: one norm per output unit (else one per leaf).

  Returns:
    An `optax.GradientTransformationExtraArgs`; extra update arguments go to
    ``inner``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax_zoo.weight_rescaling(optax.sgd(0.5))
    >>> params = {'w': jnp.array([[3.0], [4.0]]), 'b': jnp.array([1.0])}
    >>> state = tx.init(params)
    >>> grads = {'w': jnp.array([[-4.0], [3.0]]), 'b': jnp.array([1.0])}
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)
    >>> float(jnp.linalg.norm(params['w'])), params['b']  # norm kept at 5
    (5.0, Array([0.5], dtype=float32))

  References:
    Liu et al., `The Implicit Biases of Stochastic Gradient Descent on Deep
    Neural Networks with Batch Normalization
    <https://arxiv.org/abs/2102.03497>`_, 2021 (v2: `Weight Rescaling:
    Effective and Robust Regularization for Deep Neural Networks with Batch
    Normalization`, which rescales to unit norm: ``target_norm=1.0``).

  Deviations: no reference code is public, and this statement rests on the
  two versions' abstracts: v1 proposes WRS instead of weight decay, the norms
  of scale-invariant weights being constant in continuous time and growing in
  discrete steps (so we restore the norm at initialization by default); v2
  rescales to unit norm (``target_norm=1.0``). One norm per output unit,
  applied after every step by default, is our reading of "weight vectors
  ... or convolution kernels"; ``per_unit`` and ``every_k`` cover the other
  readings.
  """
  v.check_transform('inner', inner)
  v.check_int('every_k', every_k, minimum=1)
  if target_norm is not None:
    v.check_positive('target_norm', target_norm)
  inner = optax.with_extra_args_support(inner)
  if mask is None:
    mask = _kernels

  def selected(params):
    return mask(params) if callable(mask) else mask

  def init_fn(params):
    def target(p, rescaled):
      if not rescaled:
        return jnp.zeros((0,), jnp.float32)
      norms = _unit_norms(jnp.asarray(p), per_unit)
      if target_norm is None:
        return norms
      return jnp.full_like(norms, target_norm)

    return WeightRescalingState(
      count=jnp.zeros([], jnp.int32),
      target_norms=jax.tree.map(target, params, selected(params)),
      inner_state=inner.init(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError('weight_rescaling needs `params` in update().')
    updates, inner_state = inner.update(
      updates, state.inner_state, params, **extra_args
    )
    count = optax.safe_increment(state.count)
    rescale = count % every_k == 0

    def leaf(u, p, target, rescaled):
      if not rescaled:
        return u
      p32 = p.astype(jnp.float32)
      new = p32 + u.astype(jnp.float32)
      norms = _unit_norms(new, per_unit)
      # A NaN norm gives a NaN scale: the whole unit shows the NaN.
      scale = jnp.where(norms == 0, 1.0, target / norms)
      return jnp.where(rescale, new * scale - p32, u).astype(u.dtype)

    updates = jax.tree.map(
      leaf, updates, params, state.target_norms, selected(params)
    )
    return updates, WeightRescalingState(count, state.target_norms, inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
