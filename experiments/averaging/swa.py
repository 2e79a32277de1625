"""SWA against the same SGD run without averaging, SGD with a decaying
schedule, and Adam (Izmailov et al. 2018, the paper's main claim).

  python -m experiments.averaging.swa --seeds 10 --steps 1500
"""

import optax

import optax_zoo
from experiments import _lib
from experiments.averaging import common as c
from optax_zoo import training


def run(seeds: int, steps: int) -> dict:
  data, seeds = training.mnist1d(), list(range(seeds))
  swa_start, lr = int(0.75 * steps), 0.05
  swa_tx = optax_zoo.swa(
    optax.sgd(optax_zoo.swa_schedule(lr, lr / 5, swa_start), momentum=0.9),
    start_step=swa_start,
    every_k=c.STEPS_PER_EPOCH,
  )
  # The paper's baselines decay to 1% of the initial rate over the budget.
  sgd_tx = optax.sgd(optax_zoo.swa_schedule(lr, lr / 100, steps), momentum=0.9)
  adam_tx = optax.adam(optax_zoo.swa_schedule(3e-3, 3e-5, steps))
  x, y = data.x_test, data.y_test
  swa_run = c.train(swa_tx, data, seeds, steps)
  res = {
    'swa': c.metrics(c.probs(swa_run, x), y),
    'sgd_same_run': c.metrics(c.probs(swa_run, x, swa_run.params), y),
  }
  for name, tx in (('sgd_decay', sgd_tx), ('adam_decay', adam_tx)):
    res[name] = c.metrics(c.probs(c.train(tx, data, seeds, steps), x), y)
  out = {
    'setting': f'MNIST-1D CNN1D, batch 128, {steps} steps, {len(seeds)} seeds; '
    f'SWA: SGD(m=0.9) lr {lr} -> {lr / 5} (swa_schedule), averaged every '
    f'epoch from step {swa_start}',
    'runs': res,
    'summary': {k: _lib.summary(v['accuracy']) for k, v in res.items()},
    'swa_minus': {
      k: _lib.paired(res['swa']['accuracy'], res[k]['accuracy'])
      for k in res
      if k != 'swa'
    },
  }
  _lib.save('averaging_swa', out)
  c.accuracy_boxplot(
    res,
    _lib.plot_path(__file__, 'swa.png'),
    title=f'SWA on MNIST-1D ({len(seeds)} seeds)',
  )
  return out


def main(argv=None):
  args = c.parser(__doc__, steps=1500).parse_args(argv)
  out = run(args.seeds, args.steps)
  for k, s in out['summary'].items():
    print(f'{k:14s} {_lib.fmt(s)}')
  for k, s in out['swa_minus'].items():
    print(f'swa - {k:14s} {_lib.fmt(s)}')


if __name__ == '__main__':
  main()
