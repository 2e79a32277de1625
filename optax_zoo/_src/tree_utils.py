"""Tree helpers that `optax.tree` does not have."""

from __future__ import annotations

from typing import Any

import jax

__all__ = ['full_mask', 'unzip']


def full_mask(mask: Any, params: Any) -> Any:
  """An optax-style mask as a tree of bools with the structure of `params`.

  Args:
    mask: None (every leaf), a tree of bools with the structure of `params`
      or a prefix of it (a single bool selects all or nothing), or a
      callable of the params returning one, as `optax.masked` takes.
    params: the parameters.

  Returns:
    One Python bool per leaf of `params`, in a tree of its structure.
  """
  if mask is None:
    mask = True
  elif callable(mask):
    mask = mask(params)
  return jax.tree.map(
    lambda m, sub: jax.tree.map(lambda _: m, sub), mask, params
  )


def unzip(tree: Any, like: Any, n: int) -> tuple[Any, ...]:
  """Splits a tree of `n`-tuples into `n` trees with the structure of `like`.

  The inverse of mapping a function that returns a tuple over `like`.
  """
  return jax.tree.transpose(
    jax.tree.structure(like), jax.tree.structure((0,) * n), tree
  )
