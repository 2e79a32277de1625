r"""DPSGD against SSGD at large batch on MNIST-1D (Zhang et al. 2021).

The claim: decentralized parallel SGD (gossip) converges at learning rates
where synchronous SGD (all-reduce) diverges at large batch, because the
gossip adds landscape-dependent noise that self-adjusts the effective
learning rate.

  python -m experiments.distributed.large_batch

``--workers`` workers simulated by ``jax.vmap(..., axis_name='w')`` share a
global batch of ``--batch`` examples, one shard each, and both methods see
the same shards, the same initialization (all workers start from it) and
SGD with momentum 0.9 at a constant rate from the geometric grid
``--rates``, no warmup:

- ``ssgd``: `all_reduce_mean` of the workers' gradients, then SGD momentum
  (every worker holds the same model);
- ``dpsgd``: `gossip` on a `ring` of the workers around SGD momentum:
  each worker steps with the momentum of its own shard's gradient at its
  own parameters and mixes its parameters with its two neighbours' (Lian et
  al. 2017's update, the one Zhang et al. study). The momentum buffers stay
  per worker.

Every (seed, rate) pair is one lane of one vmapped program per method.
Seed 0 is the tuning seed: each method's best rate is picked there by test
accuracy, and seeds 1..``--seeds`` are reported at it (paired).

A run *converges* when every training loss is finite and its final
training loss (of the average model on the whole train set) is at most
``--converge-factor`` times the initial one; it *diverges* when a training
loss is non-finite or a step's loss exceeds ``--diverge-factor`` times the
initial one (a run can fail to converge without diverging: after a spike
the ReLUs die and the loss sits at chance, ln 10 = 2.30). The largest
convergent rate of the grid is reported per seed and method.

Every ``--log-every`` steps, at the average model :math:`\bar x =
\frac1n \sum_i x_i` and on the next step's global batch :math:`B = \cup_i
B_i`, the launcher measures (both methods, SSGD as a check: its extra noise
must be zero):

- the consensus distance :math:`\Xi = \frac1n \sum_i \lVert x_i - \bar x
  \rVert^2` (`consensus_distance`);
- the gradient SSGD would take there, :math:`g = \nabla L_B(\bar x)`, and
  the one the average model actually takes,
  :math:`g_a = \frac1n \sum_i \nabla L_{B_i}(x_i)` (for a doubly
  stochastic mixing matrix :math:`\bar x` moves by exactly the momentum
  filtered :math:`-\alpha g_a`); DPSGD's extra noise is
  :math:`\eta = g_a - g`, reported as :math:`\lVert \eta \rVert /
  \lVert g \rVert`;
- the effective learning rate along the SSGD gradient,

  .. math::
    \alpha_e = \alpha \, \frac{\langle g_a, g \rangle}{\lVert g
    \rVert^2} = \alpha \Big(1 + \frac{\langle \eta, g \rangle}{\lVert g
    \rVert^2}\Big),

  reported as :math:`\alpha_e / \alpha` (1 for SSGD), averaged over the
  first and the last quarter of the log points after step 0. This is our
  reading of the paper's self-adjusting rate: expanding :math:`g_a` around
  :math:`\bar x` gives :math:`\eta \approx \frac1n \sum_i H_{B_i} (x_i -
  \bar x)`, a noise that grows with the curvature and the spread of the
  workers, and its component along :math:`g` rescales the step. The
  paper's exact estimator (in its section on the learning dynamics, not in
  the abstract we hold) may differ;
- the landscape: the loss :math:`L_B(\bar x)`, :math:`\lVert g \rVert`
  and the top Hessian eigenvalue at :math:`\bar x`, by power iteration
  with `optax_zoo.analysis.hvp` on the first ``--hvp-examples`` examples of
  the batch, ``--power-iters`` products per point, warm-started from the
  previous point's vector (cheap; a late-training estimate is accurate,
  an early one is rough). ``final_eig`` (the last point) compares the
  sharpness SSGD and DPSGD end in.

"Follows the landscape" is read as Spearman correlations along each run of
:math:`\Xi` with the loss, the gradient norm and the top eigenvalue, and of
:math:`\alpha_e / \alpha` with the top eigenvalue (the paper: the rate is
cut where the landscape is sharp) and with :math:`\Xi`, averaged over
the reported seeds of converged runs, leaving out the first point (where
the workers agree by construction). Along a stable run the loss, the
curvature and the spread all shrink with time, so these correlations are
confounded by time; the early effective rate at each learning rate, set
against the same at small rates, is the sharper test of self-adjustment:
the claim reads as reproduced when it is cut (interval below 1) at every
rate where SSGD fails on some seed and DPSGD converges on all.

Deviations from the paper: MNIST-1D and an MLP instead of CIFAR-10,
ImageNet and speech models; 8 (simulated) workers on a ring; the global
batch is 2048 of 4000 examples, large relative to the data set rather
than in absolute size; no warmup, no schedule.

Writes ``experiments/results/distributed_large_batch.json`` (each run's
segment-mean losses and measures, the summary, the claims) after each
method, and ``large_batch.png`` next to this file.
"""

