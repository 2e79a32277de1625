"""A new method walks through the Contributing steps of the README.

`tu.EXTRAGRADIENT` stands in for a new method (it needs ``grad_fn``, the
hardest extra argument): once registered, it must be reachable by name, be
listed, appear in the README's table and train through ``optax-zoo bench``
without any other change to the package. The common tests run it too
(`tests/common_test.py`).
"""

import json

import pytest

import optax_zoo
from optax_zoo import cli, registry
from optax_zoo._src import test_utils as tu
from optax_zoo.training import bench as bench_lib


@pytest.fixture
def new_method():
  info = registry.register(tu.EXTRAGRADIENT)
  yield info
  registry.unregister(info.name)


def _bench(tmp_path, *flags):
  return cli.main(
    [
      'bench',
      '--data=digits',
      '--model=mlp',
      '--steps=60',
      '--eval-every=30',
      '--seeds=2',
      '--batch-size=32',
      f'--out={tmp_path}',
      '--no-progress',
      *flags,
    ]
  )


def test_a_registered_method_is_everywhere(new_method, tmp_path, capsys):
  name = new_method.name
  assert optax_zoo.get(name) is new_method
  assert name in [m.name for m in optax_zoo.methods(new_method.category)]
  assert optax_zoo.create(name, learning_rate=0.1) is not None
  assert f'`{name}`' in registry.markdown_table()
  cli.main(['list'])
  assert name in capsys.readouterr().out
  assert _bench(tmp_path, f'--methods={name}') == 0
  result = json.loads((tmp_path / 'bench.json').read_text())
  assert list(result['methods']) == [name] and not result['skipped']
  assert result['methods'][name]['final_accuracy'] > 0.5


def test_register_rejects_a_taken_name_and_unregister_an_unknown_one():
  with pytest.raises(ValueError, match=r"`info.name` must be new.*'adam'"):
    registry.register(optax_zoo.get('adam'))
  with pytest.raises(ValueError, match='`info` must be a MethodInfo'):
    registry.register('adam')
  with pytest.raises(ValueError, match='registered method'):
    registry.unregister('no_such_method')


def test_bench_all_runs_every_registered_method(new_method, monkeypatch):
  # `--methods all` hands the bench every registered name, the test-only
  # method included; the bench itself runs each (see cli_test.py).
  seen = {}

  def fake_run_bench(data, methods, **kwargs):
    seen['methods'] = list(methods)
    return {'config': {'target': 0.85, 'seeds': 1}, 'methods': {}}

  monkeypatch.setattr(bench_lib, 'run_bench', fake_run_bench)
  assert _bench('unused', '--methods=all') == 0
  assert seen['methods'] == [m.name for m in optax_zoo.methods()]
  assert new_method.name in seen['methods']
