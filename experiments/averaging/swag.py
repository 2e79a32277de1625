"""SWAG against SGD and SWA: accuracy, NLL and ECE (Maddox et al. 2019).

python -m experiments.averaging.swag --seeds 10 --steps 1500
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_zoo
from experiments import _lib
from experiments.averaging import common as c
from optax_zoo import training
from optax_zoo.analysis import (
  expected_calibration_error,
  reliability_plot,
)


def run(seeds: int, steps: int, num_samples: int = 30) -> dict:
  data, seeds = training.mnist1d(), list(range(seeds))
  swa_start, lr, every_k = int(0.75 * steps), 0.05, c.STEPS_PER_EPOCH // 2
  tx = optax_zoo.swag(
    optax.sgd(optax_zoo.swa_schedule(lr, lr / 5, swa_start), momentum=0.9),
    rank=20,
    start_step=swa_start,
    every_k=every_k,
  )
  result = c.train(tx, data, seeds, steps)
  x, y = data.x_test, data.y_test
  probs = {
    'sgd': c.probs(result, x, result.params),
    'swa': c.probs(result, x),
  }
  for name, diagonal in (('swag', False), ('swag_diag', True)):
    # `params` completes a snapshot that falls on the last step.
    sampler = jax.jit(
      jax.vmap(
        lambda s, k, p, d=diagonal: optax_zoo.swag_sample(
          s, k, params=p, diagonal_only=d
        )
      )
    )
    total = 0.0
    for i in range(num_samples):
      keys = jax.random.split(jax.random.key(i), len(seeds))
      sample = sampler(result.opt_state, keys, result.params)
      total = total + c.probs(result, x, sample)
    probs[name] = total / num_samples
  res = {k: c.metrics(p, y) for k, p in probs.items()}
  out = {
    'setting': f'MNIST-1D CNN1D, {steps} steps, {len(seeds)} seeds; SGD(m=0.9) '
    f'lr {lr} -> {lr / 5}; rank 20, snapshot every {every_k} steps from '
    f'{swa_start}; BMA over {num_samples} samples, scale 0.5',
    'runs': res,
    'summary': {
      k: {m: _lib.summary(v[m]) for m in ('accuracy', 'nll', 'ece')}
      for k, v in res.items()
    },
    'swag_minus': {
      k: {m: _lib.paired(res['swag'][m], res[k][m]) for m in ('nll', 'ece')}
      for k in ('sgd', 'swa')
    },
  }
  _lib.save('averaging_swag', out)
  pooled = {
    k: expected_calibration_error(
      p.reshape(-1, p.shape[-1]), jnp.tile(jnp.asarray(y), len(seeds))
    )[1]
    for k, p in probs.items()
  }
  ax = reliability_plot(pooled)
  ax.set_title(f'Reliability, MNIST-1D, {len(seeds)} seeds pooled')
  _lib.save_plot(ax.figure, _lib.plot_path(__file__, 'swag_reliability.png'))
  return out


def main(argv=None):
  parser = c.parser(__doc__, steps=1500)
  parser.add_argument('--samples', type=int, default=30, help='BMA samples')
  args = parser.parse_args(argv)
  out = run(args.seeds, args.steps, args.samples)
  for k, s in out['summary'].items():
    print(
      f'{k:10s} acc {_lib.fmt(s["accuracy"])}  '
      f'nll {_lib.fmt(s["nll"], 1, 3)}  ece {_lib.fmt(s["ece"], 100, 2)}'
    )
  print(np.round(out['swag_minus']['sgd']['nll']['mean'], 4))


if __name__ == '__main__':
  main()
