"""The generated pages of the docs: API lists, method table, notebooks.

Written into ``docs/_generated/`` when the build starts (`conf.py`), from the
code itself: each subpackage's ``__all__``, the registry's method table and
the notebooks' Jupytext sources.
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import re
import shutil

import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Subpackages with a reference page, in the order of the index. The method
# subpackages come from the registry, so a new one cannot be left out.
EXTRA = ('schedules', 'training', 'analysis')


def subpackages() -> tuple[str, ...]:
  from optax_zoo import registry

  return (
    *registry.SUBPACKAGES,
    *(s for s in EXTRA if s not in registry.SUBPACKAGES),
  )


def project_url(name: str) -> str:
  """``[project.urls]`` of pyproject.toml: the one place they are declared."""
  with open(ROOT / 'pyproject.toml', 'rb') as f:
    return tomllib.load(f)['project']['urls'][name]


def _directive(module, name: str) -> str:
  obj = getattr(module, name)
  if inspect.isclass(obj):
    return 'autoclass'
  if callable(obj):
    return 'autofunction'
  return 'autodata'


def _entry(module, name: str) -> list[str]:
  directive = _directive(module, name)
  options = {
    'autoclass': ['   :members:'],
    'autodata': ['   :no-value:'],
  }.get(directive, [])
  return [f'.. {directive}:: {name}', *options, '']


def _api_page(sub: str) -> str:
  module = importlib.import_module(f'optax_zoo.{sub}')
  title = f'``optax_zoo.{sub}``'
  lines = [
    title,
    '=' * len(title),
    '',
    f'.. automodule:: optax_zoo.{sub}',
    '   :no-members:',
    '',
    f'.. currentmodule:: optax_zoo.{sub}',
    '',
  ]
  for name in sorted(module.__all__, key=str.lower):
    lines += _entry(module, name)
  return '\n'.join(lines)


def _registry_page() -> str:
  title = '``optax_zoo`` registry'
  names = ('methods', 'get', 'create', 'MethodInfo', 'Paper')
  lines = [
    title,
    '=' * len(title),
    '',
    '.. automodule:: optax_zoo.registry',
    '   :no-members:',
    '',
    '.. currentmodule:: optax_zoo.registry',
    '',
  ]
  module = importlib.import_module('optax_zoo.registry')
  for name in names:
    lines += _entry(module, name)
  return '\n'.join(lines)


def _methods_page() -> str:
  from optax_zoo import registry

  return '\n'.join(
    [
      '# Methods',
      '',
      'Every registered method, generated from the registry at build time '
      '(`optax-zoo list --markdown` prints the same table). "state" is the '
      'optimizer state in copies of the parameters (for wrappers, on top of '
      "the inner optimizer's).",
      '',
      _linked(registry.markdown_table(), registry.methods()),
      '',
    ]
  )


def _linked(table: str, infos) -> str:
  """The table with each method's name linked to its reference entry."""
  paths = {}
  for info in infos:
    for sub in subpackages():
      module = importlib.import_module(f'optax_zoo.{sub}')
      name = info.factory.__name__
      if getattr(module, name, None) is info.factory:
        paths[info.name] = f'optax_zoo.{sub}.{name}'
        break
  rows = []
  for row in table.splitlines():
    match = re.match(r'\| `([^`]+)` \|', row)
    if match and match.group(1) in paths:
      name = match.group(1)
      link = f'| {{py:obj}}`{name} <{paths[name]}>` |'
      row = link + row[match.end() :]
    rows.append(row)
  return '\n'.join(rows)


def notebooks() -> list[pathlib.Path]:
  return sorted((ROOT / 'notebooks').glob('*.py'))


def generate(docs: pathlib.Path) -> None:
  """Writes ``docs/_generated``: one page per subpackage, methods, notebooks."""
  import jupytext

  out = docs / '_generated'
  if out.exists():
    shutil.rmtree(out)
  (out / 'api').mkdir(parents=True)
  (out / 'notebooks').mkdir()
  for sub in subpackages():
    (out / 'api' / f'{sub}.rst').write_text(_api_page(sub))
  (out / 'api' / 'registry.rst').write_text(_registry_page())
  (out / 'methods.md').write_text(_methods_page())
  (out / 'install.md').write_text(
    f'```bash\npip install "{install_spec("experiments")}"\n```\n'
  )
  for path in notebooks():
    jupytext.write(
      jupytext.read(path), out / 'notebooks' / f'{path.stem}.ipynb'
    )


# Colab: every notebook's badge and install cell are built from the
# Repository URL of pyproject.toml; tests/docs_test.py checks each notebook
# against them and runs the install cell against a locally built wheel.
COLAB_BADGE = 'https://colab.research.google.com/assets/colab-badge.svg'


def colab_url(notebook: str) -> str:
  repo = project_url('Repository').removeprefix('https://github.com/')
  return (
    f'https://colab.research.google.com/github/{repo}/blob/main/'
    f'notebooks/{notebook}.ipynb'
  )


def colab_badge(notebook: str) -> str:
  return f'[![Open In Colab]({COLAB_BADGE})]({colab_url(notebook)})'


def install_spec(extras: str) -> str:
  """The pip requirement the install cell installs: the repository's code."""
  return f'optax-zoo[{extras}] @ git+{project_url("Repository")}'


def install_cell(extras: str) -> str:
  """The source of a notebook's install cell (a no-op outside Colab)."""
  lines = [
    '# In Colab, install optax_zoo from its repository; elsewhere this does',
    "# nothing (install it with the README's command instead).",
    'import sys',
    '',
    "if 'google.colab' in sys.modules:",
    '  import subprocess',
    '',
    f"  repo = 'git+{project_url('Repository')}'",
    f"  spec = f'optax-zoo[{extras}] @ {{repo}}'",
    "  pip = [sys.executable, '-m', 'pip', 'install', '-q']",
    '  subprocess.run([*pip, spec], check=True)',
  ]
  return '\n'.join(lines)
