"""Every experiment launcher runs at a tiny size and writes its results.

Launchers are discovered, so a new one fails `test_launcher_has_a_smoke_run`
until it gets a tiny configuration in `TINY`. Each runs in this process
(``module.main(argv)``) with ``$OPTAX_ZOO_RESULTS`` pointing at a temporary
directory, so the committed results are never touched.
"""

import importlib
import json
import math
import os
import pkgutil

import pytest

import experiments
from experiments import _lib
from optax_zoo._src import test_utils as tu

# Launcher module -> (command line of a tiny run, top-level keys of its
# JSON, whether it saves a plot). Each run trains as few configurations as
# the launcher's flags allow: compilations, not steps, are what costs time.
TINY = {
  'adaptive.adamw_decoupling': (
    '--steps 2 --seeds 2 --rates 0.01 --decays 1e-3',
    {'adaptive_adamw_decoupling': ['steps', 'model', 'seeds', 'runs']},
    True,
  ),
  'adaptive.adafactor_factored': (
    '--steps 2 --seeds 2 --selection-seeds 1 --rates 0.01 '
    '--methods adam adafactor-factored',
    {'adaptive_adafactor_factored': ['steps', 'seeds', 'runs', 'summary']},
    True,
  ),
  'adaptive.batch_rule': (
    '--steps 2 --seeds 2 --batches 32 --num-rates 1',
    {'adaptive_batch_rule': ['steps', 'seeds', 'runs']},
    False,
  ),
  'adaptive.kfac_large_batch': (
    '--models mlp --steps 2 --seeds 1 --rates 0.1 --batch-size 64',
    {'adaptive_kfac_large_batch': ['steps', 'seeds', 'runs']},
    True,
  ),
  'adaptive.leaderboard': (
    '--methods adam --models mlp --steps 2 --seeds 2',
    {'adaptive_leaderboard': ['steps', 'seeds', 'runs']},
    True,
  ),
  'adaptive.legw': (
    '--k 2 --base-steps 40 --seeds 2',
    {'adaptive_legw': ['k', 'base_steps', 'seeds', 'runs']},
    True,
  ),
  'adaptive.reddi': (
    '--steps 200 --seeds 2 --alphas 0.1',
    {'adaptive_reddi': ['steps', 'seeds', 'runs']},
    True,
  ),
  'adaptive.sgdr': (
    '--t0 2 --cycles 1 --seeds 2',
    {'adaptive_sgdr': ['t0', 'cycles', 'seeds', 'runs']},
    True,
  ),
  'adaptive.warmup': (
    '--steps 10 --seeds 2 --rates 0.01',
    {'adaptive_warmup': ['steps', 'seeds', 'runs']},
    True,
  ),
  'adaptive.weight_rescaling': (
    '--steps 2 --seeds 2',
    {'adaptive_weight_rescaling': ['steps', 'seeds', 'runs']},
    True,
  ),
  'analysis.batch_hessian': (
    '--steps 2 --batch-sizes 16 --num-batches 2 --lanczos-steps 4 --hidden 8',
    {'analysis_batch_hessian': ['full', 'batches', 'config']},
    True,
  ),
  'analysis.dropout_flatness': (
    '--steps 30 --seeds 1 --rates 0 0.1 --hidden 8',
    {
      'analysis_dropout_flatness': [
        'runs',
        'summary',
        'paired_vs_no_dropout',
        'top_eigenvalue_ratio_at_matched_loss',
      ]
    },
    True,
  ),
  'analysis.r_med': (
    '--steps 5 --hidden 8 --examples 50 --seeds 1',
    {'analysis_r_med': ['adam', 'sgd', 'config']},
    True,
  ),
  'analysis.skip_landscape': (
    '--steps 2 --blocks 1 --channels 4 --examples 32 --grid 3 --seeds 1',
    {'analysis_skip_landscape': ['skip', 'no_skip', 'config']},
    True,
  ),
  'analysis.trajectory': (
    '--steps 4 --num-checkpoints 2 --hidden 8 --small 16 --big 64 --seeds 1',
    {'analysis_trajectory': ['runs', 'config']},
    True,
  ),
  'averaging.fge': (
    '--seeds 4 --steps 10 --curve-steps 2 --cycle-steps 2',
    {'averaging_fge': ['runs', 'summary', 'fge_minus_single', 'curve']},
    True,
  ),
  'averaging.lookahead': (
    '--seeds 2 --steps 4 --rates 0.01 --optimizers sgd',
    {'averaging_lookahead': ['steps', 'seeds', 'runs', 'summary']},
    True,
  ),
  'averaging.gadam': (
    '--seeds 2 --steps 4',
    {'averaging_gadam': ['runs', 'summary', 'paired']},
    True,
  ),
  'averaging.periodic_swa': (
    '--seeds 2 --steps 4',
    {'averaging_periodic_swa': ['runs', 'summary', 'pswa_minus']},
    True,
  ),
  'averaging.swa': (
    '--seeds 2 --steps 4',
    {'averaging_swa': ['runs', 'summary', 'swa_minus']},
    True,
  ),
  'averaging.swag': (
    '--seeds 2 --steps 40 --samples 2',
    {'averaging_swag': ['runs', 'summary', 'swag_minus']},
    True,
  ),
  'distributed.block_admm': (
    '--methods admm --no-deepfacto --steps 2 --seeds 2 --rates 0.01 '
    '--depth 2 --width 8 --w-steps 1 --z-steps 1 --batch 32',
    {
      'distributed_block_admm': [
        'steps',
        'seeds',
        'runs',
        'summary',
        'setting',
        'claims',
      ]
    },
    True,
  ),
  'distributed.communication': (
    '--workers 4 8 --mesh-workers 4 --large-params 0',
    {
      'distributed_communication': [
        'config',
        'setting',
        'measured',
        'modelled',
        'claims',
      ]
    },
    True,
  ),
  'distributed.compression': (
    '--models cnn --methods uncompressed adacomp --steps 2 --seeds 2 '
    '--rates 0.1 --workers 2 --batch 8',
    {
      'distributed_compression': [
        'steps',
        'seeds',
        'runs',
        'summary',
        'setting',
        'claims',
      ]
    },
    True,
  ),
  'distributed.federated': (
    '--rounds 2 --local-steps 2 --clients 4 --seeds 2 --rates 0.1 '
    '--weights 10 --hidden 8 --proxy 2 --early 1 --methods fedavg continual',
    {
      'distributed_federated': [
        'rounds',
        'seeds',
        'runs',
        'summary',
        'setting',
        'claims',
      ]
    },
    True,
  ),
  'distributed.large_batch': (
    '--steps 2 --seeds 2 --rates 0.1 --log-every 1 --workers 2 --batch 8 '
    '--hidden 8 --hvp-examples 4 --power-iters 1',
    {
      'distributed_large_batch': [
        'steps',
        'seeds',
        'rates',
        'runs',
        'summary',
        'claims',
        'setting',
      ]
    },
    True,
  ),
  'distributed.stragglers': (
    '--steps 40 --seeds 2 --rates 0.3 --workers 2 --micro 2 '
    '--micro-batch 16 --hidden 16 --eval-every 20 --target 2.1',
    {
      'distributed_stragglers': [
        'steps',
        'seeds',
        'runs',
        'summary',
        'setting',
        'claims',
      ]
    },
    True,
  ),
  # An extra-argument method and a wrapper: `info.build(lr)` must place the
  # rate and the loop supply the arguments.
  'lr_grid.run': (
    '--methods koala_v,lookahead --steps 2 --seeds 2 --rates 0.01',
    {'lr_grid': ['config', 'accuracy']},
    False,
  ),
  'perf.adaptive_step_time': (
    '--methods adam,koala_v --params 2000 --repeats 1 --steps 1 '
    '--min-copy-floats 1024',
    {'perf_adaptive': ['config', 'machine', 'methods']},
    False,
  ),
  'perf.hessian_vs_pyhessian': (
    '--examples 32 --hidden 8 --repeats 1 --train-steps 2',
    {'hessian_vs_pyhessian': ['pyhessian', 'power', 'lanczos', 'config']},
    False,
  ),
  'perf.kfac_distributed': (
    '--devices 2 --width 16 --batch 4 --repeats 1 --steps 1',
    {'perf_kfac_distributed': ['config', 'machine', 'measured']},
    False,
  ),
  'perf.kfac_step_time': (
    '--models mlp --batch 16 --repeats 1 --steps 10 '
    '--variants kfac_eigen_T10,kfac_pi_T10_loop',
    {'perf_kfac_step_time': ['config', 'machine', 'models']},
    False,
  ),
  'perf.mesh_throughput': (
    '--devices 4 --width 16 --batch 8 --steps 1 --repeats 1',
    {'perf_mesh': ['config', 'machine', 'setting', 'measured']},
    False,
  ),
  'perf.quantized': (
    '--params 100000 --repeats 1 --steps 1 --no-torch',
    {'perf_quantized': ['config', 'machine', 'methods']},
    False,
  ),
  'perf.private_throughput': (
    '--steps 2 --repeats 1 --batch 8 --models mlp '
    '--runners nonprivate,ghost,opacus_hooks,opacus_ghost',
    {'perf_private': ['config', 'machine', 'models']},
    False,
  ),
  'privacy.audit': (
    '--canaries 20 --steps 3 --real-examples 200 --seeds 1 --hidden 8',
    {'privacy_audit': ['config', 'runs', 'summary', 'audit_passes', 'setting']},
    True,
  ),
  'privacy.accuracy': (
    '--steps 4 --seeds 2 --epsilons 8 --rates 0.3 --pld-discretization 0.1',
    {'privacy_accuracy': ['steps', 'seeds', 'runs', 'summary', 'setting']},
    True,
  ),
  'privacy.tricks': (
    '--steps 3 --seeds 2 --configs ws_gn_augmented --rates 0.3 '
    '--multiplicity 2 --eps1-steps 2 --eps1-rates 1.0 '
    '--pld-discretization 0.1',
    {'privacy_tricks': ['steps', 'seeds', 'runs', 'summary', 'setting']},
    True,
  ),
  'quantization.accuracy': (
    '--steps 2 --seeds 2 --models mlp --pairs adam',
    {
      'quantization_accuracy': [
        'steps',
        'batch',
        'seeds',
        'weight_decay',
        'runs',
        'summary',
        'setting',
      ]
    },
    True,
  ),
  'quantization.embedding': (
    '--steps 2 --seeds 2 --rates 0.01 --embeddings stable',
    {
      'quantization_embedding': [
        'steps',
        'batch',
        'vocab',
        'dim',
        'rates',
        'seeds',
        'runs',
        'summary',
        'setting',
      ]
    },
    True,
  ),
  'sharpness.entropy_replicated': (
    '--grads 6 --seeds 2 --rates 0.1 --samples 2 --langevin-steps 2 '
    '--replicas 2 --flat-batch 1000',
    {
      'sharpness_entropy_replicated': [
        'runs',
        'grid',
        'summary',
        'paired_vs_sgd',
        'correlation',
        'setting',
      ]
    },
    True,
  ),
  'sharpness.sam': (
    '--steps 2 --seeds 2 --rates 0.1 --rhos 0.05 --noise 0.2 --m 128 '
    '--methods sgd --cost-steps 2 --cost-repeats 1',
    {
      'sharpness_sam': [
        'steps',
        'seeds',
        'batch_size',
        'model',
        'runs',
        'rates',
        'rhos',
        'noise',
        'm',
        'setting',
        'chosen',
        'summary',
        'vs_sgd',
        'm_sharpness',
        'cost',
      ]
    },
    True,
  ),
  'sharpness.sphere': (
    '--steps 4 --seeds 2 --elrs 0.01 --channels 2',
    {
      'sharpness_sphere': [
        'steps',
        'seeds',
        'channels',
        'batch_size',
        'runs',
        'setting',
        'classification',
        'summary',
      ]
    },
    True,
  ),
  'sparsity.rigl': (
    '--models mlp --steps 2 --seeds 2 --rates 0.1 --sparsities 0.9 '
    '--distributions erk --methods dense static rigl',
    {
      'sparsity_rigl': [
        'steps',
        'batch',
        'seeds',
        'tune_seeds',
        'rates',
        'runs',
        'tuning',
        'summary',
        'small_dense',
      ]
    },
    True,
  ),
  # One method: sup_tickets' loop path is covered by tests/sparsity.
  'sparsity.tickets': (
    '--steps 2 --seeds 2 --dense-rates 0.1 --methods free_tickets',
    {'sparsity_tickets': ['steps', 'seeds', 'sparsity', 'runs', 'summary']},
    True,
  ),
  'training.batch_augmentation': (
    '--steps 2 --seeds 2 --selection-seeds 1 --rates 0.01 '
    '--multiplicities 1 2 --channels 4',
    {'training_batch_augmentation': ['steps', 'seeds', 'runs', 'summary']},
    True,
  ),
  'training.fast_adversarial': (
    '--steps 2 --seeds 2 --selection-seeds 1 --rates 0.01 '
    '--methods standard fgsm-rs --channels 4 --attack-steps 2',
    {'training_fast_adversarial': ['steps', 'seeds', 'runs', 'summary']},
    True,
  ),
  'training.sat': (
    '--steps 2 --seeds 2 --selection-seeds 1 --rates 0.01 --eps 0.2 '
    '--methods at p-sat --channels 4 --attack-steps 2 --hessian-examples 16',
    {'training_sat': ['steps', 'seeds', 'runs', 'summary']},
    True,
  ),
}