from __future__ import annotations

import argparse
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.flatten_util import ravel_pytree
from tqdm import tqdm

import optax_zoo as oz
from experiments import _lib
from optax_zoo import analysis, training

# The training loop's shuffled-epoch batch order, cut here into shards.
from optax_zoo.training.loop import _batch_order

NAME = 'distributed_large_batch'
AXIS = 'w'
MOMENTUM = 0.9
METHODS = ('ssgd', 'dpsgd')
# Geometric, sqrt(2) apart: 0.2 to 4.53, three significant digits.
RATES = tuple(float(f'{0.2 * 2 ** (k / 2):.3g}') for k in range(10))
MEASURES = ('loss', 'consensus', 'grad_norm', 'lr_ratio', 'noise_ratio', 'eig')
# (x, y) pairs of the along-training Spearman correlations.
CORRELATIONS = (
  ('consensus', 'loss'),
  ('consensus', 'grad_norm'),
  ('consensus', 'eig'),
  ('lr_ratio', 'eig'),
  ('lr_ratio', 'consensus'),
)


def _tx(method: str, lr, workers: int) -> optax.GradientTransformation:
  sgd = optax.sgd(lr, momentum=MOMENTUM)
  if method == 'ssgd':
    return oz.all_reduce_mean(AXIS, inner=sgd)
  return oz.gossip(oz.ring(workers), AXIS, inner=sgd)


def _loss_fn(graphdef):
  def loss_fn(params, xb, yb):
    return training.cross_entropy_loss(nnx.merge(graphdef, params)(xb), yb)

  return loss_fn


