"""Gadam and GadamX against Adam and SGD, no early stopping
(Granziol et al. 2020).

  python experiments/averaging/gadam.py --seeds 10 --steps 1500
"""

import argparse

import common as c
import optax

import optax_zoo
from optax_zoo import training


def main(seeds: int, steps: int) -> dict:
  data, seeds = training.mnist1d(), list(range(seeds))
  start, epoch = steps // 2, c.STEPS_PER_EPOCH
  configs = {
    'gadam': optax_zoo.gadam(0.03, start_step=start, every_k=epoch),
    'gadamx': optax_zoo.gadamx(0.3, start_step=start, every_k=epoch),
    'adamw_decay': optax.adamw(
      optax_zoo.swa_schedule(3e-3, 3e-5, steps), weight_decay=5e-4
    ),
    'sgd_decay': optax.sgd(
      optax_zoo.swa_schedule(0.05, 5e-4, steps), momentum=0.9
    ),
  }
  res = {}
  for name, tx in configs.items():
    run = c.Run(tx, data, seeds, steps)
    avg = c.map_seeds(optax_zoo.eval_params, run.opt_state, run.params)
    res[name] = c.metrics(run.probs(avg, data.x_test), data.y_test)
  out = {
    'setting': f'MNIST-1D CNN1D, {steps} steps, {len(seeds)} seeds; final '
    'weights (no early stopping); Gadam lr 0.03 and GadamX lr 0.3 (p=1/8; '
    'the lr_grid optima) '
    f'constant, averaging every epoch from step {start}; baselines decay '
    'to 1% (swa_schedule)',
    'runs': res,
    'summary': {k: c.summary(v['accuracy']) for k, v in res.items()},
    'paired': {
      f'{a} - {b}': c.paired(res[a]['accuracy'], res[b]['accuracy'])
      for a in ('gadam', 'gadamx')
      for b in ('adamw_decay', 'sgd_decay')
    },
  }
  c.save('averaging_gadam', out)
  c.accuracy_boxplot(res, c.HERE / 'gadam.png')
  return out


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description=__doc__)
  c.add_args(parser, steps=1500)
  args = parser.parse_args()
  out = main(args.seeds, args.steps)
  for k, s in out['summary'].items():
    print(f'{k:12s} {c.fmt(s)}')
  for k, s in out['paired'].items():
    print(f'{k:26s} {c.fmt(s)}')
