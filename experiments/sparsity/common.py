"""What the sparse-training experiments share: FLOPs per layer, seeded masks.

``layer_flops`` gives each parameter leaf of a model its dense forward FLOPs
per example, so `optax_zoo.sparsity.inference_flops` and
`optax_zoo.sparsity.training_flops` apply to any mask tree (``flop_counts``
lines the two up). ``seeded`` builds a sparse transform per seed inside
``init``, so the seeds of `optax_zoo.training.train_seeds`, which share one
transform, get masks of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from optax_zoo import sparsity

__all__ = ['flop_counts', 'layer_flops', 'nonzero', 'seed_key', 'seeded']


def _conv_positions(model: nnx.Module, in_features: int) -> dict:
  """Output positions of each `nnx.Conv` (by module path), from one pass.

  Each convolution's ``conv_general_dilated`` is wrapped for one forward
  pass on a zero example to record the shape of what it returns.
  """
  positions = {}
  convs = [
    (path, m) for path, m in nnx.iter_modules(model) if isinstance(m, nnx.Conv)
  ]
  for path, conv in convs:
    inner = conv.conv_general_dilated

    def record(*args, _path=path, _inner=inner, **kwargs):
      out = _inner(*args, **kwargs)
      positions[_path] = math.prod(out.shape[1:-1])
      return out

    conv.conv_general_dilated = record
  model(jnp.zeros((1, in_features), jnp.float32))
  for _, conv in convs:
    del conv.conv_general_dilated
  return positions


def layer_flops(
  model_fn: Callable[[nnx.Rngs], nnx.Module], in_features: int = 40
) -> Any:
  """Dense forward FLOPs per example of every parameter leaf of a model.

  A kernel counts `optax_zoo.sparsity.dense_flops` of its shape times its
  output positions (1 for ``nnx.Linear``; the output length for an
  ``nnx.Conv``, recorded from a forward pass on one example); a bias one
  addition per output and position; other leaves 0. This is the RigL
  paper's accounting of the layers' multiply-adds, what
  `optax_zoo.sparsity.inference_flops` scales by each layer's density.

  Args:
    model_fn: builds the model from its `flax.nnx.Rngs`.
    in_features: the length of one input example.

  Returns:
    A tree like the model's ``nnx.Param`` state of Python floats.

  Example:
    >>> from optax_zoo import training
    >>> flops = layer_flops(lambda rngs: training.CNN1D(rngs=rngs))
    >>> flops['conv2']['kernel'] == 2 * 3 * 25 * 25 * 10
    True
    >>> flops['conv2']['bias'], flops['head']['kernel']
    (250.0, 2500.0)
    >>> mlp = layer_flops(lambda rngs: training.MLP(40, rngs=rngs))
    >>> sum(jax.tree.leaves(mlp)) == 2 * (4000 + 10000 + 1000) + 210
    True
  """
  model = model_fn(nnx.Rngs(0))
  positions = _conv_positions(model, in_features)
  params = nnx.state(model, nnx.Param)

  def count(path, leaf):
    names = tuple(getattr(k, 'key', getattr(k, 'idx', k)) for k in path)
    where = positions.get(names[:-1], 1)
    shape = jnp.shape(leaf)
    if len(shape) >= 2:
      return sparsity.dense_flops(shape, where)
    if names[-1] == 'bias':
      return float(math.prod(shape) * where)
    return 0.0

  return jax.tree.map_with_path(count, nnx.to_pure_dict(params))


def flop_counts(flops: Any, masks: Any) -> tuple[list[float], list[float]]:
  """``(layer FLOPs, densities)`` of the leaves of ``masks``, aligned.

  ``masks`` is a tree of bool masks like the model's parameters (one seed:
  index a seed-stacked state first); ``flops`` is ``layer_flops``' tree.
  The lists go to `optax_zoo.sparsity.inference_flops` and
  `optax_zoo.sparsity.training_flops`.

  Example:
    >>> from optax_zoo import training
    >>> model_fn = lambda rngs: training.MLP(40, rngs=rngs)
    >>> flops = layer_flops(model_fn)
    >>> params = nnx.to_pure_dict(nnx.state(model_fn(nnx.Rngs(0)), nnx.Param))
    >>> masks = sparsity.init_masks(jax.random.key(0), params, 0.9)
    >>> f, d = flop_counts(flops, masks)
    >>> round(sparsity.inference_flops(f, d) / sum(f), 2)
    0.11
  """
  flat = jax.tree.leaves(flops)
  densities = jax.tree.leaves(sparsity.mask_densities(_pure(masks)))
  if len(flat) != len(densities):
    raise ValueError(
      f'`masks` has {len(densities)} leaves, `flops` {len(flat)}: they must '
      'describe the same model.'
    )
  return [float(f) for f in flat], [float(d) for d in densities]


def _pure(tree: Any) -> Any:
  return nnx.to_pure_dict(tree) if isinstance(tree, nnx.State) else tree


def seed_key(params: Any) -> jax.Array:
  """A PRNG key from the bits of a seed's initial parameters.

  The first and last entry of every leaf (bitcast to uint32) are folded
  into ``jax.random.key(0)`` in turn: no float arithmetic, so the key is
  the same under `jax.vmap` as for the one seed alone.
  """
  key = jax.random.key(0)
  for leaf in jax.tree.leaves(params):
    flat = jnp.ravel(jnp.asarray(leaf, jnp.float32))
    for x in (flat[0], flat[-1]):
      key = jax.random.fold_in(key, jax.lax.bitcast_convert_type(x, jnp.uint32))
  return key


def seeded(
  factory: Callable[..., optax.GradientTransformation], **kwargs: Any
) -> optax.GradientTransformationExtraArgs:
  """``factory(key=seed_key(params), **kwargs)``, built per seed in ``init``.

  `optax_zoo.training.train_seeds` initializes one transform over every
  seed's parameters (``init`` vmapped), so a transform's own ``key`` would
  give every seed the same masks. Built inside ``init`` from ``seed_key``
  of the parameters it is handed, each seed gets its own masks and noise,
  fixed by its initialization; ``update`` reads the key from the state, so
  one instance's ``update`` serves all.

  Args:
    factory: a sparse transform's constructor taking ``key=`` (for example
      `optax_zoo.sparsity.rigl`).
    **kwargs: its other arguments.

  Returns:
    The transform: ``init`` as ``factory(key=seed_key(params), ...)``.

  Example:
    >>> import optax
    >>> tx = seeded(sparsity.static_sparse, inner=optax.sgd(0.1),
    ...             sparsity=0.5)
    >>> params = {'w': jnp.stack([jnp.arange(1.0, 17.0).reshape(4, 4),
    ...                           -jnp.arange(1.0, 17.0).reshape(4, 4)])}
    >>> masks = jax.vmap(tx.init)(params).masks['w']
    >>> bool((masks[0] != masks[1]).any()), masks.sum((1, 2)).tolist()
    (True, [8, 8])
  """

  def init(params):
    return factory(key=seed_key(params), **kwargs).init(params)

  return optax.GradientTransformationExtraArgs(
    init, factory(key=0, **kwargs).update
  )


def nonzero(masks: Any) -> int:
  """Active entries of ``masks`` (one seed), every leaf counted."""
  return int(sum(np.sum(m) for m in jax.tree.leaves(_pure(masks))))