def make_segment(graphdef, method, workers, hvp_examples, power_iters):
  """``segment(params, opt_state, vec, x, y, batches, lr)`` over lanes.

  Measures at the lane's current parameters on ``batches[0]``, then trains
  one step per batch. Lanes lead every argument but ``x`` and ``y``;
  ``params`` and ``opt_state`` then have a worker axis, ``batches`` is
  (lanes, steps, workers, per-worker batch) and ``vec`` (lanes, flat
  parameters) is the power iteration's vector. Returns the new params,
  state and vector, the steps' mean worker losses and the measures.
  """
  loss_fn = _loss_fn(graphdef)

  def worker_step(params, opt_state, xb, yb, lr):
    loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
    updates, opt_state = _tx(method, lr, workers).update(
      grads, opt_state, params
    )
    return optax.apply_updates(params, updates), opt_state, loss

  def measure(params, xb, yb, vec):
    mean = jax.tree.map(lambda a: a[0], oz.worker_mean(params))
    g_a = jax.tree.map(
      lambda a: jnp.mean(a, 0), jax.vmap(jax.grad(loss_fn))(params, xb, yb)
    )
    xs, ys = xb.reshape(-1, xb.shape[-1]), yb.reshape(-1)
    loss, g = jax.value_and_grad(loss_fn)(mean, xs, ys)
    g, _ = ravel_pytree(g)
    g_a, _ = ravel_pytree(g_a)
    flat, unravel = ravel_pytree(mean)
    sub = lambda f: loss_fn(unravel(f), xs[:hvp_examples], ys[:hvp_examples])

    def power(_, carry):
      v, _ = carry
      hv = analysis.hvp(sub, flat, v)
      return hv / (jnp.linalg.norm(hv) + 1e-30), jnp.dot(v, hv)

    vec, eig = jax.lax.fori_loop(
      0, power_iters, power, (vec / jnp.linalg.norm(vec), jnp.zeros(()))
    )
    g2 = jnp.dot(g, g)
    return {
      'loss': loss,
      'consensus': oz.consensus_distance(params),
      'grad_norm': jnp.sqrt(g2),
      'lr_ratio': jnp.dot(g_a, g) / g2,
      'noise_ratio': jnp.linalg.norm(g_a - g) / jnp.sqrt(g2),
      'eig': eig,
    }, vec

  def lane(params, opt_state, vec, x, y, batches, lr):
    measures, vec = measure(params, x[batches[0]], y[batches[0]], vec)

    def step(carry, batch):
      params, opt_state = carry
      params, opt_state, loss = jax.vmap(
        worker_step, in_axes=(0, 0, 0, 0, None), axis_name=AXIS
      )(params, opt_state, x[batch], y[batch], lr)
      return (params, opt_state), jnp.mean(loss)

    (params, opt_state), losses = jax.lax.scan(
      step, (params, opt_state), batches
    )
    return params, opt_state, vec, losses, measures

  return jax.jit(
    jax.vmap(lane, in_axes=(0, 0, 0, None, None, 0, 0)),
    donate_argnums=(0, 1, 2),
  )


def make_evaluate(graphdef):
  """``evaluate(params, x_train, y_train, x_test, y_test)`` over lanes:
  the average model's train loss and test accuracy."""
  loss_fn = _loss_fn(graphdef)

  def evaluate(params, x_train, y_train, x_test, y_test):
    mean = jax.tree.map(lambda a: jnp.mean(a, 0), params)
    logits = nnx.merge(graphdef, mean)(x_test)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == y_test)
    return loss_fn(mean, x_train, y_train), accuracy

  return jax.jit(jax.vmap(evaluate, in_axes=(0, None, None, None, None)))


