"""Is AdamW's best weight decay independent of the learning rate?

Loshchilov & Hutter (2019) claim that decoupling the decay from the gradient
step makes the best decay factor independent of the learning rate, provided
the decay is scaled by the schedule multiplier only (their Algorithm 2), not
by the full rate as in optax's and PyTorch's AdamW. Both forms run on a grid
of base rate x decay factor, with a cosine schedule multiplier, on the
MNIST-1D MLP (which overfits, so decay matters), 10 seeds each. The claim
holds if the paper form's best decay stays put across rates while the
PyTorch form's best decay moves as 1 / rate (its per-step decay is
rate x factor).

  python -m experiments.adaptive.adamw_decoupling   # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse

import numpy as np
import optax

import optax_zoo
from experiments import _lib
from experiments.adaptive import common as c

NAME = 'adaptive_adamw_decoupling'
RATES = (1e-3, 3e-3, 1e-2, 3e-2)
PAPER_DECAYS = (1e-5, 1e-4, 1e-3, 1e-2)
# Per-step decay: the paper form's is the factor, PyTorch's is rate x factor,
# so PyTorch's grid is the paper's divided by a typical rate of 1e-2.
TYPICAL_RATE = 1e-2


def decay_grids(paper_decays) -> dict[str, tuple[float, ...]]:
  return {
    'paper': tuple(paper_decays),
    'pytorch': tuple(wd / TYPICAL_RATE for wd in paper_decays),
  }


def make(form: str, lr: float, wd: float, steps: int):
  multiplier = optax.cosine_decay_schedule(1.0, steps)
  if form == 'paper':
    return optax_zoo.adamw(lr, weight_decay=wd, schedule_multiplier=multiplier)
  return optax_zoo.adamw(
    optax.cosine_decay_schedule(lr, steps), weight_decay=wd
  )


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=2000)
  parser.add_argument('--model', default='mlp')
  c.add_seeds_arg(parser)
  parser.add_argument('--rates', type=float, nargs='+', default=RATES)
  parser.add_argument(
    '--decays',
    type=float,
    nargs='+',
    default=PAPER_DECAYS,
    help="the paper form's factors (the PyTorch form's are 100x)",
  )
  args = parser.parse_args(argv)
  seeds = c.eval_seeds(args.seeds)
  grids = decay_grids(args.decays)
  result = _lib.resume(NAME, steps=args.steps, model=args.model, seeds=seeds)
  for form, decays in grids.items():
    for lr in args.rates:
      for wd in decays:
        key = f'{form} lr={lr:g} wd={wd:g}'
        if key in result['runs']:
          continue
        histories = c.train(
          make(form, lr, wd, args.steps),
          args.model,
          seeds=seeds,
          steps=args.steps,
          desc=key,
        )
        result['runs'][key] = [h.final_accuracy for h in histories]
        _lib.save(NAME, result)
  runs = result['runs']
  lines = []
  for form, decays in grids.items():
    grid = accuracy_grid(runs, form, args.rates, decays)
    lines.append(f'{form} form: mean test accuracy (%), rows lr, cols wd')
    lines.append('| lr \\ wd | ' + ' | '.join(f'{w:g}' for w in decays) + ' |')
    lines.append('|---' * (len(decays) + 1) + '|')
    for lr, row in zip(args.rates, grid, strict=True):
      best = int(np.argmax(row))
      cells = [
        f'**{100 * x:.1f}**' if i == best else f'{100 * x:.1f}'
        for i, x in enumerate(row)
      ]
      lines.append(f'| {lr:g} | ' + ' | '.join(cells) + ' |')
    lines.append('')
  print('\n'.join(lines))
  plot(runs, args.model, args.rates, grids, len(seeds))


def accuracy_grid(runs, form: str, rates, decays) -> np.ndarray:
  """Mean accuracy of ``form``'s runs, rows ``rates``, columns ``decays``."""
  return np.array(
    [
      [np.mean(runs[f'{form} lr={lr:g} wd={wd:g}']) for wd in decays]
      for lr in rates
    ]
  )


def plot(runs, model: str, rates, grids, num_seeds: int) -> None:
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
  for ax, (form, decays) in zip(axes, grids.items(), strict=True):
    grid = 100 * accuracy_grid(runs, form, rates, decays)
    im = ax.imshow(grid, origin='lower', cmap='viridis')
    ax.set_xticks(range(len(decays)), [f'{w:g}' for w in decays])
    ax.set_yticks(range(len(rates)), [f'{r:g}' for r in rates])
    ax.set_xlabel('weight decay factor')
    ax.set_ylabel('base learning rate')
    for i in range(len(rates)):
      j = int(np.argmax(grid[i]))
      ax.text(j, i, f'{grid[i, j]:.1f}', ha='center', va='center', color='w')
    ax.set_title(f'AdamW, {form} form')
    fig.colorbar(im, ax=ax, label='test accuracy (%)')
  fig.suptitle(
    f'MNIST-1D {model.upper()}, {num_seeds} seeds; best decay per rate'
  )
  _lib.save_plot(fig, _lib.plot_path(__file__, 'adamw_decoupling.png'))


if __name__ == '__main__':
  main()
