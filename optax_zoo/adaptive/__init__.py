"""Adaptive-moment and sign-based optimizers."""

from optax_zoo.adaptive._optax_aliases import (
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

# >>> imports A
# >>> imports B
# >>> imports C
# >>> imports D

__all__ = [
  'adafactor',
  'adam',
  'adamax',
  'adamw',
  'adan',
  'lamb',
  'lars',
  'nadam',
  'novograd',
  'radam',
  'sgd',
  'sign_sgd',
  'signum',
  # >>> __all__ A
  # >>> __all__ B
  # >>> __all__ C
  # >>> __all__ D
]