def spearman(a, b) -> float:
  """Spearman's rank correlation over the points where both are finite."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  keep = np.isfinite(a) & np.isfinite(b)
  if keep.sum() < 3:
    return float('nan')
  ra = np.argsort(np.argsort(a[keep])).astype(np.float64)
  rb = np.argsort(np.argsort(b[keep])).astype(np.float64)
  if ra.std() == 0 or rb.std() == 0:
    return float('nan')
  return float(np.corrcoef(ra, rb)[0, 1])


def train_method(data, method, seeds, args) -> list[dict]:
  """Trains every (seed, rate) lane of ``method`` in one program."""
  start = time.time()
  w, steps, k = args.workers, args.steps, args.log_every
  lanes = list(itertools.product(seeds, args.rates))
  models = {
    s: training.MLP(40, (args.hidden,) * 2, rngs=nnx.Rngs(s)) for s in seeds
  }
  graphdef = nnx.graphdef(models[seeds[0]])
  init = {s: nnx.state(m, nnx.Param) for s, m in models.items()}
  stack = lambda trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)
  per_worker = lambda t: jax.tree.map(
    lambda a: jnp.broadcast_to(a, (w, *a.shape)), t
  )
  params = stack([per_worker(init[s]) for s, _ in lanes])
  evaluate = make_evaluate(graphdef)
  test = (jnp.asarray(data.x_test), jnp.asarray(data.y_test))
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  initial_loss = evaluate(params, x, y, *test)[0].tolist()
  initial = dict(zip(lanes, initial_loss, strict=True))
  tx = _tx(method, 1.0, w)
  opt_state = jax.vmap(jax.vmap(tx.init))(params)
  size = ravel_pytree(init[seeds[0]])[0].size
  vec = jax.random.normal(jax.random.key(0), (len(lanes), size))
  per = args.batch // w
  orders = {
    s: _batch_order(s, len(data.y_train), per * w, steps).reshape(steps, w, per)
    for s in seeds
  }
  rates = jnp.asarray([lr for _, lr in lanes], jnp.float32)
  segment = make_segment(
    graphdef, method, w, args.hvp_examples, args.power_iters
  )
  losses, measures = [], []
  for t in tqdm(range(0, steps, k), desc=method, unit='segment'):
    batches = np.stack([orders[s][t : t + k] for s, _ in lanes])
    params, opt_state, vec, loss, meas = segment(
      params, opt_state, vec, x, y, jnp.asarray(batches), rates
    )
    losses.append(np.asarray(loss))
    measures.append(jax.tree.map(np.asarray, meas))
  losses = np.concatenate(losses, axis=1)
  measures = {m: np.stack([d[m] for d in measures], 1) for m in MEASURES}
  final_loss, accuracy = evaluate(params, x, y, *test)
  rows = []
  for i, (s, lr) in enumerate(lanes):
    final = float(final_loss[i])
    # From every step's loss; the result keeps each segment's mean.
    finite = bool(np.all(np.isfinite(losses[i])) and np.isfinite(final))
    peak = float(np.nanmax(losses[i]) / initial[s, lr])
    rows.append(
      {
        'seed': int(s),
        'lr': float(lr),
        'initial_train_loss': initial[s, lr],
        'final_train_loss': final if finite else None,
        'accuracy': float(accuracy[i]),
        'finite': finite,
        'converged': finite and final <= args.converge_factor * initial[s, lr],
        'diverged': not finite or peak > args.diverge_factor,
        'peak_loss_ratio': peak,
        'segment_losses': _compact(losses[i].reshape(-1, k).mean(1)),
        'measures': {m: _compact(v[i]) for m, v in measures.items()},
      }
    )
  print(
    f'{method}: {len(lanes)} lanes in {time.time() - start:.0f} s', flush=True
  )
  return rows


def _compact(values) -> list:
  """``values`` to 5 significant digits, None where non-finite."""
  return [float(f'{v:.5g}') if np.isfinite(v) else None for v in values]


def _json_safe(tree):
  """``tree`` with every non-finite float as None (JSON has no NaN)."""
  if isinstance(tree, dict):
    return {k: _json_safe(v) for k, v in tree.items()}
  if isinstance(tree, list | tuple):
    return [_json_safe(v) for v in tree]
  if isinstance(tree, float) and not np.isfinite(tree):
    return None
  return tree


def _save(result) -> None:
  _lib.save(NAME, _json_safe(result))


def _array(values) -> np.ndarray:
  return np.asarray([np.nan if v is None else v for v in values], np.float64)


def _over(runs, fn):
  """`_lib.summary` of ``fn(run)`` over ``runs`` where finite, or None."""
  vals = [float(fn(r)) for r in runs]
  vals = [v for v in vals if np.isfinite(v)]
  return _lib.summary(vals) if len(vals) > 1 else None


def _noise(runs) -> dict:
  """DPSGD's noise statistics over converged ``runs`` (see the module
  docstring): time means, the effective rate over the first and the last
  quarter of the log points, and the along-training correlations."""
  out = {}
  for m in ('consensus', 'lr_ratio', 'noise_ratio'):
    out[f'mean_{m}'] = _over(
      runs, lambda r, m=m: np.nanmean(_array(r['measures'][m]))
    )
  # Without the first point: there the workers agree by construction.
  q = lambda r: max(1, (len(r['measures']['lr_ratio']) - 1) // 4)
  ratio = lambda r: _array(r['measures']['lr_ratio'])[1:]
  out['early_lr_ratio'] = _over(runs, lambda r: np.nanmean(ratio(r)[: q(r)]))
  out['late_lr_ratio'] = _over(runs, lambda r: np.nanmean(ratio(r)[-q(r) :]))
  for a, b in CORRELATIONS:
    out[f'spearman_{a}_{b}'] = _over(
      runs,
      lambda r, a=a, b=b: spearman(
        _array(r['measures'][a])[1:], _array(r['measures'][b])[1:]
      ),
    )
  return out


def summarize(result, seeds) -> dict:
  """Per method: convergence by rate, largest convergent rate per seed,
  accuracy at the rate tuned on seed 0, and DPSGD's noise statistics."""
  runs = result['runs']
  rates = result['rates']
  reported = [s for s in seeds if s != 0]
  out = {}
  for method in METHODS:
    rows = {(r['seed'], r['lr']): r for r in runs[method]}
    by_rate = {}
    for lr in rates:
      rs = [rows[s, lr] for s in reported]
      conv = [r for r in rs if r['converged']]
      entry = {
        'converged_fraction': len(conv) / len(rs),
        'diverged_fraction': sum(r['diverged'] for r in rs) / len(rs),
        'accuracy': _lib.summary([r['accuracy'] for r in rs]),
        'final_train_loss_converged': (
          _lib.summary([r['final_train_loss'] for r in conv]) if conv else None
        ),
      }
      entry['final_eig'] = _over(
        conv, lambda r: _array(r['measures']['eig'])[-1]
      )
      if method == 'dpsgd':
        entry.update(_noise(conv))
      by_rate[f'{lr:g}'] = entry
    largest = {}
    for s in reported:
      ok = [lr for lr in rates if rows[s, lr]['converged']]
      largest[str(s)] = max(ok) if ok else None
    tune = max(rates, key=lambda lr: rows[0, lr]['accuracy'])
    finite = [r for r in runs[method] if r['finite']]
    out[method] = {
      # Zero and one for SSGD (a check of the measurement), up to rounding.
      'max_consensus': max(
        np.nanmax(_array(r['measures']['consensus'])) for r in finite
      ),
      'max_abs_lr_ratio_minus_1': max(
        np.nanmax(np.abs(_array(r['measures']['lr_ratio']) - 1)) for r in finite
      ),
      'by_rate': by_rate,
      'largest_convergent_lr': largest,
      'tuned_lr': tune,
      'accuracy_at_tuned_lr': _lib.summary(
        [rows[s, tune]['accuracy'] for s in reported]
      ),
      'accuracy_per_seed': [rows[s, tune]['accuracy'] for s in reported],
    }
  ss, dp = out['ssgd'], out['dpsgd']
  log2 = [
    np.log2(dp['largest_convergent_lr'][s] / ss['largest_convergent_lr'][s])
    for s in ss['largest_convergent_lr']
    if dp['largest_convergent_lr'][s] and ss['largest_convergent_lr'][s]
  ]
  out['dpsgd_minus_ssgd'] = {
    'log2_largest_convergent_lr': _lib.summary(log2) if len(log2) > 1 else None,
    'seeds_dpsgd_larger': int(sum(v > 0 for v in log2)),
    'seeds_equal': int(sum(v == 0 for v in log2)),
    'seeds_ssgd_larger': int(sum(v < 0 for v in log2)),
    'accuracy_at_tuned_lr': _lib.paired(
      dp['accuracy_per_seed'], ss['accuracy_per_seed']
    ),
    'verdict_accuracy': _lib.verdict(
      dp['accuracy_per_seed'], ss['accuracy_per_seed']
    ),
  }
  return out


