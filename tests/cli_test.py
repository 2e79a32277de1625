"""Tests for the optax-zoo command."""

import dataclasses
import json
import os
import re
import stat

import pytest

import optax_zoo
from optax_zoo import cli, registry
from optax_zoo.training import bench

_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _bench(tmp_path, *flags):
  return cli.main(
    [
      'bench',
      '--data=digits',
      '--model=mlp',
      '--steps=20',
      '--eval-every=10',
      '--seeds=2',
      '--batch-size=32',
      f'--out={tmp_path}',
      '--no-progress',
      *flags,
    ]
  )


def test_list_prints_every_registered_method(capsys):
  assert cli.main(['list']) == 0
  out = capsys.readouterr().out
  lines = out.splitlines()
  assert lines[0].split()[:2] == ['name', 'category']
  names = [line.split()[0] for line in lines[2:]]
  assert names == [m.name for m in optax_zoo.methods()]
  assert '1412.6980' in out  # Adam's arXiv id


def test_list_filters_by_category(capsys):
  cli.main(['list', '--category', 'averaging'])
  rows = capsys.readouterr().out.splitlines()[2:]
  names = [r.split()[0] for r in rows]
  assert names == [m.name for m in optax_zoo.methods('averaging')]
  assert 'lookahead' in names


def test_list_prints_the_readme_markdown_table(capsys):
  cli.main(['list', '--markdown'])
  assert capsys.readouterr().out.strip() == registry.markdown_table()


def test_bench_writes_json_and_png(tmp_path, capsys):
  assert _bench(tmp_path, '--methods=adam,lookahead', '--lr=adam=0.01') == 0
  out = capsys.readouterr().out
  assert 'final acc' in out and 'lookahead' in out
  result = json.loads((tmp_path / 'bench.json').read_text())
  assert {'config', 'versions', 'device', 'methods', 'skipped'} <= set(result)
  assert result['config']['steps'] == 20
  assert result['versions']['jax']
  assert list(result['methods']) == ['adam', 'lookahead']
  adam = result['methods']['adam']
  assert adam['learning_rate'] == 0.01
  assert result['methods']['lookahead']['learning_rate'] == (
    optax_zoo.get('lookahead').learning_rate
  )
  assert len(adam['seeds']) == 2
  assert adam['seeds'][0]['steps'] == [0, 10, 20]
  assert len(adam['seeds'][1]['test_accuracy']) == 3
  assert 0 < adam['final_accuracy'] <= 1
  assert adam['final_accuracy_ci95'] >= 0
  # Adam keeps two moments of 4-byte floats per parameter, plus a counter.
  assert 8 <= adam['state_bytes_per_param'] < 8.01
  assert adam['ms_per_step'] > 0
  png = (tmp_path / 'bench.png').read_bytes()
  assert png.startswith(_PNG_MAGIC)
  assert len(png) > 20_000


def test_bench_skips_methods_needing_an_axis_name(
  tmp_path, capsys, monkeypatch
):
  real_get = registry.get

  def get(name):
    info = real_get(name)
    if name == 'sgd':
      return dataclasses.replace(info, needs_axis_name=True)
    return info

  monkeypatch.setattr(registry, 'get', get)
  # The skipped method last: bench.json must still record it.
  assert _bench(tmp_path, '--methods=adam,sgd', '--seeds=1') == 0
  assert 'skipping sgd' in capsys.readouterr().out
  result = json.loads((tmp_path / 'bench.json').read_text())
  assert list(result['methods']) == ['adam']
  assert 'axis_name' in result['skipped']['sgd']


def test_bench_runs_methods_with_extra_update_arguments(tmp_path):
  # KOALA needs the loss; the bench used to skip it.
  assert _bench(tmp_path, '--methods=koala_v', '--seeds=1') == 0
  result = json.loads((tmp_path / 'bench.json').read_text())
  assert list(result['methods']) == ['koala_v'] and not result['skipped']
  assert result['methods']['koala_v']['final_accuracy'] > 0.2


def test_bench_outputs_follow_the_umask(tmp_path):
  previous = os.umask(0o022)
  try:
    assert _bench(tmp_path, '--methods=sgd', '--seeds=1') == 0
  finally:
    os.umask(previous)
  for name in ('bench.json', 'bench.png'):
    assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


@pytest.mark.parametrize(
  ('flags', 'message'),
  [
    (['--methods=adma'], "'adam'"),
    (['--methods=adam', '--lr=nope=0.1'], 'nope'),
    (['--lr=adam'], 'name=value'),
    (['--lr=adam=-1'], 'positive'),
    (['--steps=-5'], r'--steps.*>= 1'),
    (['--seeds=0'], '--seeds'),
    (['--batch-size=5000'], '--batch-size.*1437'),
    (['--target=1.5'], '--target'),
    (['--model=vit'], '--model'),
  ],
)
def test_bad_flags_exit_with_a_clear_error(tmp_path, capsys, flags, message):
  with pytest.raises(SystemExit) as exit_info:
    _bench(tmp_path, *flags)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert re.search(message, err), err
  assert not (tmp_path / 'bench.json').exists()


@pytest.mark.optimized
def test_default_bench_budget_trains_the_cnn_past_90_percent_with_adam(
  tmp_path,
):
  # The acceptance bar of the foundation issue: Adam at its registered rate,
  # the default steps and seeds, on the real MNIST-1D CNN.
  parser_defaults = cli._parser().parse_args(['bench'])
  result = bench.run_bench(
    bench.load_data('mnist1d'),
    ['adam'],
    steps=parser_defaults.steps,
    seeds=parser_defaults.seeds,
    out=tmp_path,
    progress=False,
    log=lambda _: None,
  )
  assert result['methods']['adam']['final_accuracy'] >= 0.90
