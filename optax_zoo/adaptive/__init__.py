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
]
