"""Sphinx configuration of the optax_zoo API reference.

Sphinx, as optax, Flax, JAX, jax-privacy and kfac-jax use: autodoc reads the
docstrings, napoleon their Google-style sections, MathJax (bundled by
sphinx-mathjax-offline, so pages render without a network) their
``.. math::``, and myst-nb the notebooks, converted from their Jupytext
sources and not executed (the test suite executes them). The pages that
list the public names and the method table are generated here at build time
(`_generated/`, not committed) from the subpackages' ``__all__`` and the
registry, so the reference cannot drift from the code.

  python -m sphinx -W -b html docs docs/_build/html

Cross-references to jax, optax and flax need their inventories from the
network: set ``OPTAX_ZOO_DOCS_INTERSPHINX=1`` where it is reachable (Read the
Docs); without it those references are plain text, never warnings.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _api  # noqa: E402  (docs/_api.py: the generated pages)
from sphinx.util import inspect as _sphinx_inspect  # noqa: E402

import optax_zoo  # noqa: E402

project = 'optax_zoo'
author = 'optax_zoo developers'
copyright = '2026, optax_zoo developers'
version = release = optax_zoo.__version__

extensions = [
  'sphinx.ext.autodoc',
  'sphinx.ext.napoleon',
  'sphinx-mathjax-offline',
  'myst_nb',
]
if os.environ.get('OPTAX_ZOO_DOCS_INTERSPHINX') == '1':
  extensions.append('sphinx.ext.intersphinx')
  intersphinx_mapping = {
    'python': ('https://docs.python.org/3', None),
    'jax': ('https://docs.jax.dev/en/latest/', None),
    'optax': ('https://optax.readthedocs.io/en/latest/', None),
    'flax': ('https://flax.readthedocs.io/en/latest/', None),
    'numpy': ('https://numpy.org/doc/stable/', None),
  }

# `name` in a docstring is a reference: to a documented object of
# optax_zoo (the flat `optax_zoo.adam` resolves to `optax_zoo.adaptive.adam`),
# or else to another library or an argument, shown as code. A reference that
# names optax_zoo but resolves to nothing is a warning (-W: an error).
default_role = 'py:obj'
nitpicky = True
autodoc_default_options = {'show-inheritance': False}
autodoc_typehints = 'description'
autodoc_typehints_format = 'short'
# Type aliases shown by name, not expanded into their unions.
autodoc_type_aliases = {
  name: name
  for name in (
    'jax.typing.ArrayLike',
    'jax.typing.DTypeLike',
    'optax.ScalarOrSchedule',
    'optax.Schedule',
    'optax.Params',
    'optax.Updates',
    'optax.OptState',
  )
}
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_custom_sections = [('Example', 'example'), ('Examples', 'example')]

source_suffix = {
  '.rst': 'restructuredtext',
  '.md': 'myst-nb',
  '.ipynb': 'myst-nb',
}
exclude_patterns = [
  '_build',
  '_generated/install.md',
  'Thumbs.db',
  '.DS_Store',
  '**.ipynb_checkpoints',
]
nb_execution_mode = 'off'
myst_enable_extensions = ['dollarmath', 'amsmath']
myst_heading_anchors = 3
suppress_warnings = ['myst.header']

html_theme = 'sphinx_book_theme'
html_title = f'optax_zoo {version}'
html_theme_options = {
  'repository_url': _api.project_url('Repository'),
  'use_repository_button': True,
  'show_toc_level': 2,
}

# Sphinx prints an alias inside a union (``ArrayLike | None``) by its repr:
# show its name, as it does outside one.
_sphinx_inspect.TypeAliasForwardRef.__repr__ = lambda self: self.name

_DEVIATIONS = re.compile(r'^(\s*)Deviations:\s*(.*)$')


def _deviations_section(app, what, name, obj, options, lines) -> None:
  """A docstring's ``Deviations:`` paragraph as a section of its own."""
  for i, line in enumerate(lines):
    match = _DEVIATIONS.match(line)
    if not match:
      continue
    indent, rest = match.groups()
    body = [indent + rest] if rest else []
    j = i + 1
    if not rest:  # the text is the indented block below the header
      width = lambda text: len(text) - len(text.lstrip())
      while j < len(lines) and (
        not lines[j].strip() or width(lines[j]) > len(indent)
      ):
        j += 1
      block = lines[i + 1 : j]
      cut = min((width(b) for b in block if b.strip()), default=0)
      body = [indent + b[cut:] if b.strip() else '' for b in block]
    lines[i:j] = [f'{indent}.. rubric:: Deviations', '', *body]
    return


def _data_docstring(app, what, name, obj, options, lines) -> None:
  """A constant's docstring is its own (``#:``), never its type's."""
  if what == 'data' and type(obj).__doc__ and lines:
    if '\n'.join(lines).strip() == inspect.cleandoc(type(obj).__doc__).strip():
      lines[:] = []


def _skip_member(app, what, name, obj, skip, options):
  """Class members: documented methods and fields, not NamedTuple aliases."""
  doc = getattr(obj, '__doc__', None) or ''
  if doc.startswith('Alias for field number'):
    return True
  return None


def _resolve(app, env, node, contnode):
  """`optax_zoo.name` and `name` resolve to their subpackage's page."""
  if node.get('refdomain') != 'py':
    return None
  target = node['reftarget']
  domain = env.get_domain('py')
  name = target.removeprefix('optax_zoo.')
  head = name.partition('.')[0]
  for sub in _api.subpackages():
    module = importlib.import_module(f'optax_zoo.{sub}')
    if head in getattr(module, '__all__', ()):
      full = f'optax_zoo.{sub}.{name}'
      found = domain.resolve_any_xref(
        env, node['refdoc'], app.builder, full, node, contnode
      )
      if found:
        return found[0][1]
  if target.startswith('optax_zoo'):
    return None  # ours, and broken: Sphinx warns.
  return contnode  # another library's name or an argument: code, no link.


def setup(app):
  app.connect('builder-inited', lambda app: _api.generate(HERE))
  app.connect('autodoc-process-docstring', _deviations_section, priority=600)
  app.connect('autodoc-process-docstring', _data_docstring)
  app.connect('autodoc-skip-member', _skip_member)
  app.connect('missing-reference', _resolve)
