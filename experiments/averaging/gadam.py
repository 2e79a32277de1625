"""Gadam and GadamX against Adam and SGD, no early stopping
(Granziol et al. 2020).

  python -m experiments.averaging.gadam --seeds 10 --steps 1500
"""

import optax

import optax_zoo
from experiments import _lib
from experiments.averaging import common as c
from optax_zoo import training


def run(seeds: int, steps: int) -> dict:
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
    result = c.train(tx, data, seeds, steps)
    res[name] = c.metrics(c.probs(result, data.x_test), data.y_test)
  out = {
    'setting': f'MNIST-1D CNN1D, {steps} steps, {len(seeds)} seeds; final '
    'weights (no early stopping); Gadam lr 0.03 and GadamX lr 0.3 (p=1/8; '
    'the lr_grid optima) '
    f'constant, averaging every epoch from step {start}; baselines decay '
    'to 1% (swa_schedule)',
    'runs': res,
    'summary': {k: _lib.summary(v['accuracy']) for k, v in res.items()},
    'paired': {
      f'{a} - {b}': _lib.paired(res[a]['accuracy'], res[b]['accuracy'])
      for a in ('gadam', 'gadamx')
      for b in ('adamw_decay', 'sgd_decay')
    },
  }
  _lib.save('averaging_gadam', out)
  c.accuracy_boxplot(res, _lib.plot_path(__file__, 'gadam.png'))
  return out


def main(argv=None):
  args = c.parser(__doc__, steps=1500).parse_args(argv)
  out = run(args.seeds, args.steps)
  for k, s in out['summary'].items():
    print(f'{k:12s} {_lib.fmt(s)}')
  for k, s in out['paired'].items():
    print(f'{k:26s} {_lib.fmt(s)}')


if __name__ == '__main__':
  main()