def claims(summary, rates) -> dict[str, str]:
  """One line per claim, from the per-seed rates and the correlations."""
  ss, dp, diff = summary['ssgd'], summary['dpsgd'], summary['dpsgd_minus_ssgd']
  rescued = [
    f'{lr:g}'
    for lr in rates
    if ss['by_rate'][f'{lr:g}']['converged_fraction'] < 1
    and dp['by_rate'][f'{lr:g}']['converged_fraction'] == 1
  ]
  worse = [
    f'{lr:g}'
    for lr in rates
    if dp['by_rate'][f'{lr:g}']['converged_fraction']
    < ss['by_rate'][f'{lr:g}']['converged_fraction']
  ]
  larger, smaller = diff['seeds_dpsgd_larger'], diff['seeds_ssgd_larger']
  # A sign rule over seeds: most seeds gain a grid step and none loses one.
  if larger > len(ss['largest_convergent_lr']) / 2 and not smaller:
    word = 'reproduced'
  elif smaller > larger:
    word = 'not reproduced (SSGD tolerates larger rates)'
  else:
    word = 'not reproduced (no consistent gain in the largest rate)'
  out = {
    'converges_where_ssgd_diverges': (
      f'{word}: largest convergent rate per seed, SSGD '
      f'{list(ss["largest_convergent_lr"].values())}, DPSGD '
      f'{list(dp["largest_convergent_lr"].values())}; DPSGD larger on '
      f'{diff["seeds_dpsgd_larger"]}, equal on {diff["seeds_equal"]}, '
      f'smaller on {diff["seeds_ssgd_larger"]} seeds; rates where SSGD '
      f'fails on some seed and DPSGD converges on all: {rescued or "none"}; '
      f'where DPSGD fails more: {worse or "none"}'
    )
  }
  fmt = lambda x: 'n/a' if x is None else _lib.fmt(x, 1, 2)
  by = {lr: dp['by_rate'][f'{lr:g}'] for lr in rates}
  tracked = [lr for lr, e in by.items() if e.get('early_lr_ratio')]
  cut = [
    lr
    for lr in tracked
    if by[lr]['early_lr_ratio']['mean'] + by[lr]['early_lr_ratio']['ci95'] < 1
  ]
  # The claim is about the rates DPSGD rescues: past SSGD's limit, where
  # DPSGD converges on every seed.
  beyond = [
    lr
    for lr in tracked
    if ss['by_rate'][f'{lr:g}']['converged_fraction'] < 1
    and by[lr]['converged_fraction'] == 1
  ]
  word = (
    'reproduced' if beyond and set(beyond) <= set(cut) else 'not reproduced'
  )
  out['self_adjusting_rate'] = (
    f'{word}: DPSGD alpha_e / alpha over the first quarter of training '
    '(converged runs) '
    + ', '.join(f'lr {lr:g}: {fmt(by[lr]["early_lr_ratio"])}' for lr in tracked)
    + '; over the last quarter '
    + ', '.join(f'lr {lr:g}: {fmt(by[lr]["late_lr_ratio"])}' for lr in tracked)
    + f'; cut (interval below 1) at {[f"{lr:g}" for lr in cut]}, rates past '
    f"SSGD's limit {[f'{lr:g}' for lr in beyond]}"
  )
  pos = lambda x: x is not None and x['mean'] - x['ci95'] > 0
  follows = [
    lr
    for lr in tracked
    if pos(by[lr]['spearman_consensus_loss'])
    and pos(by[lr]['spearman_consensus_eig'])
  ]
  out['noise_follows_landscape'] = (
    f'consensus distance rises and falls with the loss and the top '
    f'eigenvalue along training (both Spearman intervals above 0) at '
    f'{len(follows)} of {len(tracked)} rates, {[f"{lr:g}" for lr in follows]}: '
    + '; '.join(
      f'lr {lr:g}: rho(Xi, loss) {fmt(by[lr]["spearman_consensus_loss"])}, '
      f'rho(Xi, eig) {fmt(by[lr]["spearman_consensus_eig"])}, '
      f'rho(ae/a, eig) {fmt(by[lr]["spearman_lr_ratio_eig"])}, '
      f'rho(ae/a, Xi) {fmt(by[lr]["spearman_lr_ratio_consensus"])}'
      for lr in tracked
    )
  )
  return out


