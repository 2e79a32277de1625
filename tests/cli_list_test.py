"""`optax-zoo list` in a terminal, `--version`, and a closed pipe."""

import subprocess
import sys

import pytest

import optax_zoo
from optax_zoo import cli


def test_list_fits_the_terminal_and_wide_prints_everything(capsys, monkeypatch):
  monkeypatch.setenv('COLUMNS', '120')
  cli.main(['list'])
  lines = capsys.readouterr().out.splitlines()
  # Before: rows about 300 characters wide.
  assert max(map(len, lines)) <= 120
  assert any(line.endswith('...') for line in lines)
  cli.main(['list', '--wide'])
  wide = capsys.readouterr().out
  for m in optax_zoo.methods():
    assert m.deviations in wide
    assert m.paper.authors in wide
  names = [line.split()[0] for line in wide.splitlines()[2:]]
  assert names == [m.name for m in optax_zoo.methods()]


def test_version(capsys):
  try:
    cli.main(['--version'])
  except SystemExit as e:
    assert e.code == 0
  assert capsys.readouterr().out.strip() == f'optax-zoo {optax_zoo.__version__}'


@pytest.mark.parametrize('flags', [[], ['--wide']])
def test_closed_pipe_gives_no_traceback(flags):
  # As `optax-zoo list | head -0`: the reader is gone before the first write
  # (the short table is written at the final flush, the wide one before).
  proc = subprocess.Popen(
    [sys.executable, '-m', 'optax_zoo.cli', 'list', *flags],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
  )
  proc.stdout.close()
  stderr = proc.stderr.read().decode()
  proc.wait(timeout=120)
  assert 'Traceback' not in stderr and 'BrokenPipe' not in stderr, stderr
  assert proc.returncode == 1
