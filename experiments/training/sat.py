"""Smooth adversarial training by curriculum, H-SAT and P-SAT (Sitawarin+).

The claim: a curriculum from easy to hard adversarial examples smooths the
adversarial loss landscape (a smaller top Hessian eigenvalue) and gives a
better clean against robust accuracy trade-off than plain adversarial
training (AT). H-SAT ramps the radius from 0 to eps (its difficulty metric,
the top Hessian eigenvalue, grows with the radius); P-SAT admits attacked
examples from high to low true-class probability (see
`optax_zoo.training.h_sat` and `p_sat` for this reading of the paper).
Both ramp over the first half of training. MNIST-1D CNN, Adam, batch 128,
every method attacked by FGSM with a random start (the cheap attack of
``fast_adversarial``; the paper uses PGD), eps in {0.1, 0.2, 0.3}, each
configuration at its own best rate of the grid on selection seeds (by
robust accuracy), then 10 fresh seeds; standard training as the eps = 0
end of the curve. Robust accuracy: PGD-20 at the training eps on the
whole test set. Smoothness: the top eigenvalue of the Hessian (Lanczos)
of the loss on fixed PGD-20 examples of 512 training examples, for the
first seed's model of every configuration; and the premise, that it grows
with the radius, on the AT model at eps = 0.2.

  python -m experiments.training.sat   # ~20 min on 2 cores
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import _lib
from experiments.training import common as c
from optax_zoo import analysis, training

NAME = 'training_sat'
METHODS = ('at', 'h-sat', 'p-sat')
EPS = (0.1, 0.2, 0.3)


def transform(method: str, eps: float, steps: int):
  ramp = max(1, steps // 2)
  if method == 'standard':
    return None
  if method == 'at':
    return training.adversarial_training(eps, attack='fgsm')
  if method == 'h-sat':
    return training.h_sat(eps, ramp_steps=ramp, attack='fgsm')
  if method == 'p-sat':
    return training.p_sat(eps, ramp_steps=ramp, attack='fgsm')
  raise ValueError(f'unknown method {method!r}')


def adversarial_sharpness(state, data, eps, *, attack_steps, examples, key):
  """Top Hessian eigenvalue of the loss at fixed PGD examples (one seed)."""
  model = state.model()
  x = jnp.asarray(data.x_train[:examples])
  y = jnp.asarray(data.y_train[:examples])
  x_adv = (
    training.pgd_attack(
      model,
      x,
      y,
      key,
      eps=eps,
      steps=attack_steps,
      step_size=max(2.5 * eps / attack_steps, 1e-12),
    )
    if eps > 0
    else x
  )
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(p):
    return training.cross_entropy_loss(nnx.merge(graphdef, p, rest)(x_adv), y)

  out = analysis.top_hessian_eigenvalues(
    jax.jit(loss), params, key=key, k=1, max_iters=40
  )
  return float(out.eigenvalues[0])


def run(method, eps, lr, seeds, *, args, data):
  result = training.train_seeds(
    c.model_fn(args.channels),
    c.adam(lr),
    data,
    seeds=seeds,
    steps=args.steps,
    eval_every=max(1, args.steps // 10),
    batch_transform=transform(method, eps, args.steps),
    desc=f'{method} eps={eps:g} @ {lr:g}',
  )
  eval_fn = training.make_robust_eval_fn(
    result.graphdef, eps=eps, steps=args.attack_steps, vmap=True
  )
  clean, robust, _ = eval_fn(
    result.eval_params,
    result.eval_model_state,
    data.x_test,
    data.y_test,
    jax.random.split(jax.random.key(1), len(seeds)),
  )
  return result, np.asarray(clean).tolist(), np.asarray(robust).tolist()


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  c.add_common_args(parser, steps=800)
  parser.add_argument('--eps', type=float, nargs='+', default=EPS)
  parser.add_argument('--methods', nargs='+', default=METHODS, choices=METHODS)
  parser.add_argument('--attack-steps', type=int, default=20)
  parser.add_argument('--hessian-examples', type=int, default=512)
  args = parser.parse_args(argv)
  seeds = c.eval_seeds(args.seeds)
  data = training.mnist1d()
  config = dict(
    steps=args.steps,
    seeds=seeds,
    rates=list(args.rates),
    eps=list(args.eps),
    channels=args.channels,
    selection_seeds=args.selection_seeds,
    attack_steps=args.attack_steps,
    hessian_examples=args.hessian_examples,
  )
  result = _lib.resume(NAME, **config)

  def save():
    _lib.save(NAME, result)

  key = jax.random.key(0)
  configs = [('standard', 0.0)] + [
    (m, e) for e in args.eps for m in args.methods
  ]
  middle = args.eps[len(args.eps) // 2]
  for method, eps in configs:
    name = f'{method} eps={eps:g}'
    if name in result['runs']:
      continue

    def score(lr, s, method=method, eps=eps):
      _, clean, robust = run(method, eps, lr, s, args=args, data=data)
      return np.mean(clean if method == 'standard' else robust)

    lr = c.tune(
      result,
      name,
      args.rates,
      score,
      selection_seeds=args.selection_seeds,
      save=save,
    )
    trained, clean, robust = run(method, eps, lr, seeds, args=args, data=data)
    first = trained.seed(0)
    entry = {
      'lr': lr,
      'eps': eps,
      'clean': clean,
      'robust': robust,
      'sharpness': adversarial_sharpness(
        first,
        data,
        eps,
        attack_steps=args.attack_steps,
        examples=args.hessian_examples,
        key=key,
      ),
    }
    if method == 'standard':
      # Its robustness at each eps of the grid, for the trade-off curve.
      entry['robust_at'] = {}
      for e in args.eps:
        f = training.make_robust_eval_fn(
          trained.graphdef, eps=e, steps=args.attack_steps, vmap=True
        )
        rob = f(
          trained.eval_params,
          trained.eval_model_state,
          data.x_test,
          data.y_test,
          jax.random.split(jax.random.key(1), len(seeds)),
        )[1]
        entry['robust_at'][f'{e:g}'] = np.asarray(rob).tolist()
    if method == 'at' and eps == middle:
      entry['sharpness_vs_eps'] = {
        f'{e:g}': adversarial_sharpness(
          first,
          data,
          e,
          attack_steps=args.attack_steps,
          examples=args.hessian_examples,
          key=key,
        )
        for e in (0.0, *args.eps)
      }
    result['runs'][name] = entry
    save()
  summarize(result, args)
  save()
  plot(result, args, len(seeds))


def summarize(result, args):
  runs = result['runs']
  rows = [
    '| eps | method | lr | clean acc (%) | PGD-20 robust (%) | clean minus AT '
    '| robust minus AT | top Hessian eigenvalue (first seed) |',
    '|---|---|---|---|---|---|---|---|',
  ]
  summary = {}
  for e in args.eps:
    at = runs.get(f'at eps={e:g}')
    for m in args.methods:
      r = runs[f'{m} eps={e:g}']
      entry = {
        'clean': _lib.summary(r['clean']),
        'robust': _lib.summary(r['robust']),
      }
      d_clean = d_robust = ''
      if at and m != 'at':
        entry['clean_minus_at'] = _lib.paired(r['clean'], at['clean'])
        entry['robust_minus_at'] = _lib.paired(r['robust'], at['robust'])
        d_clean = (
          f'{_lib.pct_diff(r["clean"], at["clean"])} '
          f'({_lib.verdict(r["clean"], at["clean"])})'
        )
        d_robust = (
          f'{_lib.pct_diff(r["robust"], at["robust"])} '
          f'({_lib.verdict(r["robust"], at["robust"])})'
        )
      rows.append(
        f'| {e:g} | {m} | {r["lr"]:g} | {_lib.pct(r["clean"])} '
        f'| {_lib.pct(r["robust"])} | {d_clean} | {d_robust} '
        f'| {r["sharpness"]:.3g} |'
      )
      summary[f'{m} eps={e:g}'] = entry
  std = runs['standard eps=0']
  rows.append(
    f'| 0 | standard | {std["lr"]:g} | {_lib.pct(std["clean"])} | '
    + ', '.join(f'{k}: {_lib.pct(v)}' for k, v in std['robust_at'].items())
    + f' | | | {std["sharpness"]:.3g} |'
  )
  at_mid = next((r for k, r in runs.items() if 'sharpness_vs_eps' in r), None)
  if at_mid:
    rows.append(
      'premise (AT model): top eigenvalue at eps '
      + ', '.join(
        f'{k}: {v:.3g}' for k, v in at_mid['sharpness_vs_eps'].items()
      )
    )
  result['summary'] = summary
  print('\n'.join(rows))


def plot(result, args, num_seeds):
  import matplotlib.pyplot as plt

  runs = result['runs']
  fig, axes = plt.subplots(1, len(args.eps), figsize=(4 * len(args.eps), 3.6))
  for ax, e in zip(np.atleast_1d(axes), args.eps, strict=True):
    for m in args.methods:
      r = runs[f'{m} eps={e:g}']
      cm, ch = _lib.mean_ci(r['clean'])
      rm, rh = _lib.mean_ci(r['robust'])
      ax.errorbar(
        100 * cm,
        100 * rm,
        xerr=100 * ch,
        yerr=100 * rh,
        marker='o',
        capsize=3,
        label=m,
      )
    std = runs['standard eps=0']
    cm, ch = _lib.mean_ci(std['clean'])
    rm, rh = _lib.mean_ci(std['robust_at'][f'{e:g}'])
    ax.errorbar(
      100 * cm,
      100 * rm,
      xerr=100 * ch,
      yerr=100 * rh,
      marker='s',
      capsize=3,
      label='standard',
      color='gray',
    )
    ax.set_title(f'eps={e:g}')
    ax.set_xlabel('clean test accuracy (%)')
    ax.set_ylabel('PGD-20 robust accuracy (%)')
    ax.legend(fontsize=8)
  fig.suptitle(f'SAT on MNIST-1D CNN, {num_seeds} seeds, 95% intervals')
  _lib.save_plot(fig, _lib.plot_path(__file__, 'sat.png'))


if __name__ == '__main__':
  main()
