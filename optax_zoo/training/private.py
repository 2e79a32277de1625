r"""Differentially private training of Flax NNX classifiers (DP-SGD).

`train_private` is `optax_zoo.training.train` with DP-SGD's four parts put
together so that they agree (Abadi et al., 2016):

* batches: `optax_zoo.poisson_batches` (jax-privacy's Poisson sampler),
  padded to one fixed size with a mask, so the step has one shape and is
  compiled once; padded rows contribute exactly zero;
* gradients: `optax_zoo.model_clipped_grad_sum` inside the jitted step (the
  sum of per-example gradients clipped to ``clip_norm``; ghost clipping
  where every layer allows it, jax-privacy's vmap clipping otherwise);
* noise: ``optax.chain(optax_zoo.dp_aggregate(...), tx)``, i.e. Gaussian
  noise ``noise_multiplier * clip_norm`` on the sum, divided by the
  *expected* batch size, then any optax or optax_zoo optimizer ``tx``;
* accounting: a `optax_zoo.PrivacyAccountant` (dp-accounting) stepped with
  the steps taken, read at each evaluation, and the `optax_zoo.
  privacy_report` at the end; ``stop_at_epsilon`` ends training before the
  step that would exceed a budget.

Evaluation is on `optax_zoo.averaging.eval_params` weights, so averaging the
private iterates (`optax_zoo.swa` as the last transform of ``tx``: Polyak
averaging; EMA where a method keeps one in its state) is evaluated for free:
post-processing of the private iterates costs no privacy.

Everything here is glue written for this package; clipping, noise,
sampling and accounting are `optax_zoo.privacy` (built on jax-privacy and
dp-accounting).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from optax_zoo import privacy
from optax_zoo._src import validation as v
from optax_zoo.averaging import eval_params as find_eval_params
from optax_zoo.privacy._accounting import PLD_DISCRETIZATION
from optax_zoo.training import loop
from optax_zoo.training.augment import AugmentFn
from optax_zoo.training.data import Dataset

__all__ = ['PrivateTrainResult', 'train_private']

# Times the private step was traced (per process); tests read it to check
# that a run compiles its step once.
_TRACES = {'step': 0}


@dataclasses.dataclass(frozen=True, eq=False)
class PrivateTrainResult(loop.TrainResult):
  """What `train_private` trained, with its privacy guarantee.

  Attributes:
    report: the `optax_zoo.PrivacyReport` of the steps taken (both
      accountants where they apply); ``print`` it.
    epsilons: the running accountant's epsilon (at ``report.delta``) at each
      of ``history.steps``; also ``history.measurements['epsilon']``.
    noise_multiplier: sigma used (calibrated when ``target_epsilon`` was
      given).
    stopped_at_budget: True when training stopped before the planned steps
      because one more step would have exceeded ``stop_at_epsilon``.
    source: the `optax_zoo.BatchSource` the batches came from.
  """

  report: privacy.PrivacyReport | None = None
  epsilons: np.ndarray | None = None
  noise_multiplier: float = 0.0
  stopped_at_budget: bool = False
  source: privacy.BatchSource | None = None


def _default_max_batch_size(expected, num_examples, microbatch_size):
  # Four standard deviations above the mean: truncation is rare, and the
  # truncated accountant accounts it anyway.
  size = math.ceil(expected + 4.0 * math.sqrt(expected) + 1.0)
  if microbatch_size:
    size = -(-size // microbatch_size) * microbatch_size
  return min(size, num_examples)


def _make_source(
  num_examples,
  batches,
  sampling_rate,
  expected_batch_size,
  max_batch_size,
  steps,
  seed,
  microbatch_size,
):
  if batches is not None:
    if not isinstance(batches, privacy.BatchSource):
      raise ValueError(
        f'`batches` must be a BatchSource, got {type(batches).__name__}.'
      )
    if batches.scheme == privacy.SamplingScheme.SHUFFLE:
      raise ValueError(
        '`batches`: shuffled batches cannot be accounted (accounting them as '
        'Poisson overstates privacy, Chua et al. 2024); use '
        'optax_zoo.poisson_batches or fixed_size_batches.'
      )
    for name, value in (
      ('sampling_rate', sampling_rate),
      ('expected_batch_size', expected_batch_size),
      ('max_batch_size', max_batch_size),
    ):
      if value is not None:
        raise ValueError(f'`{name}` must be None when `batches` is given.')
    if batches.num_examples != num_examples:
      raise ValueError(
        f'`batches` must draw from the {num_examples} training examples, '
        f'got num_examples={batches.num_examples}.'
      )
    if len(batches) < steps:
      raise ValueError(
        f'`batches` must yield at least `steps`={steps} batches, got '
        f'{len(batches)}.'
      )
    return batches
  if (sampling_rate is None) == (expected_batch_size is None):
    raise ValueError(
      'Give exactly one of `sampling_rate` and `expected_batch_size`.'
    )
  if sampling_rate is None:
    v.check_in_range(
      'expected_batch_size',
      expected_batch_size,
      0.0,
      num_examples,
      low_inclusive=False,
    )
    sampling_rate = expected_batch_size / num_examples
  if max_batch_size is None:
    max_batch_size = _default_max_batch_size(
      sampling_rate * num_examples, num_examples, microbatch_size
    )
  return privacy.poisson_batches(
    num_examples,
    sampling_rate=sampling_rate,
    max_batch_size=max_batch_size,
    steps=steps,
    seed=seed,
  )


def _budget_steps(accountant, stop_at_epsilon, steps):
  """The most steps in [0, steps] whose epsilon stays <= the budget."""
  if accountant.epsilon(steps=steps) <= stop_at_epsilon:
    return steps
  lo, hi = 0, steps  # epsilon(lo) <= budget < epsilon(hi)
  while hi - lo > 1:
    mid = (lo + hi) // 2
    if accountant.epsilon(steps=mid) <= stop_at_epsilon:
      lo = mid
    else:
      hi = mid
  return lo


def _make_chunk_fn(
  graphdef,
  tx,
  loss_fn,
  clip_norm,
  microbatch_size,
  method,
  augment_fn,
  multiplicity,
):
  """``run(params, rest, opt_state, x, y, idx, mask, step, active, key)``.

  A scan of private steps; ``key`` seeds the augmentations (an argument, so
  that runs differing only in their seed share one compiled program).
  """

  def example_loss(model, example):
    xb, yb = example  # one example with a leading axis of size 1
    return loss_fn(model(xb), yb)

  if augment_fn is not None:
    example_loss = privacy.augmentation_multiplicity(
      example_loss,
      lambda key, ex: (augment_fn(key, ex[0][0])[None], ex[1]),
      multiplicity,
    )

  per_example = loop._per_example_loss_fn(loss_fn)

  def run(params, rest, opt_state, x, y, idx, mask, step, active, augment_key):
    def private_step(carry, row):
      _TRACES['step'] += 1
      params, rest, opt_state = carry
      idx, mask, step = row
      xb, yb = x[idx], y[idx]
      model = nnx.merge(graphdef, params, rest, copy=True)
      # The views' randomness is independent of the data (no privacy cost).
      key = (
        None if augment_fn is None else jax.random.fold_in(augment_key, step)
      )
      grad_sum, stats = privacy.model_clipped_grad_sum(
        model,
        example_loss,
        (xb, yb),
        clip_norm=clip_norm,
        mask=mask,
        microbatch_size=microbatch_size,
        keep_batch_dim=True,
        method=method,
        key=key,
      )
      updates, new_opt_state = tx.update(grad_sum, opt_state, params)
      new_params = optax.apply_updates(params, updates)
      # Logged, not released: the realized batch and its loss are private.
      losses = per_example(nnx.merge(graphdef, params, rest)(xb), yb)
      real = jnp.maximum(stats.num_examples, 1)
      loss = jnp.sum(jnp.where(mask, losses, 0.0)) / real
      logs = (loss, stats.num_clipped, stats.num_nonfinite, stats.num_examples)
      return (new_params, rest, new_opt_state), logs

    def skip(carry, row):
      del row
      return carry, (jnp.float32(0.0), *(jnp.int32(0),) * 3)

    def scan_step(carry, row):
      *row, on = row
      return jax.lax.cond(on, private_step, skip, carry, tuple(row))

    carry, logs = jax.lax.scan(
      scan_step, (params, rest, opt_state), (idx, mask, step, active)
    )
    return (*carry, logs)

  return jax.jit(run, donate_argnums=(0, 1, 2))


def train_private(
  model: nnx.Module,
  tx: optax.GradientTransformation,
  data: Dataset,
  *,
  clip_norm: float,
  steps: int,
  noise_multiplier: float | None = None,
  target_epsilon: float | None = None,
  delta: float = 1e-5,
  sampling_rate: float | None = None,
  expected_batch_size: float | None = None,
  max_batch_size: int | None = None,
  batches: privacy.BatchSource | None = None,
  eval_every: int | Sequence[int] | None = None,
  seed: int = 0,
  method: str = 'auto',
  microbatch_size: int | None = None,
  accountant: str = 'pld',
  pld_discretization: float = PLD_DISCRETIZATION,
  stop_at_epsilon: float | None = None,
  progress: bool | None = None,
  loss_fn: loop.LossFn | None = None,
  augment_fn: AugmentFn | None = None,
  augmentation_multiplicity: int = 1,
) -> PrivateTrainResult:
  r"""Trains ``model`` with DP-SGD and reports its privacy.

  Each step draws a Poisson batch :math:`B_t` (each training example with
  probability :math:`q`), padded to ``max_batch_size`` rows with a mask, and
  feeds ``tx`` the noisy mean over the *expected* batch size:

  .. math::
    \tilde g_t = \frac{1}{qN}\Big(\sum_{i \in B_t} \mathrm{clip}_C
    \big(\nabla_\theta \ell(\theta_t, x_i)\big) + \sigma C z_t\Big),
    \qquad \theta_{t+1} = \theta_t + \mathrm{tx}(\tilde g_t).

  The step (clipping, noise and ``tx``) is one jitted program, compiled
  once; the chunk between two evaluations is a `lax.scan` of it. The
  running accountant counts the steps and gives epsilon at each evaluation.

  Args:
    model: a Flax NNX classifier; a model with a layer that mixes the
      examples of a batch (BatchNorm) is refused. Gradients are taken in
      eval mode (dropout off: under per-example vmap every example would
      share one dropout mask).
    tx: any optax or optax_zoo optimizer; it receives the privatized mean
      gradient and no extra update arguments (methods that need ``grad_fn``
      or the loss would need private access to the batch: unsupported).
    data: the `Dataset`; its training set size N is the accounting size.
    clip_norm: C > 0, the per-example gradient norm bound.
    steps: planned training steps, >= 1.
    noise_multiplier: sigma >= 0; or give ``target_epsilon`` instead.
    target_epsilon: calibrate sigma with `optax_zoo.calibrate_noise` so that
      ``steps`` steps reach this epsilon at ``delta``.
    delta: the delta of every epsilon, in (0, 1).
    sampling_rate: Poisson's q in (0, 1]; or ``expected_batch_size`` (qN).
    expected_batch_size: qN; the divisor of the summed gradient.
    max_batch_size: rows of each padded batch; default four standard
      deviations above qN (rounded up to a multiple of
      ``microbatch_size``). Below N the source is truncated Poisson,
      accounted exactly as such (PLD only).
    batches: a `optax_zoo.BatchSource` to draw from instead (then leave
      ``sampling_rate``, ``expected_batch_size`` and ``max_batch_size``
      None): fixed-size batches are accounted with ``accountant='rdp'``;
      shuffled batches are refused (they cannot be accounted).
    eval_every: steps between evaluations, or the steps to evaluate at,
      as in `train`.
    seed: seeds the Poisson sampling and the noise key.
    method: clipping path, ``'auto'``, ``'ghost'`` or ``'vmap'`` (see
      `optax_zoo.model_clipped_grad_sum`).
    microbatch_size: examples clipped at a time (bounds memory).
    accountant: ``'pld'`` or ``'rdp'``: the running accountant, the
      calibration and ``stop_at_epsilon`` use it.
    pld_discretization: the PLD's value discretization (coarser is faster
      and slightly pessimistic; the library default is 1e-4).
    stop_at_epsilon: a budget: training stops after the last step that
      keeps epsilon at or below it.
    progress: a tqdm progress bar, as in `train`.
    loss_fn: ``loss_fn(logits, labels) -> scalar``, a batch mean (applied
      to one example at a time); default cross-entropy.
    augment_fn: ``augment_fn(key, x) -> x``, a random view of one input
      (e.g. `optax_zoo.training.shift_and_noise`); each example's gradient
      is then the mean over ``augmentation_multiplicity`` views, clipped
      once (De et al. 2022, `optax_zoo.augmentation_multiplicity`): the
      privacy is unchanged, the compute grows by the multiplicity.
    augmentation_multiplicity: views per example, >= 1; above 1 needs
      ``augment_fn``.

  Returns:
    A `PrivateTrainResult`: `TrainResult` (trained and evaluated weights,
    optimizer state, `History`) with ``report``, ``epsilons`` and
    ``stopped_at_budget``. ``history.train_loss`` and
    ``history.measurements['clipped_fraction']`` are computed on the
    private batches and are not themselves private: log them, do not
    release them. Afterwards ``model`` holds the evaluated weights.

  Example:
    >>> import optax
    >>> from flax import nnx
    >>> from optax_zoo.training import MLP, digits, train_private
    >>> r = train_private(
    ...   MLP(64, (32,), rngs=nnx.Rngs(0)), optax.sgd(0.5), digits(),
    ...   clip_norm=1.0, noise_multiplier=1.0, expected_batch_size=64,
    ...   steps=20, eval_every=10, pld_discretization=1e-2)
    >>> r.history.steps.tolist(), r.report.steps, r.report.scheme
    ([0, 10, 20], 20, 'truncated_poisson')
    >>> bool(r.epsilons[-1] == r.report.epsilon['pld'])
    True

  References:
    Abadi et al., 2016, "Deep Learning with Differential Privacy"
    (arXiv:1607.00133); De et al., 2022, "Unlocking High-Accuracy
    Differentially Private Image Classification through Scale"
    (arXiv:2204.13650), for averaging the private iterates.

  Deviations:
    ``stop_at_epsilon`` is resolved before training, by a bisection over
    the step count with the same accountant (epsilon grows with the steps),
    rather than by asking the accountant before every step: the steps
    taken are the same and the step stays inside a scan.
  """
  if not isinstance(data, Dataset):
    raise ValueError(f'`data` must be a Dataset, got {type(data).__name__}.')
  privacy.check_private_model(model)
  v.check_positive('clip_norm', clip_norm)
  v.check_int('steps', steps, minimum=1)
  v.check_int('seed', seed, minimum=0)
  v.check_choice('method', method, ('vmap', 'ghost', 'auto'))
  if microbatch_size is not None:
    v.check_int('microbatch_size', microbatch_size, minimum=1)
  if stop_at_epsilon is not None:
    v.check_positive('stop_at_epsilon', stop_at_epsilon)
  v.check_int('augmentation_multiplicity', augmentation_multiplicity, minimum=1)
  if augment_fn is None and augmentation_multiplicity > 1:
    raise ValueError(
      '`augmentation_multiplicity` above 1 needs an `augment_fn`, got None.'
    )
  if augment_fn is not None and not callable(augment_fn):
    raise ValueError(
      f'`augment_fn` must be callable, got {type(augment_fn).__name__}.'
    )
  if (noise_multiplier is None) == (target_epsilon is None):
    raise ValueError(
      'Give exactly one of `noise_multiplier` and `target_epsilon`.'
    )
  num_examples = len(data.y_train)
  source = _make_source(
    num_examples,
    batches,
    sampling_rate,
    expected_batch_size,
    max_batch_size,
    steps,
    seed,
    microbatch_size,
  )
  acc_kw = dict(
    sampling_rate=source.sampling_rate,
    scheme=source.scheme,
    num_examples=source.num_examples,
    batch_size=source.batch_size,
    accountant=accountant,
    pld_discretization=pld_discretization,
  )
  if target_epsilon is not None:
    noise_multiplier = privacy.calibrate_noise(
      target_epsilon=target_epsilon, delta=delta, steps=steps, **acc_kw
    )
  v.check_non_negative('noise_multiplier', noise_multiplier)
  accountant_ = privacy.PrivacyAccountant(
    noise_multiplier=noise_multiplier, delta=delta, **acc_kw
  )
  planned = steps
  if stop_at_epsilon is not None:
    steps = _budget_steps(accountant_, stop_at_epsilon, steps)
  points = [p for p in loop._eval_points(planned, eval_every) if p <= steps]
  points = sorted({*points, steps})

  dp_tx = optax.chain(
    privacy.dp_aggregate(
      clip_norm=clip_norm,
      noise_multiplier=noise_multiplier,
      expected_batch_size=source.expected_batch_size,
      key=jax.random.key(seed),
    ),
    tx,
  )
  dp_tx = optax.with_extra_args_support(dp_tx)
  _, eval_def, _, params, rest = loop._split_modes(model)
  opt_state = dp_tx.init(params)
  run = _make_chunk_fn(
    eval_def,
    dp_tx,
    loss_fn or loop.cross_entropy_loss,
    clip_norm,
    microbatch_size,
    method,
    augment_fn,
    augmentation_multiplicity,
  )
  # Its own stream: the noise key of `dp_aggregate` is `key(seed)`.
  augment_key = jax.random.fold_in(jax.random.key(seed), 1)
  evaluate = loop._evaluator(eval_def, loss_fn, False)

  @jax.jit
  def eval_point(params, rest, opt_state, x, y):
    weights = find_eval_params(opt_state, params)
    return weights, evaluate(weights, rest, x, y)

  x_train, y_train, x_test, y_test = jax.device_put(
    (data.x_train, data.y_train, data.x_test, data.y_test)
  )
  chunk = max((b - a for a, b in itertools.pairwise(points)), default=1)
  batch_iter = iter(source)
  evals, epsilons = [], []
  weights = params

  def evaluate_at():
    nonlocal weights
    weights, metrics = eval_point(params, rest, opt_state, x_test, y_test)
    evals.append(np.asarray(metrics))
    epsilons.append(accountant_.epsilon())

  evaluate_at()
  train_losses, clipped, nonfinite, step_times = [np.nan], [np.nan], [0], []
  compiled, compile_time = None, 0.0
  bar = loop._progress_bar(progress, steps, f'private {data.name}')
  try:
    for start, stop in itertools.pairwise(points):
      num = stop - start
      rows = [next(batch_iter) for _ in range(num)]
      idx = np.zeros((chunk, source.batch_size), np.int32)
      mask = np.zeros((chunk, source.batch_size), bool)
      idx[:num] = [b.indices for b in rows]
      mask[:num] = [b.mask for b in rows]
      args = (params, rest, opt_state, x_train, y_train, idx, mask)
      args += (start + np.arange(chunk, dtype=np.int32), np.arange(chunk) < num)
      args += (augment_key,)
      if compiled is None:
        t0 = time.perf_counter()
        compiled = run.lower(*args).compile()
        compile_time = time.perf_counter() - t0
      t0 = time.perf_counter()
      params, rest, opt_state, logs = compiled(*args)
      jax.block_until_ready((params, opt_state))
      step_times.append((time.perf_counter() - t0) / num)
      loss, n_clip, n_bad, n_ex = (np.asarray(x)[:num] for x in logs)
      train_losses.append(float(loss.mean()))
      clipped.append(float(n_clip.sum() / max(n_ex.sum(), 1)))
      nonfinite.append(int(n_bad.sum()))
      accountant_.step(num)
      evaluate_at()
      if bar is not None:
        bar.update(num)
        bar.set_postfix(eps=f'{epsilons[-1]:.2f}')
  finally:
    if bar is not None:
      bar.close()

  evals = np.stack(evals, axis=-1)
  epsilons = np.asarray(epsilons)
  history = loop.History(
    steps=np.asarray(points),
    train_loss=np.asarray(train_losses, np.float32),
    test_loss=evals[0],
    test_accuracy=evals[1],
    step_time=np.asarray(step_times),
    compile_time=compile_time,
    measurements={
      'epsilon': epsilons,
      'clipped_fraction': np.asarray(clipped),
      'nonfinite': np.asarray(nonfinite),
    },
  )
  report = accountant_.report(clip_norm)
  nnx.update(
    model, jax.tree.map(jnp.copy, weights), jax.tree.map(jnp.copy, rest)
  )
  return PrivateTrainResult(
    step=steps,
    graphdef=eval_def,
    params=params,
    eval_params=weights,
    opt_state=opt_state,
    model_state=rest,
    eval_model_state=rest,
    history=history,
    report=report,
    epsilons=epsilons,
    noise_multiplier=float(noise_multiplier),
    stopped_at_budget=steps < planned,
    source=source,
  )