# Launchers whose results may hold NaN at this size: they run one seed (one
# seed has no interval), and a sharpness ratio is NaN where the no-dropout
# path never reaches the loss.
MAY_HOLD_NAN = {
  'analysis.dropout_flatness',
  'analysis.r_med',
  'analysis.skip_landscape',
  'analysis.trajectory',
}


def _launchers() -> list[str]:
  return sorted(
    m.name.removeprefix('experiments.')
    for m in pkgutil.walk_packages(experiments.__path__, 'experiments.')
    if not m.ispkg
    and m.name.rsplit('.', 1)[-1] not in ('common', '_lib')
    and m.name.count('.') == 2
  )


LAUNCHERS = _launchers()


def _numbers(tree):
  if isinstance(tree, dict):
    tree = list(tree.values())
  if isinstance(tree, list):
    for x in tree:
      yield from _numbers(x)
  elif isinstance(tree, int | float) and not isinstance(tree, bool):
    yield float(tree)


def test_launchers_are_discovered():
  assert 'averaging.swa' in LAUNCHERS and 'lr_grid.run' in LAUNCHERS


@pytest.mark.parametrize('name', LAUNCHERS)
def test_launcher_has_a_smoke_run(name):
  assert name in TINY, f'add a tiny run of experiments.{name} to TINY'


