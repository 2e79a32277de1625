"""Periodic SWA against one SWA run (Guo et al. 2022).

python experiments/averaging/periodic_swa.py --seeds 10 --steps 1500
"""

import argparse

import common as c
import optax

import optax_zoo
from optax_zoo import training


def main(seeds: int, steps: int) -> dict:
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
    run = c.Run(tx, data, seeds, steps)
    avg = c.map_seeds(optax_zoo.eval_params, run.opt_state, run.params)
    res[name] = c.metrics(run.probs(avg, data.x_test), data.y_test)
  out = {
    'setting': f'MNIST-1D CNN1D, {steps} steps, {len(seeds)} seeds; SGD(m=0.9) '
    f'constant lr 0.05; snapshots every epoch ({epoch} steps); periodic SWA '
    f'from step {quarter}, period {quarter} (3 periods)',
    'runs': res,
    'summary': {k: c.summary(v['accuracy']) for k, v in res.items()},
    'pswa_minus': {
      k: c.paired(res['periodic_swa']['accuracy'], res[k]['accuracy'])
      for k in ('swa_late', 'swa_early')
    },
  }
  c.save('averaging_periodic_swa', out)
  c.accuracy_boxplot(res, c.HERE / 'periodic_swa.png')
  return out


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description=__doc__)
  c.add_args(parser, steps=1500)
  args = parser.parse_args()
  out = main(args.seeds, args.steps)
  for k, s in out['summary'].items():
    print(f'{k:14s} {c.fmt(s)}')
  for k, s in out['pswa_minus'].items():
    print(f'pswa - {k:10s} {c.fmt(s)}')
