"""The API reference builds without a warning and lists every public name;
every notebook opens in Colab and installs the package there."""

import html
import importlib
import os
import pathlib
import re
import subprocess
import sys
import sysconfig

import jupytext
import pytest

import optax_zoo
from optax_zoo._src import test_utils as tu

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'docs'))
import _api  # noqa: E402  (docs/_api.py)

sphinx = pytest.importorskip('sphinx')


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """One HTML build of docs/, with -W: any warning fails it."""
  out = tmp_path_factory.mktemp('html')
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'sphinx',
      '-W',
      '--keep-going',
      '-q',
      '-b',
      'html',
      str(ROOT / 'docs'),
      str(out),
    ],
    capture_output=True,
    text=True,
    timeout=600,
    cwd=ROOT,
  )
  return result, out


def test_docs_build_without_warnings(built):
  result, out = built
  assert result.returncode == 0, result.stderr[-5000:]
  assert (out / '_generated' / 'api' / 'adaptive.html').exists()
  page = (out / '_generated' / 'api' / 'quantization.html').read_text()
  # The math is rendered by the bundled MathJax, the Deviations paragraph is
  # a section, the example is shown.
  assert 'mathjax' in page.lower() and r'\Delta\theta_t' in page
  assert 'Deviations</p>' in page or '>Deviations<' in page
  text = html.unescape(re.sub(r'<[^>]+>', '', page))
  assert 'tx = quantize_state(optax.adam(1e-3), min_size=0)' in text


def test_every_public_name_is_in_the_reference(built):
  from sphinx.util.inventory import InventoryFile

  result, out = built
  assert result.returncode == 0, result.stderr[-5000:]
  with open(out / 'objects.inv', 'rb') as f:
    inventory = InventoryFile.load(f, '', posixpath_join)
  documented = {
    name
    for kind, entries in getattr(inventory, 'data', inventory).items()
    if kind.startswith('py:')
    for name in entries
  }
  missing, flat = [], set()
  for sub in _api.subpackages():
    module = importlib.import_module(f'optax_zoo.{sub}')
    for name in module.__all__:
      flat.add(name)
      if f'optax_zoo.{sub}.{name}' not in documented:
        missing.append(f'optax_zoo.{sub}.{name}')
  for name in ('methods', 'get', 'create', 'MethodInfo', 'Paper'):
    flat.add(name)
    if f'optax_zoo.registry.{name}' not in documented:
      missing.append(f'optax_zoo.registry.{name}')
  assert not missing, missing
  # The flat namespace: every name is one of the documented ones, or a
  # subpackage with a page of its own.
  pages = {p.stem for p in (out / '_generated' / 'api').glob('*.html')}
  assert set(optax_zoo.__all__) <= flat | pages


def posixpath_join(*parts):
  return '/'.join(parts)


def _cells(path):
  notebook = jupytext.read(path)
  markdown = [c.source for c in notebook.cells if c.cell_type == 'markdown']
  code = [c.source for c in notebook.cells if c.cell_type == 'code']
  return markdown, code


EXTRAS = ('experiments', 'experiments,privacy')


@pytest.mark.parametrize('path', _api.notebooks(), ids=lambda p: p.stem)
def test_notebook_has_the_colab_badge_and_install_cell(path):
  markdown, code = _cells(path)
  assert _api.colab_badge(path.stem) in markdown[0], (
    f'{path.name}: its first markdown cell needs the Colab badge '
    f'{_api.colab_badge(path.stem)}'
  )
  assert code[0] in {_api.install_cell(e) for e in EXTRAS}, (
    f'{path.name}: its first code cell must be _api.install_cell(extras)'
  )


def _shadow_site(tmp: pathlib.Path) -> pathlib.Path:
  """This environment's site-packages without optax_zoo, as symlinks.

  A fresh venv sees the dependencies through it (a .pth line), so the
  install cell's pip finds them installed and fetches nothing, while
  optax_zoo itself can only come from the wheel it installs.
  """
  site = pathlib.Path(sysconfig.get_paths()['purelib'])
  shadow = tmp / 'deps'
  shadow.mkdir()
  for entry in site.iterdir():
    if 'optax_zoo' in entry.name or 'optax-zoo' in entry.name:
      continue
    if entry.suffix == '.pth':
      continue
    (shadow / entry.name).symlink_to(entry)
  return shadow


def test_install_cell_installs_the_package_from_a_wheel(tmp_path):
  wheels = tmp_path / 'wheels'
  subprocess.run(
    [
      sys.executable,
      '-m',
      'pip',
      'wheel',
      '-q',
      '--no-deps',
      '--no-build-isolation',
      '-w',
      str(wheels),
      str(ROOT),
    ],
    check=True,
    capture_output=True,
    timeout=300,
  )
  (wheel,) = wheels.glob('optax_zoo-*.whl')
  shadow = _shadow_site(tmp_path)
  cells = {}
  # One fresh venv per distinct install cell, quickstart's first.
  for path in sorted(_api.notebooks(), key=lambda p: p.stem != 'quickstart'):
    cells.setdefault(_cells(path)[1][0], path.stem)
  for i, (cell, name) in enumerate(sorted(cells.items())):
    venv = tmp_path / f'venv{i}'
    subprocess.run(
      [sys.executable, '-m', 'venv', str(venv)], check=True, timeout=300
    )
    python = venv / 'bin' / 'python'
    purelib = subprocess.run(
      [
        python,
        '-c',
        'import sysconfig; print(sysconfig.get_paths()["purelib"])',
      ],
      check=True,
      capture_output=True,
      text=True,
    ).stdout.strip()
    pathlib.Path(purelib, 'deps.pth').write_text(f'{shadow}\n')
    local = cell.replace(
      f'git+{_api.project_url("Repository")}', wheel.as_uri()
    )
    assert local != cell, 'the install cell does not install the repository'
    runner = (
      'import sys, types\n'
      "sys.modules['google.colab'] = types.ModuleType('google.colab')\n"
      f'exec({local!r})\n'
    )
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['PIP_NO_INDEX'] = '1'  # nothing may be fetched: deps are present
    result = subprocess.run(
      [python, '-c', runner],
      capture_output=True,
      text=True,
      timeout=300,
      cwd=tmp_path,
      env=env,
    )
    assert result.returncode == 0, (name, result.stdout, result.stderr)
    check = subprocess.run(
      [
        python,
        '-c',
        'import optax_zoo, optax_zoo.training; print(optax_zoo.__file__)',
      ],
      capture_output=True,
      text=True,
      timeout=300,
      cwd=tmp_path,
      env=env,
    )
    assert check.returncode == 0, (name, check.stderr)
    assert check.stdout.strip().startswith(str(venv)), check.stdout
    if name == 'quickstart':
      # And the notebook runs top to bottom there, on the installed wheel.
      script = tmp_path / 'quickstart_script.py'
      jupytext.write(
        jupytext.read(ROOT / 'notebooks' / 'quickstart.py'),
        script,
        fmt='py:percent',
      )
      run = subprocess.run(
        [python, str(script)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=tu.fast_compile_env(
          {**env, 'OPTAX_ZOO_SMALL': '1', 'MPLBACKEND': 'Agg'}
        ),
      )
      assert run.returncode == 0, run.stderr[-3000:]


def test_readme_names_the_build_this_file_runs():
  readme = (ROOT / 'README.md').read_text()
  block = re.search(r'<!-- docs-command -->\n```bash\n(.*?)\n```', readme, re.S)
  assert block, 'README has no docs-command block'
  assert "'.[docs]'" in block.group(1)
  assert 'sphinx -W -b html docs ' in block.group(1)
