"""Test-session settings shared by the suite, its doctests and notebooks.

The suite is compile-bound: most tests build small programs and run them for
a few steps, so compiling, not running, is what costs time. Three settings
cut it:

- JAX's persistent compilation cache. Many tests build the same programs
  (the training loop of the same tiny model, its evaluation, a launcher's
  runs) through fresh closures, which the in-memory jit cache cannot
  recognize; the persistent cache keys on the compiled program, so every
  identical program after the first loads from disk, across tests,
  pytest-xdist workers and the notebooks' kernels (they inherit the
  environment). It lives in ``.jax_cache/`` at the repository root (ignored
  by git); set ``JAX_COMPILATION_CACHE_DIR`` to move it.
- XLA without most optimizations (``jax_disable_most_optimizations``),
  which compiles these programs 1.4-3x faster. The parity tests in
  ``tests/reference`` and tests marked ``optimized`` keep the default
  optimizations: their figures are the ones users get, and the registry
  records them.
- XLA:CPU's classic elemental emitters instead of its MLIR fusion emitters
  (``--xla_cpu_use_fusion_emitters=false`` in ``XLA_FLAGS``): about 40%
  less CPU per compilation of a small op here and 22% less wall time for
  tests/common_test.py (181 s -> 141 s). Same operations, possibly
  different roundoff. An XLA flag holds for the whole process, parity
  tests included, and child processes inherit it, so they share the
  compilation cache with this one (its key hashes ``XLA_FLAGS``).

Child processes (notebook kernels, mesh scripts, launchers) compile as this
one through `optax_zoo._src.test_utils.fast_compile_env`.
"""

import os
import pathlib

_ROOT = pathlib.Path(__file__).resolve().parent
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', str(_ROOT / '.jax_cache'))
# Cache every program, however small or quick to compile: the small ones
# are most of the suite.
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
# No size limit: with one, JAX rescans and stats the whole cache under a
# file lock at every write, which made the suite 3.5x slower (21 min against
# 6). A run adds about 50 MB for code that changed; delete `.jax_cache/`
# to reclaim it.
# XLA reads its flags once, when JAX starts; child processes inherit them.
_FAST_XLA_FLAGS = '--xla_cpu_use_fusion_emitters=false'
if _FAST_XLA_FLAGS not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (
    f'{os.environ.get("XLA_FLAGS", "")} {_FAST_XLA_FLAGS}'.strip()
  )

import jax  # noqa: E402 (after the cache settings it reads)
import pytest  # noqa: E402

_OPTIMIZED = (_ROOT / 'tests' / 'reference',)


def _needs_default_compiler(item: pytest.Item) -> bool:
  path = pathlib.Path(str(item.path))
  return item.get_closest_marker('optimized') is not None or any(
    path.is_relative_to(d) for d in _OPTIMIZED
  )


@pytest.fixture(autouse=True)
def _compile_fast(request):
  """Most XLA optimizations off, except where the figures are measured."""
  if _needs_default_compiler(request.node):
    yield
    return
  previous = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', previous)


def pytest_collection_modifyitems(config, items):
  """One pytest-xdist group per method of tests/common_test.py.

  The common tests share each method's compiled programs within a worker
  (see that file); with ``--dist loadgroup`` (pyproject.toml's addopts) a
  method's tests run on one worker, so each program compiles once.
  """
  del config
  for item in items:
    callspec = getattr(item, 'callspec', None)
    if item.path.name == 'common_test.py' and callspec is not None:
      name = callspec.params.get('name')
      if name is not None:
        item.add_marker(pytest.mark.xdist_group(f'common-{name}'))