def plot(result) -> None:
  import matplotlib.pyplot as plt

  summary, rates = result['summary'], result['rates']
  fig, axes = plt.subplots(2, 2, figsize=(10, 7))
  for method in METHODS:
    by = summary[method]['by_rate']
    acc = [by[f'{lr:g}']['accuracy'] for lr in rates]
    axes[0, 0].plot(
      rates,
      [by[f'{lr:g}']['converged_fraction'] for lr in rates],
      marker='o',
      label=method,
    )
    axes[0, 1].errorbar(
      rates,
      [100 * a['mean'] for a in acc],
      [100 * a['ci95'] for a in acc],
      marker='o',
      capsize=3,
      label=method,
    )
  axes[0, 0].set(ylabel='converged fraction')
  axes[0, 1].set(ylabel='test accuracy (%)')
  for ax in axes[0]:
    ax.set(xscale='log', xlabel='learning rate')
    ax.set_xticks(rates, [f'{lr:g}' for lr in rates], rotation=45, minor=False)
    ax.set_xticks([], minor=True)
  reported = [r for r in result['runs']['dpsgd'] if r['seed'] != 0]
  cmap = plt.get_cmap('viridis')
  steps = np.arange(0, result['steps'], result['log_every'])
  for j, lr in enumerate(rates):
    rs = [r for r in reported if r['lr'] == lr and r['converged']]
    if not rs:
      continue
    color = cmap(j / max(1, len(rates) - 1))
    for ax, m in ((axes[1, 0], 'consensus'), (axes[1, 1], 'lr_ratio')):
      curve = np.nanmean([_array(r['measures'][m]) for r in rs], 0)
      # From the first step on: at step 0 the workers agree (Xi = 0).
      ax.plot(steps[1:], curve[1:], color=color, label=f'lr {lr:g}')
  axes[1, 0].set(yscale='log', xlabel='step', ylabel='DPSGD consensus distance')
  axes[1, 1].set(xlabel='step', ylabel=r'DPSGD $\alpha_e / \alpha$')
  for ax in axes.flat:
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  fig.suptitle(
    f'MNIST-1D MLP, {result["workers"]} workers, global batch {result["batch"]}'
  )
  _lib.save_plot(fig, _lib.plot_path(__file__, 'large_batch.png'))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=400)
  parser.add_argument('--seeds', type=int, default=8, help='reported seeds')
  parser.add_argument('--workers', type=int, default=8)
  parser.add_argument('--batch', type=int, default=2048, help='global batch')
  parser.add_argument('--hidden', type=int, default=100, help='MLP width')
  parser.add_argument('--rates', type=float, nargs='+', default=RATES)
  parser.add_argument('--log-every', type=int, default=20)
  parser.add_argument('--hvp-examples', type=int, default=512)
  parser.add_argument('--power-iters', type=int, default=5)
  parser.add_argument('--converge-factor', type=float, default=0.5)
  parser.add_argument('--diverge-factor', type=float, default=10.0)
  args = parser.parse_args(argv)
  if args.batch % args.workers:
    parser.error('--batch must be a multiple of --workers')
  if args.steps % args.log_every:
    parser.error('--steps must be a multiple of --log-every')
  args.rates = sorted(args.rates)
  data = training.mnist1d()
  seeds = list(range(args.seeds + 1))
  result = _lib.resume(
    NAME,
    steps=args.steps,
    seeds=seeds,
    workers=args.workers,
    batch=args.batch,
    hidden=args.hidden,
    rates=args.rates,
    log_every=args.log_every,
    hvp_examples=args.hvp_examples,
    power_iters=args.power_iters,
    converge_factor=args.converge_factor,
    diverge_factor=args.diverge_factor,
    momentum=MOMENTUM,
  )
  runs = result['runs']
  for method in METHODS:
    if method not in runs:
      runs[method] = train_method(data, method, seeds, args)
      _save(result)
  result['summary'] = summarize(result, seeds)
  result['claims'] = claims(result['summary'], args.rates)
  result['setting'] = (
    f'MNIST-1D, MLP 40-{args.hidden}-{args.hidden}-10, {args.workers} '
    f'workers simulated with jax.vmap, global batch {args.batch} '
    f'({args.batch // args.workers} per worker), SGD momentum {MOMENTUM}, '
    f'constant rate from {args.rates} (no warmup), {args.steps} steps; SSGD '
    f'= all_reduce_mean, DPSGD = gossip on a ring; tuning seed 0, reported '
    f'seeds {seeds[1:]}; converged = finite and final train loss <= '
    f'{args.converge_factor:g} x initial; diverged = non-finite or a step '
    f'loss > {args.diverge_factor:g} x initial'
  )
  _save(result)
  for claim in result['claims'].values():
    print(claim)
  plot(result)


if __name__ == '__main__':
  main()
