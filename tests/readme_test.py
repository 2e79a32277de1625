"""The README stays true: its method table, its commands and its code run."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from optax_zoo import registry
from optax_zoo._src import test_utils as tu

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()


def _between(marker: str) -> str:
  match = re.search(f'<!-- {marker} -->\n(.*?)<!-- /{marker} -->', README, re.S)
  assert match, f'README has no {marker} block'
  return match.group(1)


def test_method_table_matches_registry():
  table = re.search(
    '<!-- methods:start -->\n(.*?)\n<!-- methods:end -->', README, re.S
  )
  assert table, 'README has no method table markers'
  assert table.group(1) == registry.markdown_table(), (
    'README method table is stale: regenerate it with '
    '`optax-zoo list --markdown`'
  )


@pytest.mark.parametrize(
  'marker', ['main-command', 'test-command', 'docs-command']
)
def test_exactly_one_setup_command_each(marker):
  lines = [
    line
    for line in _between(marker).splitlines()
    if line.strip() and not line.startswith('```')
  ]
  assert len(lines) == 1
  assert 'pip install' in lines[0]


def test_ci_runs_the_readme_test_command():
  ci = (ROOT / '.ci' / 'run').read_text()
  assert 'test-command' in ci


_SNIPPETS = re.findall(r'```python\n(.*?)```', README, re.S)
_MARK = '---snippet---'


def test_python_snippets_run_in_order():
  # Like notebook cells: each snippet may use names an earlier one defined,
  # and each must print its result.
  runner = 'import sys\nns = {}\n' + ''.join(
    f'exec(compile({src!r}, "README snippet {i}", "exec"), ns)\n'
    f'print({_MARK!r}); sys.stdout.flush()\n'
    for i, src in enumerate(_SNIPPETS)
  )
  result = subprocess.run(
    [sys.executable, '-c', runner],
    capture_output=True,
    text=True,
    timeout=600,
    cwd=ROOT,
    # Compile-bound snippets: compiled as the suite does, 2-3x faster.
    env=tu.fast_compile_env(dict(os.environ)),
  )
  assert result.returncode == 0, result.stderr
  outputs = result.stdout.split(_MARK + '\n')[: len(_SNIPPETS)]
  assert len(outputs) == len(_SNIPPETS)
  for i, out in enumerate(outputs):
    assert out.strip(), f'README snippet {i} prints nothing'
