"""A functional, jitted training loop for Flax NNX classifiers.

The model is split once with `nnx.split` into a static graph definition, its
parameters and the rest of its state (BatchNorm statistics, RNG counters).
Training then runs on plain pytrees: a chunk of steps is one `lax.scan` inside
one jitted call that donates parameters and optimizer state, with the data
set resident on the device and each batch gathered inside the step. The same
program vmapped over a leading seed axis trains several seeds at once
(`train_seeds`).

Every transform gets the extra update arguments of
``optax_zoo._src.extra_args`` (the batch loss ``value``, ``value_variance``,
``grad_fn`` and K-FAC's layer statistics ``kfac_stats``) and ignores those
it does not take. Evaluation uses the weights
`optax_zoo.averaging.eval_params` finds in the optimizer state (for example
SWA's average), with BatchNorm in eval mode; where those weights are not the
trained ones and the model has BatchNorm, its statistics are first
recomputed for them on the training set (as ``torch.optim.swa_utils.
update_bn``). `train` and `train_seeds` return a `TrainResult`: the trained
and the evaluated weights, the optimizer and model state, and the `History`.

A ``batch_transform`` changes what each step trains on, inside the jitted
step: batch augmentation (`optax_zoo.training.batch_augmentation`),
adversarial examples (`optax_zoo.training.adversarial_training`, H-SAT and
P-SAT curricula). It gets a `StepContext`: a fresh key per step, the step
number, and the model's logits at the step's parameters.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from optax_zoo._src import extra_args as extra_args_lib
from optax_zoo._src import validation as v
from optax_zoo.adaptive import kfac_layer_stats
from optax_zoo.averaging import eval_params as find_eval_params
from optax_zoo.training.data import Dataset

__all__ = [
  'BatchTransform',
  'EvalHook',
  'History',
  'LossFn',
  'StepContext',
  'TrainResult',
  'TrainState',
  'cross_entropy_loss',
  'make_eval_fn',
  'make_train_fn',
  'train',
  'train_seeds',
]

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class StepContext:
  """What a ``batch_transform`` sees of the training step it runs in.

  Attributes:
    key: a PRNG key for this step alone: ``fold_in(key(seed), step)``, so
      a run is reproducible from its seed and no two steps share a key.
    step: the step's index from 0, an int32 scalar (traced).
    logits_fn: ``logits_fn(x) -> logits``, the model at this step's
      parameters in train mode (BatchNorm normalizes with the batch it is
      given); its model state is read only, so an attack's forward passes
      do not move BatchNorm's running statistics.
    loss_fn: the training loss, ``loss_fn(logits, labels) -> scalar``.
  """

  key: jax.Array
  step: jax.Array
  logits_fn: Callable[[jax.Array], jax.Array]
  loss_fn: LossFn


# ``batch_transform(ctx, x, y) -> (x, y)``: the batch the step trains on,
# from the batch drawn for it. It may change the batch's size (batch
# augmentation repeats each example), not the features' shape.
BatchTransform = Callable[
  [StepContext, jax.Array, jax.Array], tuple[jax.Array, jax.Array]
]

# Below this many steps a progress bar is more noise than help.
_PROGRESS_MIN_STEPS = 500


def cross_entropy_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy against integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _clean(a) -> list:
  return [None if math.isnan(x) else x for x in np.asarray(a).tolist()]


@dataclasses.dataclass(frozen=True, eq=False)
class History:
  """What one training run measured (or several seeds, stacked).

  The arrays of a `train_seeds` history carry a leading seed axis; `unstack`
  gives one history per seed.

  Attributes:
    steps: the steps after which the test set was evaluated, starting at 0
      (before training) and ending at the last step; shape ``(E,)``.
    train_loss: the mean training-batch loss over the steps since the
      previous evaluation (NaN at step 0); shape ``(E,)``.
    test_loss: the loss on the whole test set; shape ``(E,)``.
    test_accuracy: the accuracy on the whole test set, in [0, 1]; ``(E,)``.
    step_time: wall seconds per training step in each chunk between two
      evaluations, compilation excluded; shape ``(E - 1,)``. The first chunk
      also pays the compiled program's one-time warm-up, so prefer the
      median. When seeds are trained together this is the time of one step
      of all of them (no seed axis).
    compile_time: wall seconds spent compiling the training step.
    measurements: what the ``on_eval`` hook returned, by name, stacked over
      the evaluations (the evaluation axis comes last, after any axes the
      hook's values have).
  """

  steps: np.ndarray
  train_loss: np.ndarray
  test_loss: np.ndarray
  test_accuracy: np.ndarray
  step_time: np.ndarray
  compile_time: float
  measurements: Mapping[str, np.ndarray] = dataclasses.field(
    default_factory=dict
  )

  @property
  def final_accuracy(self) -> Any:
    """Test accuracy after the last step (per seed when stacked)."""
    return _scalar(self.test_accuracy[..., -1])

  @property
  def best_accuracy(self) -> Any:
    """The highest test accuracy at any evaluation (per seed when stacked)."""
    return _scalar(np.max(self.test_accuracy, axis=-1))

  @property
  def median_step_time(self) -> float:
    """The median of `step_time`, in seconds."""
    return float(np.median(self.step_time))

  def steps_to(self, accuracy: float) -> int | None:
    """The first evaluated step reaching ``accuracy``, or None."""
    if self.test_accuracy.ndim != 1:
      raise ValueError('`steps_to` needs one seed: use `unstack()` first.')
    (hits,) = np.nonzero(self.test_accuracy >= accuracy)
    return int(self.steps[hits[0]]) if hits.size else None

  def unstack(self) -> list[History]:
    """One `History` per seed of a stacked history (``[self]`` if unstacked)."""
    if self.test_accuracy.ndim == 1:
      return [self]
    return [
      dataclasses.replace(
        self,
        train_loss=self.train_loss[i],
        test_loss=self.test_loss[i],
        test_accuracy=self.test_accuracy[i],
        measurements={k: m[i] for k, m in self.measurements.items()},
      )
      for i in range(self.test_accuracy.shape[0])
    ]

  def to_dict(self) -> dict[str, Any]:
    """A JSON-ready dict of one seed's history (NaN becomes None)."""
    if self.test_accuracy.ndim != 1:
      raise ValueError('`to_dict` needs one seed: use `unstack()` first.')
    record = {
      'steps': self.steps.tolist(),
      'train_loss': _clean(self.train_loss),
      'test_loss': _clean(self.test_loss),
      'test_accuracy': _clean(self.test_accuracy),
      'step_time': _clean(self.step_time),
      'compile_time': self.compile_time,
      'final_accuracy': self.final_accuracy,
      'best_accuracy': self.best_accuracy,
    }
    if self.measurements:
      record['measurements'] = {
        k: np.asarray(m).tolist() for k, m in self.measurements.items()
      }
    return record


def _scalar(x: np.ndarray) -> Any:
  return float(x) if np.ndim(x) == 0 else np.asarray(x)


@dataclasses.dataclass(frozen=True, eq=False)
class TrainState:
  """The state of a run at an evaluation point (seed-stacked for seeds).

  Attributes:
    step: training steps completed.
    graphdef: the model's graph definition in eval mode.
    params: the trained parameters (an `nnx.State` of `nnx.Param`).
    eval_params: the weights evaluated, ``eval_params(opt_state, params)``
      (``params`` itself for methods without averaging).
    opt_state: the optimizer state.
    model_state: the rest of the model state after training (BatchNorm
      running statistics, RNG counters).
    eval_model_state: the model state used in evaluation: ``model_state``
      with BatchNorm statistics recomputed for ``eval_params`` where those
      differ from ``params``, else ``model_state`` itself.
  """

  step: int
  graphdef: nnx.GraphDef
  params: Any
  eval_params: Any
  opt_state: optax.OptState
  model_state: Any
  eval_model_state: Any

  def model(self, *, evaluated: bool = True) -> nnx.Module:
    """A new module (eval mode) with the evaluated or the trained weights.

    Not for seed-stacked states: index a seed with `seed` first.
    """
    if evaluated:
      return nnx.merge(self.graphdef, self.eval_params, self.eval_model_state)
    return nnx.merge(self.graphdef, self.params, self.model_state)

  def seed(self, i: int):
    """Seed ``i`` of a seed-stacked state (of the same class)."""
    fields = ('params', 'eval_params', 'opt_state', 'model_state')
    fields += ('eval_model_state',)
    picked = {f: jax.tree.map(lambda x: x[i], getattr(self, f)) for f in fields}
    extra = {}
    if isinstance(self, TrainResult):
      extra['history'] = self.history.unstack()[i]
    return dataclasses.replace(self, **picked, **extra)


@dataclasses.dataclass(frozen=True, eq=False)
class TrainResult(TrainState):
  """What `train` or `train_seeds` trained, at the last step.

  Attributes:
    history: the run's `History` (seed-stacked for `train_seeds`).
  """

  history: History | None = None

  @property
  def histories(self) -> list[History]:
    """One `History` per seed."""
    return self.history.unstack()


# ``on_eval(state) -> {name: value} or None``, called at every evaluation
# point; its values are stacked into `History.measurements`.
EvalHook = Callable[[TrainState], Mapping[str, Any] | None]


def _per_example_loss_fn(loss_fn: LossFn) -> Callable[..., jax.Array]:
  """Per-example losses from a batch-mean ``loss_fn(logits, labels)``."""
  return jax.vmap(lambda lg, lb: loss_fn(lg[None], lb[None]))


def make_train_fn(
  graphdef: nnx.GraphDef,
  tx: optax.GradientTransformation,
  *,
  loss_fn: LossFn | None = None,
  vmap: bool = False,
  batch_transform: BatchTransform | None = None,
) -> Callable[..., tuple[Any, Any, optax.OptState, jax.Array]]:
  """The jitted training function for a split model.

  The returned ``train_fn(params, rest, opt_state, x, y, batches, start=0,
  key=None)`` runs one training step per row of ``batches`` (integer
  indices into ``x`` and ``y``, shape ``(num_steps, batch_size)``) in a
  `lax.scan` and returns ``(params, rest, opt_state, losses)``. It donates
  ``params``, ``rest`` and ``opt_state``: their buffers are reused for the
  outputs and are deleted after the call. ``start`` is the index of the
  first of these steps and ``key`` the run's PRNG key (default
  ``key(0)``; with ``vmap``, one per seed): the ``batch_transform`` of step
  ``t`` gets ``fold_in(key, t)``.

  ``tx.update`` gets every extra update argument of
  ``optax_zoo._src.extra_args.supply`` on the step's batch: ``value`` (the
  batch loss), ``value_variance`` (the mean squared per-example loss) and
  ``grad_fn`` (the batch gradient at other parameters, model state read
  only), and ``kfac_stats`` (K-FAC's per-layer statistics of the batch, a
  lazy function: one more forward and backward pass, traced only by a
  method that calls it). A plain transform is wrapped with
  `optax.with_extra_args_support`, so it ignores them; unused, they cost
  nothing.

  Args:
    graphdef: the graph definition from ``nnx.split(model, nnx.Param, ...)``,
      in the mode to train in (``model.train()``).
    tx: any optax transformation.
    loss_fn: ``loss_fn(logits, labels) -> scalar``, a mean over the batch;
      default `cross_entropy_loss`.
    vmap: map over a leading seed axis of ``params``, ``rest``,
      ``opt_state``, ``batches`` and ``key`` (``x`` and ``y`` are shared).
    batch_transform: ``batch_transform(ctx, x, y) -> (x, y)``, the batch to
      train on from the batch drawn (a `StepContext` ``ctx``); default the
      drawn batch. The loss, the gradient and every extra argument are of
      the transformed batch, and so are the returned ``losses``.

  Returns:
    The jitted function.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from flax import nnx
    >>> from optax_zoo.training import MLP, make_train_fn
    >>> graphdef, params, rest = nnx.split(
    ...   MLP(4, (8,), 3, rngs=nnx.Rngs(0)), nnx.Param, ...)
    >>> tx = optax.adam(1e-2)
    >>> train_fn = make_train_fn(graphdef, tx)
    >>> x, y = jnp.ones((6, 4)), jnp.arange(6) % 3
    >>> batches = jnp.arange(6).reshape(3, 2)  # 3 steps, batch size 2
    >>> params, rest, opt_state, losses = train_fn(
    ...   params, rest, tx.init(params), x, y, batches)
    >>> losses.shape
    (3,)
  """
  loss_fn = loss_fn or cross_entropy_loss
  per_example = _per_example_loss_fn(loss_fn)
  tx = optax.with_extra_args_support(tx)

  def run_one(params, rest, opt_state, x, y, batches, start, key):
    def step(carry, inputs):
      params, rest, opt_state = carry
      batch, t = inputs
      xb, yb = x[batch], y[batch]
      if batch_transform is not None:
        ctx = StepContext(
          key=jax.random.fold_in(key, t),
          step=t,
          logits_fn=lambda xs: nnx.merge(graphdef, params, rest, copy=True)(xs),
          loss_fn=loss_fn,
        )
        xb, yb = batch_transform(ctx, xb, yb)

      def batch_loss(params):
        model = nnx.merge(graphdef, params, rest, copy=True)
        logits = model(xb)
        # The forward pass updated BatchNorm's running statistics in `model`.
        new_rest = nnx.split(model, nnx.Param, ...)[2]
        return loss_fn(logits, yb), (logits, new_rest)

      (loss, (logits, new_rest)), grads = jax.value_and_grad(
        batch_loss, has_aux=True
      )(params)

      def example_losses(p, b):
        return per_example(nnx.merge(graphdef, p, rest, copy=True)(b[0]), b[1])

      def kfac_stats():
        return kfac_layer_stats(
          graphdef, params, rest, lambda m: loss_fn(m(xb), yb)
        )[3]

      extra = extra_args_lib.supply(
        None,
        example_losses,
        params,
        (xb, yb),
        losses=per_example(logits, yb),
        kfac_stats_fn=kfac_stats,
      )
      updates, opt_state = tx.update(grads, opt_state, params, **extra)
      return (optax.apply_updates(params, updates), new_rest, opt_state), loss

    steps = start + jnp.arange(batches.shape[0], dtype=jnp.int32)
    (params, rest, opt_state), losses = jax.lax.scan(
      step, (params, rest, opt_state), (batches, steps)
    )
    return params, rest, opt_state, losses

  if vmap:
    run_one = jax.vmap(run_one, in_axes=(0, 0, 0, None, None, 0, None, 0))

  def run(params, rest, opt_state, x, y, batches, start=0, key=None):
    if key is None:
      key = jax.random.key(0)
      if vmap:
        key = jax.random.split(key, batches.shape[0])
    start = jnp.asarray(start, jnp.int32)
    return run_one(params, rest, opt_state, x, y, batches, start, key)

  return jax.jit(run, donate_argnums=(0, 1, 2))


def make_eval_fn(
  graphdef: nnx.GraphDef,
  *,
  loss_fn: LossFn | None = None,
  vmap: bool = False,
) -> Callable[..., tuple[jax.Array, jax.Array]]:
  """The jitted evaluation function for a split model.

  The returned ``eval_fn(params, rest, x, y)`` evaluates the model with
  ``params`` and ``rest`` on all of ``x`` at once and returns ``(loss,
  accuracy)``. To score what an optimizer would have evaluated, pass
  ``eval_params(opt_state, params)`` (as `train` does).

  Args:
    graphdef: the graph definition in eval mode (``model.eval()``).
    loss_fn: ``loss_fn(logits, labels) -> scalar``; default
      `cross_entropy_loss`.
    vmap: map over a leading seed axis of ``params`` and ``rest``.

  Returns:
    The jitted function.
  """
  return jax.jit(_evaluator(graphdef, loss_fn, vmap))


def _evaluator(graphdef, loss_fn, vmap):
  loss_fn = loss_fn or cross_entropy_loss

  def evaluate(params, rest, x, y):
    logits = nnx.merge(graphdef, params, rest)(x)
    return loss_fn(logits, y), jnp.mean(jnp.argmax(logits, -1) == y)

  return jax.vmap(evaluate, in_axes=(0, 0, None, None)) if vmap else evaluate


def _batch_stats_refresher(stats_def: nnx.GraphDef, vmap: bool):
  """``refresh(params, rest, x, batches) -> rest`` with recomputed BatchNorm.

  ``stats_def`` is the train-mode graph with every BatchNorm's momentum at 0,
  so one forward pass stores that batch's statistics; the new running
  statistics are their plain mean over ``batches``, as
  `optax_zoo.update_batch_stats` and ``torch.optim.swa_utils.update_bn``.
  """

  def refresh(params, rest, x, batches):
    def batch_stats(idx):
      model = nnx.merge(stats_def, params, rest, copy=True)
      model(x[idx])
      return nnx.state(model, nnx.BatchStat)

    def add(total, idx):
      return jax.tree.map(jnp.add, total, batch_stats(idx)), None

    zero = jax.tree.map(jnp.zeros_like, nnx.eval_shape(batch_stats, batches[0]))
    total, _ = jax.lax.scan(add, zero, batches)
    model = nnx.merge(stats_def, params, rest, copy=True)
    nnx.update(model, jax.tree.map(lambda s: s / batches.shape[0], total))
    return nnx.split(model, nnx.Param, ...)[2]

  return jax.vmap(refresh, in_axes=(0, 0, None, None)) if vmap else refresh


def _split_modes(model: nnx.Module):
  """Graphs in train, eval and statistics mode, and a copy of the state.

  The state is copied because training donates it: the caller's model must
  keep valid arrays if training stops half way.
  """
  twin = nnx.merge(*nnx.split(model), copy=True)
  twin.train()
  train_def, params, rest = nnx.split(twin, nnx.Param, ...)
  twin.eval()
  eval_def = nnx.graphdef(twin)
  twin.train()
  for _, module in nnx.iter_modules(twin):
    if isinstance(module, nnx.BatchNorm):
      module.momentum = 0.0
  stats_def = nnx.graphdef(twin)
  return train_def, eval_def, stats_def, params, rest


def _has_batch_stats(rest: Any) -> bool:
  return bool(jax.tree.leaves(nnx.filter_state(rest, nnx.BatchStat)))


def _batch_order(
  seed: int, num_train: int, batch_size: int, steps: int
) -> np.ndarray:
  """Indices of each step's batch: shuffled epochs, the remainder dropped."""
  rng = np.random.default_rng(seed)
  per_epoch = num_train // batch_size
  epochs = -(-steps // per_epoch)
  order = [
    rng.permutation(num_train)[: per_epoch * batch_size] for _ in range(epochs)
  ]
  return np.concatenate(order).reshape(-1, batch_size)[:steps].astype(np.int32)


def _eval_points(steps: int, eval_every: int | Sequence[int] | None):
  """The sorted steps to evaluate at, always including 0 and ``steps``."""
  if eval_every is None:
    eval_every = max(1, steps // 20)
  if isinstance(eval_every, int) and not isinstance(eval_every, bool):
    v.check_int('eval_every', eval_every, minimum=1)
    points = range(0, steps, eval_every)
  else:
    points = list(eval_every)
    for p in points:
      v.check_int('eval_every', p, minimum=0, maximum=steps)
  return sorted({0, *points, steps})


def _check_run_args(data, steps, batch_size, eval_every) -> list[int]:
  if not isinstance(data, Dataset):
    raise ValueError(f'`data` must be a Dataset, got {type(data).__name__}.')
  v.check_int('steps', steps, minimum=1)
  v.check_int('batch_size', batch_size, minimum=1, maximum=len(data.y_train))
  return _eval_points(steps, eval_every)


def _progress_bar(progress: bool | None, steps: int, desc: str):
  if progress is None:
    progress = steps >= _PROGRESS_MIN_STEPS and sys.stderr.isatty()
  if not progress:
    return None
  try:
    from tqdm.auto import tqdm
  except ImportError as e:
    raise ImportError(
      'progress bars need tqdm: pip install tqdm, or pass progress=False.'
    ) from e
  return tqdm(total=steps, desc=desc, unit='step', leave=False)


def _averages(find: Callable[..., Any], opt_state: Any, params: Any) -> bool:
  """Whether ``find`` evaluates other weights than the trained ones.

  Read off the traced program: without averaging, `eval_params` hands the
  parameters through, so the program's outputs are its parameter inputs.
  """
  jaxpr = jax.make_jaxpr(find)(opt_state, params).jaxpr
  param_vars = jaxpr.invars[len(jax.tree.leaves(opt_state)) :]
  return list(jaxpr.outvars) != list(param_vars)


def _fit(
  graphdefs: tuple[nnx.GraphDef, nnx.GraphDef, nnx.GraphDef],
  params: Any,
  rest: Any,
  tx: optax.GradientTransformation,
  data: Dataset,
  orders: np.ndarray,
  *,
  points: list[int],
  batch_size: int,
  loss_fn: LossFn | None,
  on_eval: EvalHook | None,
  vmap: bool,
  progress: bool | None,
  desc: str,
  batch_transform: BatchTransform | None,
  key: jax.Array,
) -> TrainResult:
  """Trains, evaluating at ``points``; the `TrainResult` at the last step.

  ``graphdefs`` are in train, eval and statistics mode. With ``vmap``,
  ``params``, ``rest``, ``orders`` and ``key`` carry a leading seed axis.
  """
  train_def, eval_def, stats_def = graphdefs
  steps = points[-1]
  opt_state = (jax.vmap(tx.init) if vmap else tx.init)(params)
  train_fn = make_train_fn(
    train_def,
    tx,
    loss_fn=loss_fn,
    vmap=vmap,
    batch_transform=batch_transform,
  )
  evaluate = _evaluator(eval_def, loss_fn, vmap)
  find = jax.vmap(find_eval_params) if vmap else find_eval_params
  averages = _averages(find, opt_state, params)
  refresh = (
    _batch_stats_refresher(stats_def, vmap)
    if averages and _has_batch_stats(rest)
    else None
  )

  @jax.jit
  def eval_point(params, rest, opt_state, x_train, stat_batches, x, y):
    weights = find(opt_state, params)
    if refresh is not None:
      rest = refresh(weights, rest, x_train, stat_batches)
    return weights, rest, evaluate(weights, rest, x, y)

  x_train, y_train, x_test, y_test = jax.device_put(
    (data.x_train, data.y_train, data.x_test, data.y_test)
  )
  # One pass over the training set in order, for BatchNorm statistics.
  per_epoch = len(data.y_train) // batch_size
  stat_batches = jnp.arange(per_epoch * batch_size, dtype=jnp.int32).reshape(
    per_epoch, batch_size
  )

  evals, records = [], []

  def evaluate_at(step):
    weights, stats, metrics = eval_point(
      params, rest, opt_state, x_train, stat_batches, x_test, y_test
    )
    # Hand back the trained arrays themselves where nothing was averaged.
    weights = weights if averages else params
    stats = stats if refresh is not None else rest
    evals.append(np.asarray(metrics))
    state = TrainState(step, eval_def, params, weights, opt_state, rest, stats)
    if on_eval is not None:
      records.append(dict(on_eval(state) or {}))
    return state

  seed_shape = orders.shape[:-2]
  state = evaluate_at(0)
  train_losses = [np.full(seed_shape, np.nan, np.float32)]
  step_times = []
  compiled = {}
  compile_time = 0.0
  bar = _progress_bar(progress, steps, desc)
  try:
    for start, stop in itertools.pairwise(points):
      batches = jnp.asarray(orders[..., start:stop, :])
      first = jnp.asarray(start, jnp.int32)
      num = stop - start
      if num not in compiled:
        t0 = time.perf_counter()
        compiled[num] = train_fn.lower(
          params, rest, opt_state, x_train, y_train, batches, first, key
        ).compile()
        compile_time += time.perf_counter() - t0
      t0 = time.perf_counter()
      params, rest, opt_state, losses = compiled[num](
        params, rest, opt_state, x_train, y_train, batches, first, key
      )
      jax.block_until_ready((params, rest, opt_state, losses))
      step_times.append((time.perf_counter() - t0) / num)
      train_losses.append(np.asarray(losses).mean(-1))
      state = evaluate_at(stop)
      if bar is not None:
        bar.update(num)
        bar.set_postfix(test_acc=f'{np.mean(evals[-1][1]):.3f}')
  finally:
    if bar is not None:
      bar.close()
  evals = np.stack(evals, axis=-1)
  measurements = {}
  if records:
    for name in records[0]:
      values = [np.asarray(r[name]) for r in records]
      measurements[name] = np.stack(values, axis=-1)
  history = History(
    steps=np.asarray(points),
    train_loss=np.stack(train_losses, axis=-1),
    test_loss=evals[0],
    test_accuracy=evals[1],
    step_time=np.asarray(step_times),
    compile_time=compile_time,
    measurements=measurements,
  )
  return TrainResult(**vars(state), history=history)


def train(
  model: nnx.Module,
  tx: optax.GradientTransformation,
  data: Dataset,
  *,
  steps: int,
  batch_size: int = 128,
  eval_every: int | Sequence[int] | None = None,
  seed: int = 0,
  progress: bool | None = None,
  loss_fn: LossFn | None = None,
  on_eval: EvalHook | None = None,
  batch_transform: BatchTransform | None = None,
) -> TrainResult:
  """Trains ``model`` with ``tx`` on ``data`` and records test metrics.

  Each epoch visits the training set in a fresh order drawn from ``seed``,
  in batches of ``batch_size`` (the last partial batch is dropped); training
  runs in train mode. The test set is evaluated before training, at the
  evaluation points and after the last step, in eval mode, on the weights
  `optax_zoo.averaging.eval_params` finds in the optimizer state (SWA's
  average, lookahead's slow weights, or the trained weights), with
  BatchNorm statistics recomputed for them over one ordered pass of the
  training set where they are not the trained weights.

  Afterwards ``model`` holds what was scored last: the evaluated weights and
  the model state they were evaluated with (its mode is left as it was). The
  trained weights, the optimizer state and the training-time model state
  are in the returned `TrainResult`, to continue training or to inspect.

  Args:
    model: a Flax NNX module mapping features to logits.
    tx: any optax transformation; it gets the extra update arguments of
      ``optax_zoo._src.extra_args`` (``value``, ``value_variance``,
      ``grad_fn``) and ignores those it does not take.
    data: the `Dataset`.
    steps: training steps, >= 1.
    batch_size: examples per step, in [1, number of training examples].
    eval_every: steps between evaluations (default ``max(1, steps // 20)``),
      or the steps to evaluate at (0 and ``steps`` are always added).
    seed: seeds the data order, and ``key(seed)`` the ``batch_transform``'s
      keys.
    progress: show a tqdm progress bar; default: when ``steps >= 500`` and
      stderr is a terminal.
    loss_fn: ``loss_fn(logits, labels) -> scalar``, a batch mean; default
      `cross_entropy_loss`.
    on_eval: ``on_eval(state) -> {name: value} or None``, called with the
      `TrainState` at every evaluation point; the values are stacked over
      the evaluations into `History.measurements`. The state's arrays are
      valid during the call only (the next training chunk donates them):
      copy what you keep.
    batch_transform: ``batch_transform(ctx, x, y) -> (x, y)``: what each
      step trains on instead of the drawn batch (see `make_train_fn`),
      for example `batch_augmentation` or `adversarial_training`.

  Returns:
    The `TrainResult` after the last step.

  Example:
    >>> import optax
    >>> from flax import nnx
    >>> from optax_zoo.training import MLP, digits, train
    >>> data = digits()
    >>> model = MLP(64, (32,), rngs=nnx.Rngs(0))
    >>> result = train(model, optax.adam(1e-2), data, steps=100)
    >>> result.history.final_accuracy > 0.8
    True
  """
  points = _check_run_args(data, steps, batch_size, eval_every)
  v.check_int('seed', seed, minimum=0)
  order = _batch_order(seed, len(data.y_train), batch_size, steps)
  *graphdefs, params, rest = _split_modes(model)
  result = _fit(
    tuple(graphdefs),
    params,
    rest,
    tx,
    data,
    order,
    points=points,
    batch_size=batch_size,
    loss_fn=loss_fn,
    on_eval=on_eval,
    vmap=False,
    progress=progress,
    desc=f'train {data.name}',
    batch_transform=batch_transform,
    key=jax.random.key(seed),
  )
  # Copies: the result keeps its own arrays, and the model must not share
  # buffers a later training call would donate.
  nnx.update(
    model,
    jax.tree.map(jnp.copy, result.eval_params),
    jax.tree.map(jnp.copy, result.eval_model_state),
  )
  return result


def train_seeds(
  model_fn: Callable[[nnx.Rngs], nnx.Module],
  tx: optax.GradientTransformation,
  data: Dataset,
  *,
  seeds: Sequence[int],
  steps: int,
  batch_size: int = 128,
  eval_every: int | Sequence[int] | None = None,
  progress: bool | None = None,
  loss_fn: LossFn | None = None,
  on_eval: EvalHook | None = None,
  desc: str | None = None,
  batch_transform: BatchTransform | None = None,
) -> TrainResult:
  """Trains one configuration under several seeds as one vmapped program.

  Seed ``s`` initializes its model with ``model_fn(nnx.Rngs(s))`` and draws
  its data order as `train` does with ``seed=s``, so each seed's result
  matches ``train(model_fn(nnx.Rngs(s)), tx, data, seed=s, ...)`` up to
  floating-point reassociation. Parameters, model state (BatchNorm
  statistics), optimizer state and data order carry a leading seed axis; the
  data set is shared.

  Args:
    model_fn: builds a model from its `nnx.Rngs`; every seed must give the
      same structure.
    tx: any optax transformation (extra update arguments as in `train`).
    data: the `Dataset`.
    seeds: distinct non-negative integers.
    steps: training steps, >= 1.
    batch_size: examples per step.
    eval_every: steps between evaluations, or the steps to evaluate at, as
      in `train`.
    progress: show a progress bar; default as in `train`.
    loss_fn: ``loss_fn(logits, labels) -> scalar``.
    on_eval: as in `train`; the state is seed-stacked.
    desc: the progress bar's label.
    batch_transform: as in `train`; seed ``s`` draws its keys from
      ``key(s)``.

  Returns:
    The seed-stacked `TrainResult`: every array has a leading seed axis in
    the order of ``seeds``; ``result.histories`` has one `History` per seed
    (`History.step_time` is the time of a step of all seeds together) and
    ``result.seed(i)`` one seed's result.

  Example:
    >>> import optax
    >>> from optax_zoo.training import MLP, digits, train_seeds
    >>> result = train_seeds(
    ...   lambda rngs: MLP(64, (32,), rngs=rngs), optax.adam(1e-2), digits(),
    ...   seeds=[0, 1], steps=50)
    >>> result.history.test_accuracy.shape, int(result.history.steps[-1])
    ((2, 26), 50)
  """
  points = _check_run_args(data, steps, batch_size, eval_every)
  seeds = list(seeds)
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f'`seeds` must be distinct and non-empty, got {seeds!r}.')
  for s in seeds:
    v.check_int('seeds', s, minimum=0)

  splits = [_split_modes(model_fn(nnx.Rngs(s))) for s in seeds]
  graphdefs = splits[0][:3]
  if any(split[:3] != graphdefs for split in splits):
    raise ValueError('`model_fn` must build the same structure for every seed.')
  params, rest = jax.tree.map(
    lambda *xs: jnp.stack(xs), *[split[3:] for split in splits]
  )
  orders = np.stack(
    [_batch_order(s, len(data.y_train), batch_size, steps) for s in seeds]
  )
  return _fit(
    graphdefs,
    params,
    rest,
    tx,
    data,
    orders,
    points=points,
    batch_size=batch_size,
    loss_fn=loss_fn,
    on_eval=on_eval,
    vmap=True,
    progress=progress,
    desc=desc or f'{len(seeds)} seeds',
    batch_transform=batch_transform,
    key=jnp.stack([jax.random.key(s) for s in seeds]),
  )
