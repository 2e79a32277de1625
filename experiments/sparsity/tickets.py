"""FreeTickets and Sup-tickets against one dense model at equal training FLOPs.

  python -m experiments.sparsity.tickets

Claims (``shared/METHODS.md`` rows 32-33): an EDST ensemble of sparse
tickets beats a single dense model at no more training cost (Liu et al.
2022), and superposing cheap tickets beats one (Yin et al. 2022). On
MNIST-1D with `training.CNN1D` (batch 128, seeds 100..109 vmapped as one
program), SGD with momentum 0.9 throughout:

* dense: ``--steps`` steps with the papers' dense schedule (rate divided by
  10 at 50% and 75% of training), at the best of ``--dense-rates``;
* FreeTickets (EDST, `sparsity.free_tickets`): 80% sparsity (the paper's
  main setting), ERK, 3 tickets, exploration a third of training, mask
  updates every 100 steps with fraction 0.5 and re-explorations with 0.8,
  `sparsity.free_tickets_schedule` from the best of ``--sparse-rates``;
  evaluated as the ensemble of its tickets (`sparsity.ensemble_predict`);
* Sup-tickets (`sparsity.sup_tickets`): 80%, ERK, 3 cycles taking 10% of
  training (the reference's ``--cycle_rate 0.1``), fraction 0.5 for both
  updates and re-explorations, `sparsity.sup_tickets_schedule` from the
  best of ``--sparse-rates``; evaluated on the superposed ticket
  (``eval_params``).

Every method is tuned at its own optimum on tuning seeds disjoint from the
reported ones: ``--tune-seeds`` seeds from 1000 (default 3, vmapped) train
each rate of its grid (dense ``--dense-rates``, default 0.03 0.1 0.3; each
sparse method ``--sparse-rates``, default the dense grid) at the same step
budget and schedule as its reported run, the rate with the best mean final
test accuracy of what the method outputs (dense model, ensemble, superposed
ticket) is picked, and the reported seeds are then trained at it. The
tuning accuracies, NLLs and ECEs are in the JSON (``tuning``, per method
and rate) and the picked rates in ``picked``; a grid of a single rate skips
tuning.

Equal training FLOPs (`sparsity.training_flops`' accounting, RigL App. H):
a dense step costs ``3 f_D`` per example, a sparse step ``3 f_S`` and a
mask update (which needs the dense weight gradient) ``2 f_S + f_D``, with
``f_D`` and ``f_S`` the dense and ERK-sparse forward FLOPs of the CNN
(``experiments.sparsity.common.layer_flops``: kernels times their output
positions, biases dense).
Each sparse method gets the largest step count whose total does not exceed
the dense run's ``3 f_D T``; the table lists the counts and the ratio.

Seeds under `training.train_seeds` share one transform, so its ``key``
would give every seed the same random masks: the transforms here are built
inside ``init`` with a key from the bits of the seed's initial parameters
(``experiments.sparsity.common.seeded``), so masks differ per seed and
follow the seed. Accuracy, NLL and ECE (15 bins) with 95% t-intervals and paired
differences against dense (`_lib.summary`, `_lib.paired`); the table goes
to ``experiments/sparsity/tickets.md``, the plot next to this file.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments import _lib
from experiments.adaptive import common as adaptive_common
from experiments.averaging import common
from experiments.sparsity import common as sparse_common
from optax_zoo import adaptive, sparsity, training

NAME = 'sparsity_tickets'
SPARSITY = 0.8
UPDATE_EVERY = 100
NUM_TICKETS = 3
NUM_CYCLES = 3
CYCLE_FRACTION = 0.1
DENSE_RATES = (0.03, 0.1, 0.3)
FIRST_TUNE_SEED = 1000


@functools.cache
def forward_flops() -> tuple[float, float]:
  """``(f_D, f_S)``: forward FLOPs per example, dense and at `SPARSITY`
  ERK (`sparse_common.layer_flops`: kernels and biases)."""
  flops = sparse_common.layer_flops(common.model_fn)
  params = nnx.to_pure_dict(nnx.state(common.model_fn(nnx.Rngs(0)), nnx.Param))
  masks = sparsity.init_masks(jax.random.key(0), params, SPARSITY)
  layer, density = sparse_common.flop_counts(flops, masks)
  return float(sum(layer)), sparsity.inference_flops(layer, density)


def sup_layout(steps: int) -> tuple[int, int]:
  """``(cycle_steps, pre-training steps)`` of a Sup-tickets run."""
  cycle = max(1, int(CYCLE_FRACTION * steps) // NUM_CYCLES)
  return cycle, steps - NUM_CYCLES * cycle


def mask_updates(method: str, steps: int) -> int:
  """Mask-update steps of a run: regular ones plus re-explorations."""
  if method == 'free_tickets':
    return steps // UPDATE_EVERY + NUM_TICKETS - 1
  _, pretrain = sup_layout(steps)
  return pretrain // UPDATE_EVERY + NUM_CYCLES


def train_flops(method: str, steps: int) -> float:
  f_dense, f_sparse = forward_flops()
  if method == 'dense':
    return 3 * f_dense * steps
  updates = mask_updates(method, steps)
  return 3 * f_sparse * (steps - updates) + (2 * f_sparse + f_dense) * updates


def matched_steps(method: str, dense_steps: int) -> int:
  """The most steps of ``method`` within the dense run's training FLOPs."""
  budget = train_flops('dense', dense_steps)
  steps = dense_steps
  while train_flops(method, steps + 1) <= budget:
    steps += 1
  return steps


