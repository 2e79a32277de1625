"""optax_zoo: the optimization methods of modern deep learning for optax.

Every method is an `optax.GradientTransformation`, importable as
``optax_zoo.<name>``, registered in `optax_zoo.methods()` and buildable by name
with `optax_zoo.create(name, **kwargs)`.
"""

from optax_zoo.adaptive import (
  adafactor,
  adam,
  adamax,
  adamw,
  adan,
  lamb,
  lars,
  nadam,
  novograd,
  radam,
  sgd,
  sign_sgd,
  signum,
)
from optax_zoo.averaging import LookaheadState, eval_params, lookahead
from optax_zoo.registry import MethodInfo, Paper, create, get, methods

__version__ = '0.1.0'

__all__ = [
  'LookaheadState',
  'MethodInfo',
  'Paper',
  'adafactor',
  'adam',
  'adamax',
  'adamw',
  'adan',
  'create',
  'eval_params',
  'get',
  'lamb',
  'lars',
  'lookahead',
  'methods',
  'nadam',
  'novograd',
  'radam',
  'sgd',
  'sign_sgd',
  'signum',
]
