"""Finding the weights to evaluate inside any optimizer state."""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

__all__ = ['eval_params']


def _has_eval_params(node: Any) -> bool:
  return callable(getattr(node, 'eval_params', None)) and isinstance(
    node, tuple
  )


def _children(node: Any) -> list[Any]:
  """The immediate pytree children of ``node`` ([] for a leaf)."""
  children = jax.tree.leaves(node, is_leaf=lambda x: x is not node)
  return [] if len(children) == 1 and children[0] is node else children


def _find(node: Any, found: list[Any]) -> None:
  """Appends the outermost averaging states under ``node``, in order.

  Raises if one that must produce the final update (lookahead, periodic
  SWA) is followed by another transform in an `optax.chain`, whose state is
  a plain tuple with one entry per transform.
  """
  if _has_eval_params(node):
    found.append(node)
    return
  children = _children(node)
  for i, child in enumerate(children):
    before = len(found)
    _find(child, found)
    if type(node) is tuple and i < len(children) - 1:
      last = [s for s in found[before:] if getattr(s, 'must_be_last', False)]
      if last:
        raise ValueError(
          f'`opt_state` has a {type(last[0]).__name__} followed by '
          f'{len(children) - 1 - i} more transform(s) in an optax.chain: '
          'this method replaces the update at its synchronization or '
          'restart steps and must be the last transform of its chain; move '
          'the learning rate, scaling or clipping inside its `inner` '
          'optimizer.'
        )


def eval_params(opt_state: Any, params: Any) -> Any:
  """Returns the weights a training loop should evaluate.

  Searches ``opt_state`` for the states that define ``eval_params(params)``
  (`SWAState`, `SWAGState` and Gadam's running means, `LookaheadState`'s
  slow weights) through `optax.chain`, `optax.multi_transform`,
  `optax.masked`, `optax.inject_hyperparams`, `optax.MultiSteps`,
  `optax.apply_if_finite` and any nesting of them, and returns a complete
  tree shaped and typed like ``params``: averaged wherever a branch
  averages, ``params`` elsewhere (the part a `optax.masked` or
  `optax.multi_transform` branch does not train). Where two averaging
  states cover one parameter the outermost, or first in a chain, wins.
  With no averaging in the state it returns ``params`` itself, so a loop
  can call it unconditionally. It traces under `jax.jit` and `jax.vmap`.

  With Flax NNX, pass the `nnx.Optimizer` (or its ``opt_state``) and the
  model; the result is an `nnx.State` of the optimized variables, ready for
  ``nnx.update(model, ...)`` (or use `optax_zoo.eval_model`, which also
  refreshes BatchNorm statistics).

  Args:
    opt_state: the optimizer state, or an `nnx.Optimizer`.
    params: the current (trained) parameters; with Flax NNX, the model or
      ``nnx.state(model, wrt)`` for the optimizer's ``wrt`` filter.

  Returns:
    A pytree with the structure and dtypes of ``params`` (an `nnx.State`
    for a model).

  Raises:
    ValueError: if ``params`` does not have the structure the optimizer was
      initialized with, or if a lookahead or periodic SWA is not the last
      transform of its chain (it must produce the final update).

  Example:
    >>> import jax.numpy as jnp, optax, optax_zoo
    >>> params = {'a': jnp.ones(2), 'b': jnp.ones(1)}
    >>> tx = optax.multi_transform(
    ...   {'avg': optax_zoo.swa(optax.sgd(0.5), start_step=0),
    ...    'plain': optax.sgd(0.5)},
    ...   {'a': 'avg', 'b': 'plain'})
    >>> state = tx.init(params)
    >>> for _ in range(2):  # 1 -> 0.5 -> 0.25
    ...   updates, state = tx.update(params, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> evaluated = optax_zoo.eval_params(state, params)
    >>> evaluated['a'], evaluated['b']  # 'a' averaged, 'b' as trained
    (Array([0.375, 0.375], dtype=float32), Array([0.25], dtype=float32))
    >>> optax_zoo.eval_params(optax.sgd(0.1).init(params), params) is params
    True
  """
  wrt = nnx.Param
  if isinstance(opt_state, nnx.Optimizer):
    wrt, opt_state = opt_state.wrt, opt_state.opt_state
  if isinstance(params, nnx.Module):
    params = nnx.state(params, wrt)
  elif isinstance(params, nnx.Optimizer):
    raise ValueError(
      '`params` must be the parameters (or, with Flax NNX, the model), got '
      'an nnx.Optimizer: call `eval_params(optimizer, model)`.'
    )
  found: list[Any] = []
  _find(opt_state, found)
  # Each branch replaces only the leaves it trains; the first found is
  # applied last so that it wins where two overlap.
  for state in reversed(found):
    params = state.eval_params(params)
  return params