@pytest.mark.parametrize('name', LAUNCHERS)
def test_help_exits_zero(name, capsys):
  module = importlib.import_module(f'experiments.{name}')
  with pytest.raises(SystemExit) as exit_info:
    module.main(['--help'])
  assert exit_info.value.code == 0
  assert 'usage:' in capsys.readouterr().out


@pytest.mark.parametrize('name', sorted(TINY))
def test_launcher_runs_at_tiny_size(name, tmp_path, monkeypatch):
  if name.startswith('perf.hessian'):
    pytest.importorskip('pyhessian')
  monkeypatch.setenv(_lib.RESULTS_ENV, str(tmp_path))
  monkeypatch.setenv('MPLBACKEND', 'Agg')
  # Launchers that measure in a child process (a device count fixed at
  # start) compile there as this process does (conftest.py): fast.
  for k, v in tu.fast_compile_env(dict(os.environ)).items():
    monkeypatch.setenv(k, v)
  argv, results, plots = TINY[name]
  importlib.import_module(f'experiments.{name}').main(argv.split())
  for result, keys in results.items():
    path = tmp_path / f'{result}.json'
    assert path.exists(), f'{name} did not write {path.name}'
    saved = json.loads(path.read_text())
    assert set(keys) <= set(saved), (name, sorted(saved))
    numbers = list(_numbers(saved))
    assert numbers and all(
      math.isfinite(x) or (name in MAY_HOLD_NAN and math.isnan(x))
      for x in numbers
    ), name
  assert bool(list(tmp_path.glob('*.png'))) == plots, name
  assert not list(tmp_path.glob('*.tmp')), 'a save was not atomic'
