"""SAM, ASAM and GSAM against SGD and Adam on MNIST-1D with label noise
(Foret et al. 2021: better test accuracy, robustness to noisy labels), with
m-sharpness and the cost per step.

MNIST-1D MLP (40-100-100-10), batch 128, cosine-decayed learning rate, 10
seeds trained as one program. 500 of the 4000 training sequences are held
out as a validation split that carries the same label noise as the training
split: every method's learning rate (and SAM's rho) is chosen on it, from
the same grid, and the clean test set (1000) only reports. Symmetric noise
moves a fraction of the training labels to another class, uniformly
(`optax_zoo.training.data.with_label_noise`, one draw per noise level).
ASAM (rho 0.5, eta 0.01, the reference's) and GSAM (rho 0.1 -> 0.02 with the
rate, alpha 0.2) run at fixed hyperparameters; SAM's rho is tuned.
m-sharpness (m examples per perturbation, batch 128) uses ``num_splits`` on
one device, which the tests prove equal to per-device perturbations under a
named axis (``tests/sharpness/sam_test.py``, ``sam_mesh_test.py``), at SAM's
chosen (rate, rho).

  python -m experiments.sharpness.sam   # ~25 min on 2 shared cores
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import optax
from flax import nnx

import optax_zoo
from experiments import _lib
from optax_zoo import training
from optax_zoo.training.data import with_label_noise

NAME = 'sharpness_sam'
RATES = (3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
RHOS = (0.02, 0.05, 0.1)
NOISE = (0.0, 0.2, 0.4)
M_VALUES = (8, 32, 128)
BATCH, NUM_VAL = 128, 500
METHODS = ('sgd', 'adam', 'sam', 'asam', 'gsam')
MODEL = 'MLP 40-100-100-10'
SETTING = (
  'MNIST-1D, 3500 train / 500 validation (same label noise) / 1000 clean '
  'test; batch 128; cosine decay to 0; SGD momentum 0.9 inner for SAM, '
  'ASAM (rho 0.5, eta 0.01), GSAM (rho 0.1 -> 0.02 with the rate, alpha '
  '0.2); rate and SAM rho chosen by mean final validation accuracy'
)


def model_fn(rngs: nnx.Rngs) -> nnx.Module:
  return training.MLP(40, rngs=rngs)


def make_tx(method: str, lr: float, steps: int, rho: float = 0.05, m=BATCH):
  schedule = optax.cosine_decay_schedule(lr, steps)
  sgd = optax_zoo.sgd(schedule, momentum=0.9)
  if method == 'sgd':
    return sgd
  if method == 'adam':
    return optax_zoo.adam(schedule)
  if method == 'sam':
    return optax_zoo.sam(sgd, rho=rho, num_splits=BATCH // m)
  if method == 'asam':
    return optax_zoo.asam(sgd, rho=0.5, eta=0.01)
  if method == 'gsam':
    return optax_zoo.gsam(
      sgd,
      rho_max=0.1,
      rho_min=0.02,
      alpha=0.2,
      lr_schedule=schedule,
      lr_max=lr,
    )
  raise ValueError(f'unknown method {method!r}')


def splits(noise: float) -> tuple[training.Dataset, dict]:
  """Train/validation split with ``noise``, and the arrays to score on."""
  clean = training.mnist1d()
  noisy = with_label_noise(clean, noise, seed=0)
  perm = np.random.default_rng(0).permutation(len(clean.y_train))
  val, fit = perm[:NUM_VAL], perm[NUM_VAL:]
  data = training.Dataset(
    x_train=clean.x_train[fit],
    y_train=noisy.y_train[fit],
    x_test=clean.x_train[val],
    y_test=noisy.y_train[val],
    num_classes=clean.num_classes,
    name=f'mnist1d-noise{noise:g}',
  )
  score_on = {
    'test': (clean.x_test, clean.y_test),
    'train_noisy_labels': (clean.x_train[fit], noisy.y_train[fit]),
    'train_clean_labels': (clean.x_train[fit], clean.y_train[fit]),
  }
  return data, score_on


def train_and_score(tx, data, score_on, seeds, steps, desc) -> dict:
  start = time.time()
  result = training.train_seeds(
    model_fn,
    tx,
    data,
    seeds=seeds,
    steps=steps,
    batch_size=BATCH,
    eval_every=max(1, steps // 4),
    progress=False,
    desc=desc,
  )
  eval_fn = training.make_eval_fn(result.graphdef, vmap=True)
  out = {'val': np.asarray(result.history.final_accuracy).tolist()}
  for name, (x, y) in score_on.items():
    _, acc = eval_fn(result.eval_params, result.eval_model_state, x, y)
    out[name] = np.asarray(acc).tolist()
  out['step_time'] = result.history.median_step_time
  print(
    f'{desc:34s} val {np.mean(out["val"]):.3f} test '
    f'{np.mean(out["test"]):.3f} ({time.time() - start:.0f} s)',
    flush=True,
  )
  return out


def grid(method: str, rates, rhos) -> list[tuple[float, float | None]]:
  return [
    (lr, rho) for lr in rates for rho in (rhos if method == 'sam' else [None])
  ]


def key(noise, method, lr, rho=None, m=BATCH) -> str:
  k = f'noise {noise:g} | {method} | lr {lr:g}'
  if rho is not None:
    k += f' | rho {rho:g}'
  return k + (f' | m {m}' if m != BATCH else '')


def best(runs, noise, method, rates, rhos) -> tuple[str, float, float | None]:
  """The grid point with the best mean validation accuracy."""
  points = grid(method, rates, rhos)
  keys = [key(noise, method, lr, rho) for lr, rho in points]
  i = int(np.argmax([np.mean(runs[k]['val']) for k in keys]))
  return keys[i], *points[i]


def measure_cost(steps: int, repeats: int, m_values, methods) -> dict:
  """Median wall time of a jitted chunk of training steps, one seed.

  Methods are interleaved in every repeat, so a load change on the shared
  machine hits them alike; ratios are against SGD (the inner optimizer).
  """
  data = training.mnist1d()
  x, y = jax.numpy.asarray(data.x_train), jax.numpy.asarray(data.y_train)
  rng = np.random.default_rng(0)
  batches = jax.numpy.asarray(
    rng.integers(0, len(data.y_train), (steps, BATCH)), jax.numpy.int32
  )
  configs = {'sgd': make_tx('sgd', 0.05, steps)}
  for method in methods[1:]:
    configs[method] = make_tx(method, 0.05, steps)
  for m in m_values:
    if m != BATCH:
      configs[f'sam m={m}'] = make_tx('sam', 0.05, steps, m=m)
  fns, states = {}, {}
  for name, tx in configs.items():
    model = model_fn(nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    fns[name] = training.make_train_fn(graphdef, tx)
    states[name] = (params, rest, tx.init(params))
  times = {name: [] for name in configs}
  for rep in range(repeats + 1):
    for name, fn in fns.items():
      t = time.perf_counter()
      *state, losses = fn(*states[name], x, y, batches)
      losses.block_until_ready()
      states[name] = tuple(state)
      if rep:  # the first call compiles
        times[name].append((time.perf_counter() - t) / steps)
  median = {name: float(np.median(t)) for name, t in times.items()}
  return {
    'seconds_per_step': median,
    'ratio_to_sgd': {n: t / median['sgd'] for n, t in median.items()},
    'steps_per_call': steps,
    'repeats': repeats,
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=2000)
  parser.add_argument('--seeds', type=int, default=10)
  parser.add_argument('--rates', type=float, nargs='+', default=RATES)
  parser.add_argument('--rhos', type=float, nargs='+', default=RHOS)
  parser.add_argument('--noise', type=float, nargs='+', default=NOISE)
  parser.add_argument('--m', type=int, nargs='+', default=M_VALUES)
  parser.add_argument(
    '--methods',
    nargs='+',
    choices=METHODS,
    default=list(METHODS),
    help='a subset for a quick run (sgd and sam are always included)',
  )
  parser.add_argument('--cost-steps', type=int, default=200)
  parser.add_argument('--cost-repeats', type=int, default=5)
  args = parser.parse_args(argv)
  for m in args.m:
    if BATCH % m:
      parser.error(f'--m values must divide the batch size {BATCH}')
  seeds = list(range(args.seeds))
  methods = [m for m in METHODS if m in {'sgd', 'sam', *args.methods}]
  # Runs are keyed by their grid point, so a run with more rates or rhos
  # keeps the ones already measured.
  result = _lib.resume(
    NAME, steps=args.steps, seeds=seeds, batch_size=BATCH, model=MODEL
  )
  result.update(rates=list(args.rates), rhos=list(args.rhos))
  result.update(noise=list(args.noise), m=list(args.m), setting=SETTING)
  runs = result['runs']

  def run(k, tx, data, score_on):
    if k not in runs:
      runs[k] = train_and_score(tx, data, score_on, seeds, args.steps, k)
      _lib.save(NAME, result)

  for noise in args.noise:
    data, score_on = splits(noise)
    for method in methods:
      for lr, rho in grid(method, args.rates, args.rhos):
        tx = make_tx(method, lr, args.steps, rho if rho else 0.05)
        run(key(noise, method, lr, rho), tx, data, score_on)
    # m-sharpness at SAM's chosen rate, rho tuned again for each m: a
    # part of m examples has a larger gradient norm per example, and the
    # paper tunes rho for each m too.
    _, lr, _ = best(runs, noise, 'sam', args.rates, args.rhos)
    for m in args.m:
      if m != BATCH:
        for rho in args.rhos:
          tx = make_tx('sam', lr, args.steps, rho, m=m)
          run(key(noise, 'sam', lr, rho, m=m), tx, data, score_on)

  result['chosen'], result['summary'], result['vs_sgd'] = {}, {}, {}
  result['m_sharpness'] = {}
  for noise in args.noise:
    n = f'noise {noise:g}'
    chosen = {
      m: best(runs, noise, m, args.rates, args.rhos)[0] for m in methods
    }
    result['chosen'][n] = chosen
    test = {m: runs[k]['test'] for m, k in chosen.items()}
    result['summary'][n] = {m: _lib.summary(t) for m, t in test.items()}
    result['vs_sgd'][n] = {
      m: {
        **_lib.paired(test[m], test['sgd']),
        'verdict': _lib.verdict(test[m], test['sgd']),
      }
      for m in methods
      if m != 'sgd'
    }
    if 'adam' in methods:
      result['vs_sgd'][n]['sam_vs_adam'] = {
        **_lib.paired(test['sam'], test['adam']),
        'verdict': _lib.verdict(test['sam'], test['adam']),
      }
    _, sam_lr, _ = best(runs, noise, 'sam', args.rates, args.rhos)
    m_keys = {
      m: max(
        (key(noise, 'sam', sam_lr, rho, m=m) for rho in args.rhos),
        key=lambda k: np.mean(runs[k]['val']),
      )
      for m in args.m
    }
    m_runs = {m: runs[k]['test'] for m, k in m_keys.items()}
    result['m_sharpness'][n] = {
      str(m): {
        'run': m_keys[m],
        **_lib.summary(t),
        'minus_m128': _lib.paired(t, m_runs[BATCH])
        if BATCH in m_runs
        else None,
      }
      for m, t in m_runs.items()
    }
  _lib.save(NAME, result)
  if 'cost' not in result:
    result['cost'] = measure_cost(
      args.cost_steps, args.cost_repeats, args.m, methods
    )
    _lib.save(NAME, result)
  report(result, methods)
  plot(result, methods)


def report(result, methods) -> None:
  rows = [
    '| noise | '
    + ' | '.join(methods)
    + ' | '
    + ' | '.join(f'{m} - sgd' for m in methods[1:])
    + ' |',
    '|---' * (2 * len(methods)) + '|',
  ]
  for n, summ in result['summary'].items():
    vs = result['vs_sgd'][n]
    rows.append(
      f'| {n} | '
      + ' | '.join(_lib.fmt(summ[m]) for m in methods)
      + ' | '
      + ' | '.join(
        f'{_lib.fmt(vs[m])} ({vs[m]["verdict"]})' for m in methods[1:]
      )
      + ' |'
    )
  print('\n'.join(rows))
  for n, vs in result['vs_sgd'].items():
    if 'sam_vs_adam' in vs:
      s = vs['sam_vs_adam']
      print(f'{n}: sam - adam {_lib.fmt(s)} ({s["verdict"]})')
  for n, chosen in result['chosen'].items():
    print(n, 'chosen:', '; '.join(chosen.values()))
  for n, ms in result['m_sharpness'].items():
    print(n, 'm-sharpness:', {m: _lib.fmt(s) for m, s in ms.items()})
  print(
    'cost / step vs SGD:',
    {k: round(v, 2) for k, v in result['cost']['ratio_to_sgd'].items()},
  )


def plot(result, methods) -> None:
  import matplotlib.pyplot as plt

  fig, (ax, ax_m) = plt.subplots(1, 2, figsize=(10, 3.8))
  noises = list(result['summary'])
  width = 0.8 / len(methods)
  for i, m in enumerate(methods):
    means = [100 * result['summary'][n][m]['mean'] for n in noises]
    halves = [100 * result['summary'][n][m]['ci95'] for n in noises]
    ax.bar(
      np.arange(len(noises)) + (i - len(methods) / 2 + 0.5) * width,
      means,
      width,
      yerr=halves,
      capsize=2,
      label=m,
    )
  ax.set_xticks(range(len(noises)), [n.replace('noise ', '') for n in noises])
  ax.set_xlabel('label noise fraction')
  ax.set_ylabel('clean test accuracy (%)')
  lows = [result['summary'][n][m]['mean'] for n in noises for m in methods]
  ax.set_ylim(100 * min(lows) - 8, 100 * max(lows) + 4)
  ax.legend(fontsize=8, ncol=3)
  ax.set_title(f'MNIST-1D MLP, {len(result["seeds"])} seeds, 95% CI')
  for n, ms in result['m_sharpness'].items():
    ks = sorted(ms, key=int)
    ax_m.errorbar(
      [int(k) for k in ks],
      [100 * ms[k]['mean'] for k in ks],
      [100 * ms[k]['ci95'] for k in ks],
      marker='o',
      capsize=3,
      label=n,
    )
  ax_m.set_xscale('log', base=2)
  ax_m.set_xlabel('m (examples per perturbation)')
  ax_m.set_ylabel('clean test accuracy (%)')
  ax_m.set_title('SAM m-sharpness (batch 128)')
  ax_m.legend(fontsize=8)
  _lib.save_plot(fig, _lib.plot_path(__file__, 'sam.png'))


if __name__ == '__main__':
  main()
