"""Lookahead and iterate averaging, with `eval_params` to find their weights."""

from optax_zoo.averaging._eval_params import eval_params
from optax_zoo.averaging._lookahead import LookaheadState, lookahead

__all__ = ['LookaheadState', 'eval_params', 'lookahead']
