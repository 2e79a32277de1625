"""optax_zoo: the optimization methods of modern deep learning for optax.

Every method is an `optax.GradientTransformation`, importable as
``optax_zoo.<name>``, registered in `optax_zoo.methods()` and buildable by name
with `optax_zoo.create(name, **kwargs)`. The flat namespace is the union of
the method subpackages' ``__all__`` (so it cannot drift from them) and the
registry's functions.
"""

import importlib
from typing import Any

from optax_zoo import (
  adaptive,
  averaging,
  distributed,
  privacy,
  quantization,
  schedules,
  sharpness,
  sparsity,
)
from optax_zoo.adaptive import *  # noqa: F403
from optax_zoo.averaging import *  # noqa: F403
from optax_zoo.distributed import *  # noqa: F403
from optax_zoo.privacy import *  # noqa: F403
from optax_zoo.quantization import *  # noqa: F403

# Redundant aliases mark the re-exports (__all__ below is computed).
from optax_zoo.registry import MethodInfo as MethodInfo
from optax_zoo.registry import Paper as Paper
from optax_zoo.registry import create as create
from optax_zoo.registry import get as get
from optax_zoo.registry import methods as methods
from optax_zoo.schedules import *  # noqa: F403
from optax_zoo.sharpness import *  # noqa: F403
from optax_zoo.sparsity import *  # noqa: F403

__version__ = '0.1.0'

__all__ = sorted(
  {
    *adaptive.__all__,
    *averaging.__all__,
    *distributed.__all__,
    *privacy.__all__,
    *quantization.__all__,
    *schedules.__all__,
    *sharpness.__all__,
    *sparsity.__all__,
    'MethodInfo',
    'Paper',
    'create',
    'distributed',
    'get',
    'methods',
    'privacy',
    'quantization',
    'schedules',
    'sharpness',
    'sparsity',
  }
)

# Imported on first use: `training` and `analysis` pull in Flax models, data
# and plotting helpers that using one optimizer does not need (and
# `training` imports `averaging`, so importing it here eagerly would be
# circular while this package initializes).
_LAZY_SUBPACKAGES = ('analysis', 'training')


def __getattr__(name: str) -> Any:
  if name in _LAZY_SUBPACKAGES:
    return importlib.import_module(f'optax_zoo.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__() -> list[str]:
  return sorted({*globals(), *_LAZY_SUBPACKAGES})
