"""Masks beside the parameters, and how sparsity is spread over layers."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_zoo._src import tree_utils
from optax_zoo._src import validation as v

__all__ = [
  'DISTRIBUTIONS',
  'apply_masks',
  'default_mask',
  'init_masks',
  'mask_densities',
  'random_mask',
  'sparse_leaves',
  'sparsity_distribution',
]

DISTRIBUTIONS = ('uniform', 'erdos_renyi', 'erk')


def default_mask(params: Any) -> Any:
  """True for the leaves sparsified by default: kernels, ``ndim >= 2``.

  Biases, norm scales and other vectors stay dense.
  """
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def _selection(mask: Any, params: Any) -> Any:
  """One Python bool per leaf: `default_mask` when ``mask`` is None."""
  return tree_utils.full_mask(default_mask if mask is None else mask, params)


def sparse_leaves(
  params: Any, mask: Any = None, keep_dense: Any = None
) -> list[bool]:
  """Per leaf of ``params`` (flattened), whether its mask may change:
  selected by ``mask`` and not in ``keep_dense`` (see `init_masks`)."""
  treedef = jax.tree.structure(params)
  selected = treedef.flatten_up_to(_selection(mask, params))
  dense = treedef.flatten_up_to(
    tree_utils.full_mask(False if keep_dense is None else keep_dense, params)
  )
  return [bool(s) and not bool(d) for s, d in zip(selected, dense, strict=True)]


def _raw_density(shape: Sequence[int], distribution: str) -> float:
  """Erdos-Renyi's unscaled density: sum of dimensions over their product."""
  if distribution == 'uniform':
    return 1.0
  dims = shape if distribution == 'erk' else shape[-2:]
  return float(np.sum(dims)) / float(np.prod(dims))


def sparsity_distribution(
  shapes: Sequence[Sequence[int]],
  sparsity: float,
  distribution: str = 'erk',
  *,
  dense: Collection[int] = (),
) -> list[float]:
  r"""Per-layer densities that hold ``1 - sparsity`` of all the weights.

  With ``'uniform'`` every layer has density ``1 - sparsity``. With
  ``'erdos_renyi'`` (ER) and ``'erk'`` (Erdos-Renyi-Kernel) layer ``l``
  of shape ``(n_1, ..., n_d)`` gets

  .. math::
    d_l = \epsilon \, \frac{\sum_i n_i}{\prod_i n_i},

  over the last two dimensions (fan-in and fan-out) for ER and over all
  of them, conv kernel dimensions included, for ERK; ``epsilon`` scales
  the densities so that the layers hold ``(1 - sparsity) * sum_l N_l``
  weights. A layer whose density would exceed 1 becomes dense (every layer
  with the largest raw density at once, as the reference does), it
  counts in full against that budget, and ``epsilon`` is solved again
  over the rest until no density exceeds 1. Layers listed in ``dense``
  are dense from the start and count against the budget the same way.

  Args:
    shapes: the shapes of the sparsified layers.
    sparsity: the overall fraction of zeros, in [0, 1).
    distribution: one of `DISTRIBUTIONS`.
    dense: indices into ``shapes`` of layers kept dense.

  Returns:
    One density in [0, 1] per layer.

  Raises:
    ValueError: for a sparsity outside [0, 1), an unknown distribution, or
      a ``sparsity`` the layers in ``dense`` alone make impossible.

  Example:
    >>> from optax_zoo.sparsity import sparsity_distribution
    >>> shapes = [(784, 300), (300, 100), (100, 10)]
    >>> [round(1 - d, 4) for d in sparsity_distribution(shapes, 0.9)]
    [0.9204, 0.7698, 0.0]

  References:
    Evci et al., `Rigging the Lottery: Making All Tickets Winners
    <https://arxiv.org/abs/1911.11134>`_, 2020 (``get_sparsities_erdos_renyi``
    in google-research/rigl).

  Deviations: the budget is counted in real numbers,
  ``(1 - sparsity) * N_l``; the reference counts
  ``N_l - floor(sparsity * N_l)`` per layer (less than one weight per
  layer apart). No ``erk_power_scale``; per-layer custom sparsities are
  not offered (leave such a layer out of the mask instead).
  """
  v.check_in_range('sparsity', sparsity, 0.0, 1.0)
  v.check_choice('distribution', distribution, DISTRIBUTIONS)
  sizes = [float(np.prod(s)) for s in shapes]
  dense = set(dense)
  for i in dense:
    if not 0 <= i < len(shapes):
      raise ValueError(
        f'`dense` must hold layer indices in [0, {len(shapes)}), got {i!r}.'
      )
  raw = [_raw_density(s, distribution) for s in shapes]
  while True:
    free = [i for i in range(len(shapes)) if i not in dense]
    budget = sum((1.0 - sparsity) * sizes[i] for i in free) - sum(
      sparsity * sizes[i] for i in dense
    )
    if budget < 0 or (budget > 0 and not free):
      raise ValueError(
        f'`sparsity` {sparsity!r} cannot be met: the layers kept dense '
        f'hold more than {1 - sparsity:.4g} of the weights; lower the '
        'sparsity or keep fewer layers dense.'
      )
    if not free:
      return [1.0] * len(shapes)
    eps = budget / sum(raw[i] * sizes[i] for i in free)
    largest = max(raw[i] for i in free)
    if largest * eps <= 1:
      return [1.0 if i in dense else eps * raw[i] for i in range(len(shapes))]
    dense |= {i for i in free if raw[i] == largest}