def dense_tx(lr: float, steps: int):
  schedule = optax.piecewise_constant_schedule(
    lr, {steps // 2: 0.1, (3 * steps) // 4: 0.1}
  )
  return adaptive.sgd(schedule, momentum=0.9)


def free_tickets_tx(lr: float, steps: int):
  schedule = sparsity.free_tickets_schedule(
    lr, total_steps=steps, num_tickets=NUM_TICKETS
  )
  return sparse_common.seeded(
    sparsity.free_tickets,
    inner=adaptive.sgd(schedule, momentum=0.9),
    sparsity=SPARSITY,
    total_steps=steps,
    num_tickets=NUM_TICKETS,
    update_every=UPDATE_EVERY,
    drop_fraction=0.5,
    large_drop_fraction=0.8,
  )


def sup_tickets_tx(lr: float, steps: int):
  cycle, _ = sup_layout(steps)
  schedule = sparsity.sup_tickets_schedule(
    lr, total_steps=steps, cycle_steps=cycle, num_cycles=NUM_CYCLES
  )
  return sparse_common.seeded(
    sparsity.sup_tickets,
    inner=adaptive.sgd(schedule, momentum=0.9),
    sparsity=SPARSITY,
    total_steps=steps,
    cycle_steps=cycle,
    num_cycles=NUM_CYCLES,
    update_every=UPDATE_EVERY,
    drop_fraction=0.5,
    large_drop_fraction=0.5,
  )


@jax.jit
def _member_probs(graphdef, members, rest, x):
  """Per seed, each member's softmax outputs: (seeds, M, N, C)."""

  def one_seed(ms, r):
    apply = lambda p: jax.nn.softmax(nnx.merge(graphdef, p, r)(x))
    return jax.lax.map(apply, ms)

  return jax.vmap(one_seed)(members, rest)


def evaluate(method: str, result: training.TrainResult, data) -> dict:
  """Metrics of what ``method`` outputs, and of its single tickets."""
  x, y = jnp.asarray(data.x_test), data.y_test
  if method == 'free_tickets':
    members, valid = jax.vmap(sparsity.free_tickets_members)(
      result.opt_state, result.params
    )
    assert bool(np.all(valid))
    probs = _member_probs(result.graphdef, members, result.model_state, x)
    # `ensemble_predict`'s mean of softmax outputs, per seed.
    ensemble = jax.vmap(
      lambda ms, r: sparsity.ensemble_predict(
        lambda p, xx: nnx.merge(result.graphdef, p, r)(xx), ms, x
      )
    )(members, result.model_state)
    out = common.metrics(ensemble, y)
    singles = [common.metrics(probs[:, m], y) for m in range(probs.shape[1])]
    out['tickets'] = {k: [s[k] for s in singles] for k in singles[0]}
    return out
  out = common.metrics(common.probs(result, x), y)
  if method == 'sup_tickets':
    last = common.probs(result, x, params=result.params)
    out['last_ticket'] = common.metrics(last, y)
  return out


def density(result: training.TrainResult, method: str) -> float:
  """Nonzero fraction of the evaluated kernels (seed 0)."""
  weights = result.params if method == 'free_tickets' else result.eval_params
  kernels = [x[0] for x in jax.tree.leaves(weights) if x.ndim >= 3]
  return float(
    sum(int(np.count_nonzero(k)) for k in kernels)
    / sum(k.size for k in kernels)
  )


def run_one(method, lr, steps, seeds, data, desc='') -> dict:
  build = {
    'dense': dense_tx,
    'free_tickets': free_tickets_tx,
    'sup_tickets': sup_tickets_tx,
  }[method]
  start = time.time()
  result = training.train_seeds(
    common.model_fn,
    build(lr, steps),
    data,
    seeds=seeds,
    steps=steps,
    batch_size=common.BATCH_SIZE,
    eval_every=[],
    desc=f'{desc}{method} lr={lr:g}',
  )
  record = evaluate(method, result, data)
  seconds = time.time() - start
  record.update(
    lr=lr,
    steps=steps,
    density=density(result, method),
    train_flops=train_flops(method, steps),
    seconds=seconds,
  )
  print(
    f'{desc}{method} lr {lr:g}, {steps} steps, {len(seeds)} seeds: acc '
    f'{np.mean(record["accuracy"]):.4f} nll {np.mean(record["nll"]):.3f} '
    f'ece {np.mean(record["ece"]):.3f} ({seconds:.0f} s)',
    flush=True,
  )
  return record


def tune(result, method, rates, steps, tune_seeds, data) -> float:
  """``method``'s best rate of ``rates``: mean final test accuracy of what
  it outputs over the tuning seeds, at the reported run's steps and
  schedule. One rate is returned untuned."""
  if len(rates) == 1:
    return float(rates[0])
  seeds = list(range(FIRST_TUNE_SEED, FIRST_TUNE_SEED + tune_seeds))
  grid = result['tuning'].setdefault(method, {})
  for lr in rates:
    if f'{lr:g}' not in grid:
      run = run_one(method, lr, steps, seeds, data, desc='tune ')
      grid[f'{lr:g}'] = {
        k: run[k] for k in ('accuracy', 'nll', 'ece', 'steps', 'seconds')
      }
      _lib.save(NAME, result)
  best = max(
    (f'{lr:g}' for lr in rates), key=lambda r: np.mean(grid[r]['accuracy'])
  )
  return float(best)


def _row(name, run, dense) -> dict:
  row = {'lr': run['lr'], 'steps': run['steps'], 'density': run['density']}
  row['flops_vs_dense'] = run['train_flops'] / dense['train_flops']
  for metric in ('accuracy', 'nll', 'ece'):
    row[metric] = _lib.summary(run[metric])
    if run is not dense:
      row[f'{metric}_minus_dense'] = _lib.paired(run[metric], dense[metric])
  return row


def summarize(result) -> dict:
  runs, picked = result['runs'], result['picked']
  if 'dense' not in picked:
    return {}
  dense = runs[f'dense lr={picked["dense"]:g}']
  summary = {'dense': _row('dense', dense, dense)}
  for method, lr in picked.items():
    if method == 'dense':
      continue
    run = runs[f'{method} lr={lr:g}']
    row = _row(method, run, dense)
    if method == 'free_tickets':
      tickets = np.asarray(run['tickets']['accuracy'])  # (M, seeds)
      row['mean_ticket_accuracy'] = _lib.summary(tickets.mean(0))
      row['ensemble_minus_mean_ticket'] = _lib.paired(
        run['accuracy'], tickets.mean(0)
      )
    if method == 'sup_tickets':
      last = run['last_ticket']
      row['last_ticket_accuracy'] = _lib.summary(last['accuracy'])
      for metric in ('accuracy', 'nll', 'ece'):
        row[f'{metric}_minus_last_ticket'] = _lib.paired(
          run[metric], last[metric]
        )
    summary[method] = row
  return summary


def _word(diff, higher_is_better=True) -> str:
  low, high = diff['mean'] - diff['ci95'], diff['mean'] + diff['ci95']
  if not higher_is_better:
    low, high = -high, -low
  return 'better' if low > 0 else 'worse' if high < 0 else 'tie'


def markdown(result) -> str:
  s = result['summary']
  lines = [
    f'MNIST-1D CNN1D, seeds {result["seeds"]}, dense {result["steps"]} '
    f'steps; sparse runs at {SPARSITY:.0%} ERK sparsity with the most steps '
    'within the dense training FLOPs.',
    '',
    '| method | lr | steps | train FLOPs / dense | accuracy (%) | NLL | '
    'ECE (%) | accuracy - dense | NLL - dense | ECE - dense |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ]
  for name, row in s.items():
    diffs = ['', '', '']
    if name != 'dense':
      diffs = [
        f'{_lib.fmt(row["accuracy_minus_dense"])} '
        f'({_word(row["accuracy_minus_dense"])})',
        f'{_lib.fmt(row["nll_minus_dense"], 1.0, 3)} '
        f'({_word(row["nll_minus_dense"], False)})',
        f'{_lib.fmt(row["ece_minus_dense"])} '
        f'({_word(row["ece_minus_dense"], False)})',
      ]
    lines.append(
      f'| {name} | {row["lr"]:g} | {row["steps"]} | '
      f'{row["flops_vs_dense"]:.3f} | {_lib.fmt(row["accuracy"])} | '
      f'{_lib.fmt(row["nll"], 1.0, 3)} | {_lib.fmt(row["ece"])} | '
      + ' | '.join(diffs)
      + ' |'
    )
  extra = []
  if 'free_tickets' in s:
    row = s['free_tickets']
    extra.append(
      f'FreeTickets: one ticket {_lib.fmt(row["mean_ticket_accuracy"])}%, '
      f'ensemble minus ticket {_lib.fmt(row["ensemble_minus_mean_ticket"])} '
      'points.'
    )
  if 'sup_tickets' in s:
    row = s['sup_tickets']
    extra.append(
      'Sup-tickets: last cheap ticket '
      f'{_lib.fmt(row["last_ticket_accuracy"])}%, superposed minus last '
      f'{_lib.fmt(row["accuracy_minus_last_ticket"])} points '
      f'({_word(row["accuracy_minus_last_ticket"])}).'
    )
  timing = ', '.join(
    f'{k} {v["seconds"]:.0f} s' for k, v in result['runs'].items()
  )
  tuning = '; '.join(
    f'{method} '
    + ', '.join(
      f'{r}: {100 * np.mean(v["accuracy"]):.1f}' for r, v in grid.items()
    )
    + f' ({sum(v["seconds"] for v in grid.values()):.0f} s)'
    for method, grid in result['tuning'].items()
  )
  if tuning:
    first = FIRST_TUNE_SEED
    tuning = (
      f'Tuning (mean final test accuracy %, seeds {first}..'
      f"{first + result['tune_seeds'] - 1}, at each method's reported steps "
      f'and schedule; best picked): {tuning}.'
    )
  else:
    tuning = 'No tuning (one rate per method).'
  return '\n'.join(
    [*lines, '', *extra, '', tuning, '', f'Timings: {timing}.', '']
  )


def plot(result) -> None:
  import matplotlib.pyplot as plt

  s = result['summary']
  names = list(s)
  fig, axes = plt.subplots(1, 3, figsize=(9, 3))
  for ax, (metric, scale, label) in zip(
    axes,
    [
      ('accuracy', 100, 'accuracy (%)'),
      ('nll', 1, 'NLL'),
      ('ece', 100, 'ECE (%)'),
    ],
    strict=True,
  ):
    means = [s[n][metric]['mean'] * scale for n in names]
    errs = [s[n][metric]['ci95'] * scale for n in names]
    ax.errorbar(range(len(names)), means, yerr=errs, fmt='o', capsize=3)
    ax.set_xticks(range(len(names)), names, fontsize=7, rotation=15)
    ax.set_title(label, fontsize=9)
  fig.suptitle(
    'MNIST-1D: sparse tickets vs dense at equal training FLOPs', fontsize=9
  )
  _lib.save_plot(fig, _lib.plot_path(__file__, 'tickets.png'))


def main(argv=None):
  parser = common.parser(__doc__, 2000)
  parser.add_argument(
    '--dense-rates', type=float, nargs='+', default=list(DENSE_RATES)
  )
  parser.add_argument(
    '--sparse-rates',
    type=float,
    nargs='+',
    default=None,
    help='rates tuned for each sparse method (default: --dense-rates)',
  )
  parser.add_argument(
    '--tune-seeds', type=int, default=3, help=f'from {FIRST_TUNE_SEED}'
  )
  parser.add_argument(
    '--methods', nargs='+', default=['free_tickets', 'sup_tickets']
  )
  args = parser.parse_args(argv)
  sparse_rates = args.sparse_rates or args.dense_rates
  seeds = adaptive_common.eval_seeds(args.seeds)
  data = training.mnist1d()
  result = _lib.resume(
    NAME,
    steps=args.steps,
    seeds=seeds,
    sparsity=SPARSITY,
    tune_seeds=args.tune_seeds,
  )
  result.setdefault('tuning', {})
  result['picked'] = {}
  runs = result['runs']
  for method in ['dense', *args.methods]:
    rates = args.dense_rates if method == 'dense' else sparse_rates
    steps = (
      args.steps if method == 'dense' else matched_steps(method, args.steps)
    )
    lr = tune(result, method, rates, steps, args.tune_seeds, data)
    result['picked'][method] = lr
    key = f'{method} lr={lr:g}'
    if key not in runs:
      runs[key] = run_one(method, lr, steps, seeds, data)
      _lib.save(NAME, result)
  f_dense, f_sparse = forward_flops()
  result['flops'] = {'dense_forward': f_dense, 'sparse_forward': f_sparse}
  result['summary'] = summarize(result)
  result['setting'] = (
    f'MNIST-1D CNN1D, batch {common.BATCH_SIZE}, seeds {seeds}; SGD '
    f'momentum 0.9; dense {args.steps} steps, multistep /10 at 50% and 75%, '
    f'best of {args.dense_rates}; FreeTickets and Sup-tickets at '
    f'{SPARSITY:.0%} ERK, equal training FLOPs, their reference schedules '
    f'from the best of {sparse_rates}; rates picked by mean final test '
    f'accuracy on {args.tune_seeds} tuning seeds from {FIRST_TUNE_SEED}'
  )
  _lib.save(NAME, result)
  table = markdown(result)
  path = _lib.plot_path(__file__, 'tickets.md')
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(table)
  print(table)
  plot(result)


if __name__ == '__main__':
  main()
