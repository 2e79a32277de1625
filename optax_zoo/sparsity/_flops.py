"""FLOPs of a sparse model, counted as the RigL paper counts them."""

from __future__ import annotations

import math
from collections.abc import Sequence

from optax_zoo._src import validation as v

__all__ = ['dense_flops', 'inference_flops', 'training_flops']

_METHODS = ('dense', 'static', 'set', 'rigl')


def dense_flops(shape: Sequence[int], positions: int = 1) -> float:
  """Forward FLOPs of a dense kernel: 2 per multiply-add.

  Args:
    shape: the kernel's shape: ``(n_in, n_out)`` for a dense layer,
      ``(h, w, c_in, c_out)`` for a convolution.
    positions: the outputs each kernel weight is used for per example
      (1 for a dense layer, the output's height times width for a
      convolution).

  Returns:
    ``2 * prod(shape) * positions``.
  """
  v.check_int('positions', positions, minimum=1)
  return 2.0 * math.prod(shape) * positions


def inference_flops(
  layer_flops: Sequence[float], densities: Sequence[float]
) -> float:
  r"""Forward FLOPs of the sparse model, :math:`f_S = \sum_l d_l f_l`.

  Each layer's dense forward FLOPs ``f_l`` (`dense_flops`) scale with its
  density ``d_l`` (`mask_densities`, `sparsity_distribution`); layers
  left out count nothing (add their dense FLOPs with density 1).

  Example:
    >>> from optax_zoo.sparsity import dense_flops, inference_flops
    >>> flops = [dense_flops((784, 300)), dense_flops((300, 100))]
    >>> inference_flops(flops, [0.1, 1.0]) / sum(flops)  # doctest: +ELLIPSIS
    0.2...
  """
  if len(layer_flops) != len(densities):
    raise ValueError(
      '`densities` must have one entry per layer of `layer_flops`, got '
      f'{len(densities)} for {len(layer_flops)}.'
    )
  for d in densities:
    v.check_in_range('densities', d, 0.0, 1.0, high_inclusive=True)
  return float(sum(f * d for f, d in zip(layer_flops, densities, strict=True)))


def training_flops(
  layer_flops: Sequence[float],
  densities: Sequence[float],
  *,
  method: str,
  total_steps: int,
  update_every: int = 100,
  end_fraction: float = 0.75,
) -> float:
  r"""Training FLOPs per example over ``total_steps`` steps (RigL, App. H).

  A step costs three forward passes (forward, and the backward's gradients
  of activations and of weights): ``3 f_D`` dense, ``3 f_S`` for a static
  or SET mask (SET's mask updates are negligible). A RigL mask update
  needs the dense weight gradient, ``2 f_S + f_D``; with ``U`` updates
  (steps ``t < end_fraction * total_steps`` with ``t % update_every ==
  0``, as `rigl` schedules them)

  .. math::
    F_{RigL} = 3 f_S (T - U) + (2 f_S + f_D) U,

  the paper's average :math:`(3 f_S \Delta T + 2 f_S + f_D) / (\Delta T +
  1)` per step when updates run throughout, with its ``Delta T`` the
  ``update_every - 1`` training steps between two updates (a `rigl` mask
  update replaces a training step). Only the masked layers count: pass
  the rest with density 1.

  Args:
    layer_flops: each layer's dense forward FLOPs (`dense_flops`).
    densities: each layer's density.
    method: 'dense', 'static', 'set' or 'rigl'.
    total_steps: the training length ``T``.
    update_every: RigL's ``Delta T``.
    end_fraction: RigL's last update before ``end_fraction * T``.

  Returns:
    The total FLOPs; divide by ``3 * sum(layer_flops) * total_steps`` for
    the fraction of dense training.

  Example:
    >>> from optax_zoo.sparsity import training_flops
    >>> f = training_flops([100.0], [0.1], method='rigl', total_steps=1000,
    ...                    update_every=100, end_fraction=1.0)
    >>> round(f / (3 * 100.0 * 1000), 4)
    0.103
  """
  v.check_choice('method', method, _METHODS)
  v.check_int('total_steps', total_steps, minimum=1)
  v.check_int('update_every', update_every, minimum=1)
  v.check_in_range(
    'end_fraction',
    end_fraction,
    0.0,
    1.0,
    low_inclusive=False,
    high_inclusive=True,
  )
  f_dense = float(sum(layer_flops))
  if method == 'dense':
    return 3.0 * f_dense * total_steps
  f_sparse = inference_flops(layer_flops, densities)
  if method != 'rigl':
    return 3.0 * f_sparse * total_steps
  end = end_fraction * total_steps
  updates = sum(1 for t in range(0, total_steps, update_every) if t < end)
  return (
    3.0 * f_sparse * (total_steps - updates)
    + (2.0 * f_sparse + f_dense) * updates
  )