def random_mask(key: jax.Array, shape: Sequence[int], density: float):
  """A boolean mask with exactly ``round(density * size)`` True entries.

  The True positions are a uniformly random subset, drawn with ``key``.

  Args:
    key: a JAX PRNG key.
    shape: the mask's shape.
    density: the fraction of True entries, in [0, 1].

  Returns:
    A bool array of ``shape``.

  Example:
    >>> import jax
    >>> from optax_zoo.sparsity import random_mask
    >>> int(random_mask(jax.random.key(0), (10, 10), 0.25).sum())
    25
  """
  v.check_in_range('density', density, 0.0, 1.0, high_inclusive=True)
  size = math.prod(shape)
  n_ones = round(float(density) * size)
  perm = jax.random.permutation(key, size)
  return (perm < n_ones).reshape(shape)


def init_masks(
  key: jax.Array,
  params: Any,
  sparsity: float,
  distribution: str = 'erk',
  *,
  mask: Any | Callable[[Any], Any] | None = None,
  keep_dense: Any | Callable[[Any], Any] | None = None,
) -> Any:
  """Random masks beside ``params``, spread by `sparsity_distribution`.

  Args:
    key: a JAX PRNG key (split once per masked leaf).
    params: the parameters.
    sparsity: the overall fraction of zeros over the masked leaves.
    distribution: one of `DISTRIBUTIONS`.
    mask: which leaves are sparsified: a tree of bools over ``params`` (or a
      prefix of it) or a function of ``params`` returning one, as
      `optax.masked` takes; None: `default_mask` (leaves with ndim >= 2).
      The other leaves get an all-True mask and do not count.
    keep_dense: among the masked leaves, those kept dense but counted in
      the overall sparsity (same forms as ``mask``); None: none.

  Returns:
    A tree like ``params`` of bool arrays shaped like its leaves.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.sparsity import init_masks, mask_densities
    >>> params = {'w': jnp.ones((8, 8)), 'b': jnp.ones(8)}
    >>> masks = init_masks(jax.random.key(0), params, 0.75)
    >>> {k: float(d) for k, d in mask_densities(masks).items()}
    {'b': 1.0, 'w': 0.25}
  """
  selected = _selection(mask, params)
  dense_tree = tree_utils.full_mask(
    False if keep_dense is None else keep_dense, params
  )
  leaves, treedef = jax.tree.flatten(params)
  chosen = [i for i, s in enumerate(treedef.flatten_up_to(selected)) if s]
  dense_flags = treedef.flatten_up_to(dense_tree)
  shapes = [jnp.shape(leaves[i]) for i in chosen]
  dense = [j for j, i in enumerate(chosen) if dense_flags[i]]
  densities = sparsity_distribution(shapes, sparsity, distribution, dense=dense)
  keys = jax.random.split(key, max(1, len(chosen)))
  masks = [jnp.ones(jnp.shape(p), bool) for p in leaves]
  for j, i in enumerate(chosen):
    masks[i] = random_mask(keys[j], shapes[j], densities[j])
  return treedef.unflatten(masks)


def apply_masks(params: Any, masks: Any) -> Any:
  """``params`` with every entry off its mask set to zero.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo.sparsity import apply_masks
    >>> apply_masks({'w': jnp.ones(3)}, {'w': jnp.array([True, False, True])})
    {'w': Array([1., 0., 1.], dtype=float32)}
  """
  return jax.tree.map(
    lambda p, m: jnp.where(m, p, jnp.zeros((), jnp.asarray(p).dtype)),
    params,
    masks,
  )


def mask_densities(masks: Any) -> Any:
  """The fraction of True entries of each mask, a float32 scalar per leaf."""
  return jax.tree.map(lambda m: jnp.mean(m.astype(jnp.float32)), masks)
