"""Every notebook is paired, stripped of outputs, and runs at a small size."""

import os
import pathlib

import jupytext
import nbclient
import pytest

from optax_zoo._src import test_utils as tu

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / 'notebooks').glob('*.py'))


def test_there_are_notebooks():
  assert NOTEBOOKS


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.stem)
def test_ipynb_is_paired_and_stripped(path):
  ipynb = path.with_suffix('.ipynb')
  assert ipynb.exists(), f'run `jupytext --sync {path.name}` in notebooks/'
  script, paired = jupytext.read(path), jupytext.read(ipynb)
  assert [c.source for c in script.cells] == [c.source for c in paired.cells], (
    f'{ipynb.name} and {path.name} differ: run `jupytext --sync`'
  )
  for cell in paired.cells:
    if cell.cell_type == 'code':
      assert not cell.outputs and cell.execution_count is None, (
        f'{ipynb.name} has outputs: strip them before committing'
      )


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_small_size(path, tmp_path, monkeypatch):
  monkeypatch.setenv('OPTAX_ZOO_SMALL', '1')
  # Small runs are compile-bound: they compile as the suite does
  # (conftest.py), 2-3x faster than XLA's default.
  for k, v in tu.fast_compile_env(dict(os.environ)).items():
    monkeypatch.setenv(k, v)
  monkeypatch.setenv('MPLBACKEND', 'Agg')
  notebook = jupytext.read(path)
  nbclient.NotebookClient(
    notebook,
    timeout=600,
    kernel_name='python3',
    resources={'metadata': {'path': str(tmp_path)}},
  ).execute()
  errors = [
    out
    for cell in notebook.cells
    if cell.cell_type == 'code'
    for out in cell.outputs
    if out.output_type == 'error'
  ]
  assert not errors
