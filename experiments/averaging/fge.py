"""FGE ensemble against one model at equal training cost, and the accuracy
along a trained Bezier curve against the straight line between two solutions
(Garipov et al. 2018).

  python -m experiments.averaging.fge --seeds 10 --steps 1500
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import optax_zoo
from experiments import _lib
from experiments.averaging import common as c
from optax_zoo import training

# The training loop's shuffled-epoch batch order, for the bends' own loop
# (a curve's loss is not a model's, so `training.train` cannot run it).
from optax_zoo.training.loop import _batch_order


def train_bends(result, data, pairs, steps, seed=0):
  """Trains a Bezier bend between the final weights of each seed pair."""
  start = c.tree_index(result.params, pairs[:, 0])
  end = c.tree_index(result.params, pairs[:, 1])
  rest = c.tree_index(result.model_state, pairs[:, 0])
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  xt, yt = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
  orders = jnp.asarray(_batch_order(seed, len(y), c.BATCH_SIZE, steps))
  tx = optax.sgd(optax.cosine_decay_schedule(0.05, steps), momentum=0.9)

  # CNN1D has no dropout or BatchNorm: eval mode computes what train mode
  # would.
  def logits(p, r, xs):
    return nnx.merge(result.graphdef, p, r)(xs)

  def one_pair(a, b, r):
    loss = optax_zoo.curve_loss_fn(
      lambda p, i: training.cross_entropy_loss(logits(p, r, x[i]), y[i]), a, b
    )

    def step(carry, inp):
      bend, state = carry
      i, k = inp
      g = jax.grad(loss)(bend, k, i)
      updates, state = tx.update(g, state, bend)
      return (optax.apply_updates(bend, updates), state), None

    bend = jax.tree.map(lambda u, v: (u + v) / 2, a, b)
    keys = jax.random.split(jax.random.key(seed), steps)
    (bend, _), _ = jax.lax.scan(step, (bend, tx.init(bend)), (orders, keys))
    acc = lambda p: jnp.mean(jnp.argmax(logits(p, r, xt), -1) == yt)
    return (
      optax_zoo.evaluate_curve(acc, a, b, bend),
      optax_zoo.evaluate_curve(acc, a, b),
    )

  curve, line = jax.jit(jax.vmap(one_pair))(start, end, rest)
  return np.asarray(curve), np.asarray(line)


def run(
  seeds: int,
  steps: int,
  curve_steps: int = 600,
  cycle: int = 4 * c.STEPS_PER_EPOCH,
) -> dict:
  data, seeds = training.mnist1d(), list(range(seeds))
  lr, lr_1, lr_2 = 0.05, 0.02, 5e-4
  pre = int(0.6 * steps)
  single_tx = optax.sgd(
    optax_zoo.swa_schedule(lr, lr / 100, steps), momentum=0.9
  )
  sched = optax.join_schedules(
    [
      optax_zoo.swa_schedule(lr, lr_1, pre),
      optax_zoo.fge_schedule(lr_1, lr_2, cycle),
    ],
    [pre],
  )
  fge_tx = optax_zoo.fge(
    optax.sgd(sched, momentum=0.9),
    cycle_steps=cycle,
    num_snapshots=8,
    start_step=pre,
  )
  x, y = data.x_test, data.y_test
  single = c.train(single_tx, data, seeds, steps)
  fge = c.train(fge_tx, data, seeds, steps)
  if np.any(fge.opt_state.pending):
    raise ValueError(
      f'--steps {steps} ends on a snapshot step: the last snapshot would be '
      'left out; choose a budget that ends off the cycle middle.'
    )
  n_snap = int(np.asarray(fge.opt_state.n_snapshots)[0])
  member_probs = [
    c.probs(fge, x, c.tree_index(fge.opt_state.snapshots, (slice(None), j)))
    for j in range(min(n_snap, 8))
  ]
  res = {
    'single': c.metrics(c.probs(single, x), y),
    'fge_ensemble': c.metrics(sum(member_probs) / len(member_probs), y),
    'fge_member_mean': {
      'accuracy': np.mean(
        [c.metrics(p, y)['accuracy'] for p in member_probs], axis=0
      ).tolist()
    },
  }
  pairs = np.arange(len(seeds) // 2 * 2).reshape(-1, 2)
  curve, line = train_bends(single, data, pairs, curve_steps)
  out = {
    'setting': f'MNIST-1D CNN1D, {steps} steps, {len(seeds)} seeds; single: '
    f'SGD(m=0.9) lr {lr} -> {lr / 100}; FGE: {pre} steps lr {lr} -> {lr_1}, '
    f'then cycles of {cycle} steps {lr_1} <-> {lr_2}, {n_snap} snapshots; '
    f'Bezier bends trained {curve_steps} steps for {len(pairs)} seed pairs',
    'runs': res,
    'summary': {k: _lib.summary(v['accuracy']) for k, v in res.items()},
    'fge_minus_single': {
      m: _lib.paired(res['fge_ensemble'][m], res['single'][m])
      for m in ('accuracy', 'nll')
    },
    'curve': {
      't': np.linspace(0, 1, curve.shape[1]).tolist(),
      'bezier_accuracy': curve.tolist(),
      'line_accuracy': line.tolist(),
      'min_along_bezier': _lib.summary(curve.min(1)),
      'min_along_line': _lib.summary(line.min(1)),
      'ends': _lib.summary(np.concatenate([curve[:, 0], curve[:, -1]])),
    },
  }
  _lib.save('averaging_fge', out)
  plot(out, curve, line, len(pairs))
  return out


def plot(out, curve, line, num_pairs: int) -> None:
  import matplotlib.pyplot as plt

  t = np.asarray(out['curve']['t'])
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name, acc in (('Bezier curve', curve), ('straight line', line)):
    m, s = 100 * acc.mean(0), 100 * acc.std(0)
    ax.plot(t, m, label=name)
    ax.fill_between(t, m - s, m + s, alpha=0.25)
  ax.set_xlabel('t')
  ax.set_ylabel('test accuracy (%)')
  ax.set_title(f'Between two solutions ({num_pairs} pairs, mean ± sd)')
  ax.legend()
  _lib.save_plot(fig, _lib.plot_path(__file__, 'fge_curve.png'))


def main(argv=None):
  parser = c.parser(__doc__, steps=1500)
  parser.add_argument('--curve-steps', type=int, default=600)
  parser.add_argument(
    '--cycle-steps',
    type=int,
    default=4 * c.STEPS_PER_EPOCH,
    help='FGE cycle length (default 4 epochs)',
  )
  args = parser.parse_args(argv)
  out = run(args.seeds, args.steps, args.curve_steps, args.cycle_steps)
  for k, s in out['summary'].items():
    print(f'{k:16s} {_lib.fmt(s)}')
  for k, s in out['fge_minus_single'].items():
    print(f'fge - single {k:10s} {_lib.fmt(s, 100, 2)}')
  for k in ('min_along_bezier', 'min_along_line', 'ends'):
    print(f'{k:18s} {_lib.fmt(out["curve"][k])}')


if __name__ == '__main__':
  main()
