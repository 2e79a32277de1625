"""Test-session settings shared by the suite, its doctests and notebooks.

The suite is compile-bound: many tests build the same small programs (the
training loop of the same tiny model, its evaluation, a launcher's runs)
through fresh closures, which the in-memory jit cache cannot recognize.
JAX's persistent compilation cache keys on the compiled program instead, so
every identical program after the first loads from disk, across tests,
pytest-xdist workers and the notebooks' kernels (they inherit the
environment). The cache lives in ``.jax_cache/`` at the repository root
(ignored by git); set ``JAX_COMPILATION_CACHE_DIR`` to move it.
"""

import os
import pathlib

_CACHE = pathlib.Path(__file__).resolve().parent / '.jax_cache'
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', str(_CACHE))
# Cache every program, however small or quick to compile: the small ones
# are most of the suite.
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
