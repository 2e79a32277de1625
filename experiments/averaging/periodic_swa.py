"""Periodic SWA against one SWA run (Guo et al. 2022).

python -m experiments.averaging.periodic_swa --seeds 10 --steps 1500
"""

import optax

import optax_zoo
from experiments import _lib
from experiments.averaging import common as c
from optax_zoo import training


def run(seeds: int, steps: int) -> dict:
  data, seeds = training.mnist1d(), list(range(seeds))
  inner = optax.sgd(0.05, momentum=0.9)  # constant rate, as SWA's phase
  quarter, epoch = steps // 4, c.STEPS_PER_EPOCH
  configs = {
    'swa_late': optax_zoo.swa(inner, start_step=3 * quarter, every_k=epoch),
    'swa_early': optax_zoo.swa(inner, start_step=quarter, every_k=epoch),
    'periodic_swa': optax_zoo.periodic_swa(
      inner, start_step=quarter, period=quarter, every_k=epoch
    ),
  }
  res = {}
  for name, tx in configs.items():
    result = c.train(tx, data, seeds, steps)
    res[name] = c.metrics(c.probs(result, data.x_test), data.y_test)
  out = {
    'setting': f'MNIST-1D CNN1D, {steps} steps, {len(seeds)} seeds; SGD(m=0.9) '
    f'constant lr 0.05; snapshots every epoch ({epoch} steps); periodic SWA '
    f'from step {quarter}, period {quarter} (3 periods)',
    'runs': res,
    'summary': {k: _lib.summary(v['accuracy']) for k, v in res.items()},
    'pswa_minus': {
      k: _lib.paired(res['periodic_swa']['accuracy'], res[k]['accuracy'])
      for k in ('swa_late', 'swa_early')
    },
  }
  _lib.save('averaging_periodic_swa', out)
  c.accuracy_boxplot(res, _lib.plot_path(__file__, 'periodic_swa.png'))
  return out


def main(argv=None):
  args = c.parser(__doc__, steps=1500).parse_args(argv)
  out = run(args.seeds, args.steps)
  for k, s in out['summary'].items():
    print(f'{k:14s} {_lib.fmt(s)}')
  for k, s in out['pswa_minus'].items():
    print(f'pswa - {k:10s} {_lib.fmt(s)}')


if __name__ == '__main__':
  main()
