"""A functional, jitted training loop for Flax NNX classifiers.

The model is split once with `nnx.split` into a static graph definition, its
parameters and the rest of its state (BatchNorm statistics, RNG counters).
Training then runs on plain pytrees: a chunk of steps is one `lax.scan` inside
one jitted call that donates parameters and optimizer state, with the data
set resident on the device and each batch gathered inside the step. The same
program vmapped over a leading seed axis trains several seeds at once
(`train_seeds`).

Evaluation uses the weights `optax_zoo.averaging.eval_params` finds in the
optimizer state (for example lookahead's slow weights), with BatchNorm in eval
mode.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from optax_zoo._src import validation as v
from optax_zoo.averaging import eval_params
from optax_zoo.training.data import Dataset

__all__ = [
  'History',
  'LossFn',
  'cross_entropy_loss',
  'make_eval_fn',
  'make_train_fn',
  'train',
  'train_seeds',
]

LossFn = Callable[[jax.Array, jax.Array], jax.Array]

# Below this many steps a progress bar is more noise than help.
_PROGRESS_MIN_STEPS = 500


def cross_entropy_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy against integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@dataclasses.dataclass(frozen=True, eq=False)
class History:
  """What one training run measured.

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
      of all of them.
    compile_time: wall seconds spent compiling the training step.
  """

  steps: np.ndarray
  train_loss: np.ndarray
  test_loss: np.ndarray
  test_accuracy: np.ndarray
  step_time: np.ndarray
  compile_time: float

  @property
  def final_accuracy(self) -> float:
    """Test accuracy after the last step."""
    return float(self.test_accuracy[-1])

  @property
  def best_accuracy(self) -> float:
    """The highest test accuracy at any evaluation."""
    return float(np.max(self.test_accuracy))

  @property
  def median_step_time(self) -> float:
    """The median of `step_time`, in seconds."""
    return float(np.median(self.step_time))

  def steps_to(self, accuracy: float) -> int | None:
    """The first evaluated step reaching ``accuracy``, or None."""
    (hits,) = np.nonzero(self.test_accuracy >= accuracy)
    return int(self.steps[hits[0]]) if hits.size else None

  def to_dict(self) -> dict[str, Any]:
    """A JSON-ready dict (NaN becomes None)."""

    def clean(a):
      return [None if math.isnan(x) else x for x in np.asarray(a).tolist()]

    return {
      'steps': self.steps.tolist(),
      'train_loss': clean(self.train_loss),
      'test_loss': clean(self.test_loss),
      'test_accuracy': clean(self.test_accuracy),
      'step_time': clean(self.step_time),
      'compile_time': self.compile_time,
      'final_accuracy': self.final_accuracy,
      'best_accuracy': self.best_accuracy,
    }


def make_train_fn(
  graphdef: nnx.GraphDef,
  tx: optax.GradientTransformation,
  *,
  loss_fn: LossFn | None = None,
  vmap: bool = False,
) -> Callable[..., tuple[Any, Any, optax.OptState, jax.Array]]:
  """The jitted training function for a split model.

  The returned ``train_fn(params, rest, opt_state, x, y, batches)`` runs one
  training step per row of ``batches`` (integer indices into ``x`` and ``y``,
  shape ``(num_steps, batch_size)``) in a `lax.scan` and returns ``(params,
  rest, opt_state, losses)``. It donates ``params``, ``rest`` and
  ``opt_state``: their buffers are reused for the outputs and are deleted
  after the call.

  A transform that takes extra update arguments (an
  `optax.GradientTransformationExtraArgs`, such as `optax_zoo.koala_v`) gets
  ``value``, the batch loss, and ``value_variance``, the mean over the batch
  of the squared per-example losses, each found by applying ``loss_fn`` to
  one example; transforms that do not use them ignore them.

  Args:
    graphdef: the graph definition from ``nnx.split(model, nnx.Param, ...)``,
      in the mode to train in (``model.train()``).
    tx: any optax transformation.
    loss_fn: ``loss_fn(logits, labels) -> scalar``; default
      `cross_entropy_loss`.
    vmap: map over a leading seed axis of ``params``, ``rest``,
      ``opt_state`` and ``batches`` (``x`` and ``y`` are shared).

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

  def run(params, rest, opt_state, x, y, batches):
    def step(carry, batch):
      params, rest, opt_state = carry
      model = nnx.merge(graphdef, params, rest)

      def batch_loss(model):
        logits = model(x[batch])
        return loss_fn(logits, y[batch]), logits

      (loss, logits), grads = nnx.value_and_grad(batch_loss, has_aux=True)(
        model
      )
      # The forward pass updated BatchNorm's running statistics in `model`.
      rest = nnx.split(model, nnx.Param, ...)[2]
      extra = _loss_extra_args(tx, loss_fn, loss, logits, y[batch])
      updates, opt_state = tx.update(grads, opt_state, params, **extra)
      return (optax.apply_updates(params, updates), rest, opt_state), loss

    (params, rest, opt_state), losses = jax.lax.scan(
      step, (params, rest, opt_state), batches
    )
    return params, rest, opt_state, losses

  if vmap:
    run = jax.vmap(run, in_axes=(0, 0, 0, None, None, 0))
  return jax.jit(run, donate_argnums=(0, 1, 2))


def _loss_extra_args(tx, loss_fn, loss, logits, labels) -> dict[str, Any]:
  """The loss arguments of a transform that takes extra update arguments."""
  if not isinstance(tx, optax.GradientTransformationExtraArgs):
    return {}
  per_example = jax.vmap(lambda lg, lb: loss_fn(lg[None], lb[None]))(
    logits, labels
  )
  # Unused by most transforms, in which case XLA drops it.
  return {'value': loss, 'value_variance': jnp.mean(jnp.square(per_example))}


def make_eval_fn(
  graphdef: nnx.GraphDef,
  *,
  loss_fn: LossFn | None = None,
  vmap: bool = False,
) -> Callable[..., tuple[jax.Array, jax.Array]]:
  """The jitted evaluation function for a split model.

  The returned ``eval_fn(params, rest, opt_state, x, y)`` evaluates the
  weights ``eval_params(opt_state, params)`` on all of ``x`` at once and
  returns ``(loss, accuracy)``.

  Args:
    graphdef: the graph definition in eval mode (``model.eval()``).
    loss_fn: ``loss_fn(logits, labels) -> scalar``; default
      `cross_entropy_loss`.
    vmap: map over a leading seed axis of ``params``, ``rest`` and
      ``opt_state``.

  Returns:
    The jitted function.
  """
  loss_fn = loss_fn or cross_entropy_loss

  def evaluate(params, rest, opt_state, x, y):
    model = nnx.merge(graphdef, eval_params(opt_state, params), rest)
    logits = model(x)
    return loss_fn(logits, y), jnp.mean(jnp.argmax(logits, -1) == y)

  if vmap:
    evaluate = jax.vmap(evaluate, in_axes=(0, 0, 0, None, None))
  return jax.jit(evaluate)


def _split_modes(model: nnx.Module):
  """Graph definitions in train and eval mode, and a copy of the state.

  The state is copied because training donates it: the caller's model must
  keep valid arrays if training stops half way.
  """
  twin = nnx.merge(*nnx.split(model), copy=True)
  twin.train()
  train_def, params, rest = nnx.split(twin, nnx.Param, ...)
  twin.eval()
  return train_def, nnx.graphdef(twin), params, rest


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


def _check_run_args(data, steps, batch_size, eval_every) -> int:
  if not isinstance(data, Dataset):
    raise ValueError(f'`data` must be a Dataset, got {type(data).__name__}.')
  v.check_int('steps', steps, minimum=1)
  v.check_int('batch_size', batch_size, minimum=1, maximum=len(data.y_train))
  if eval_every is None:
    return max(1, steps // 20)
  v.check_int('eval_every', eval_every, minimum=1)
  return eval_every


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


def _fit(
  graphdefs: tuple[nnx.GraphDef, nnx.GraphDef],
  params: Any,
  rest: Any,
  tx: optax.GradientTransformation,
  data: Dataset,
  orders: np.ndarray,
  *,
  steps: int,
  eval_every: int,
  loss_fn: LossFn | None,
  vmap: bool,
  progress: bool | None,
  desc: str,
):
  """Trains, evaluating every `eval_every` steps; returns arrays and state.

  ``graphdefs`` are in train and eval mode. With ``vmap``, ``params``,
  ``rest`` and ``orders`` carry a leading seed axis.
  """
  train_def, eval_def = graphdefs
  opt_state = (jax.vmap(tx.init) if vmap else tx.init)(params)
  train_fn = make_train_fn(train_def, tx, loss_fn=loss_fn, vmap=vmap)
  eval_fn = make_eval_fn(eval_def, loss_fn=loss_fn, vmap=vmap)
  x_train, y_train, x_test, y_test = jax.device_put(
    (data.x_train, data.y_train, data.x_test, data.y_test)
  )

  def evaluate():
    return np.asarray(eval_fn(params, rest, opt_state, x_test, y_test))

  seed_shape = orders.shape[:-2]
  evals = [evaluate()]
  train_losses = [np.full(seed_shape, np.nan, np.float32)]
  step_times = []
  compiled = {}
  compile_time = 0.0
  bar = _progress_bar(progress, steps, desc)
  try:
    for start in range(0, steps, eval_every):
      batches = jnp.asarray(orders[..., start : start + eval_every, :])
      num = batches.shape[-2]
      if num not in compiled:
        t0 = time.perf_counter()
        compiled[num] = train_fn.lower(
          params, rest, opt_state, x_train, y_train, batches
        ).compile()
        compile_time += time.perf_counter() - t0
      t0 = time.perf_counter()
      params, rest, opt_state, losses = compiled[num](
        params, rest, opt_state, x_train, y_train, batches
      )
      jax.block_until_ready((params, rest, opt_state, losses))
      step_times.append((time.perf_counter() - t0) / num)
      train_losses.append(np.asarray(losses).mean(-1))
      evals.append(evaluate())
      if bar is not None:
        bar.update(num)
        bar.set_postfix(test_acc=f'{np.mean(evals[-1][1]):.3f}')
  finally:
    if bar is not None:
      bar.close()
  evals = np.stack(evals, axis=-1)
  arrays = {
    'steps': np.minimum(np.arange(len(step_times) + 1) * eval_every, steps),
    'train_loss': np.stack(train_losses, axis=-1),
    'test_loss': evals[0],
    'test_accuracy': evals[1],
    'step_time': np.asarray(step_times),
    'compile_time': compile_time,
  }
  return arrays, params, rest


def train(
  model: nnx.Module,
  tx: optax.GradientTransformation,
  data: Dataset,
  *,
  steps: int,
  batch_size: int = 128,
  eval_every: int | None = None,
  seed: int = 0,
  progress: bool | None = None,
  loss_fn: LossFn | None = None,
) -> History:
  """Trains ``model`` with ``tx`` on ``data`` and records test metrics.

  Each epoch visits the training set in a fresh order drawn from ``seed``,
  in batches of ``batch_size`` (the last partial batch is dropped). The test
  set is evaluated before training, every ``eval_every`` steps and after the
  last step, on the weights `optax_zoo.averaging.eval_params` returns and with
  the model in eval mode; training runs in train mode. The model is updated in
  place with the trained parameters and state; its mode is left as it was.

  Args:
    model: a Flax NNX module mapping features to logits.
    tx: any optax transformation.
    data: the `Dataset`.
    steps: training steps, >= 1.
    batch_size: examples per step, in [1, number of training examples].
    eval_every: steps between evaluations; default ``max(1, steps // 20)``.
    seed: seeds the data order.
    progress: show a tqdm progress bar; default: when ``steps >= 500`` and
      stderr is a terminal.
    loss_fn: ``loss_fn(logits, labels) -> scalar``; default
      `cross_entropy_loss`.

  Returns:
    The run's `History`.

  Example:
    >>> import optax
    >>> from flax import nnx
    >>> from optax_zoo.training import MLP, digits, train
    >>> data = digits()
    >>> model = MLP(64, (32,), rngs=nnx.Rngs(0))
    >>> history = train(model, optax.adam(1e-2), data, steps=100)
    >>> history.final_accuracy > 0.8
    True
  """
  eval_every = _check_run_args(data, steps, batch_size, eval_every)
  v.check_int('seed', seed, minimum=0)
  order = _batch_order(seed, len(data.y_train), batch_size, steps)
  train_def, eval_def, params, rest = _split_modes(model)
  arrays, params, rest = _fit(
    (train_def, eval_def),
    params,
    rest,
    tx,
    data,
    order,
    steps=steps,
    eval_every=eval_every,
    loss_fn=loss_fn,
    vmap=False,
    progress=progress,
    desc=f'train {data.name}',
  )
  nnx.update(model, params, rest)
  return History(**arrays)


def train_seeds(
  model_fn: Callable[[nnx.Rngs], nnx.Module],
  tx: optax.GradientTransformation,
  data: Dataset,
  *,
  seeds: Sequence[int],
  steps: int,
  batch_size: int = 128,
  eval_every: int | None = None,
  progress: bool | None = None,
  loss_fn: LossFn | None = None,
  desc: str | None = None,
) -> list[History]:
  """Trains one configuration under several seeds as one vmapped program.

  Seed ``s`` initializes its model with ``model_fn(nnx.Rngs(s))`` and draws
  its data order as `train` does with ``seed=s``, so each seed's history
  matches ``train(model_fn(nnx.Rngs(s)), tx, data, seed=s, ...)`` up to
  floating-point reassociation. Parameters, model state (BatchNorm
  statistics), optimizer state and data order carry a leading seed axis; the
  data set is shared.

  Args:
    model_fn: builds a model from its `nnx.Rngs`; every seed must give the
      same structure.
    tx: any optax transformation.
    data: the `Dataset`.
    seeds: distinct non-negative integers.
    steps: training steps, >= 1.
    batch_size: examples per step.
    eval_every: steps between evaluations; default ``max(1, steps // 20)``.
    progress: show a progress bar; default as in `train`.
    loss_fn: ``loss_fn(logits, labels) -> scalar``.
    desc: the progress bar's label.

  Returns:
    One `History` per seed, in the order of ``seeds``; `History.step_time`
    is the time of a step of all seeds together.

  Example:
    >>> import optax
    >>> from optax_zoo.training import MLP, digits, train_seeds
    >>> histories = train_seeds(
    ...   lambda rngs: MLP(64, (32,), rngs=rngs), optax.adam(1e-2), digits(),
    ...   seeds=[0, 1], steps=50)
    >>> len(histories), int(histories[0].steps[-1])
    (2, 50)
  """
  eval_every = _check_run_args(data, steps, batch_size, eval_every)
  seeds = list(seeds)
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f'`seeds` must be distinct and non-empty, got {seeds!r}.')
  for s in seeds:
    v.check_int('seeds', s, minimum=0)

  splits = [_split_modes(model_fn(nnx.Rngs(s))) for s in seeds]
  graphdefs = splits[0][:2]
  if any(split[:2] != graphdefs for split in splits):
    raise ValueError('`model_fn` must build the same structure for every seed.')
  params, rest = jax.tree.map(
    lambda *xs: jnp.stack(xs), *[split[2:] for split in splits]
  )
  orders = np.stack(
    [_batch_order(s, len(data.y_train), batch_size, steps) for s in seeds]
  )
  arrays, _, _ = _fit(
    graphdefs,
    params,
    rest,
    tx,
    data,
    orders,
    steps=steps,
    eval_every=eval_every,
    loss_fn=loss_fn,
    vmap=True,
    progress=progress,
    desc=desc or f'{len(seeds)} seeds',
  )
  return [
    History(
      steps=arrays['steps'],
      train_loss=arrays['train_loss'][i],
      test_loss=arrays['test_loss'][i],
      test_accuracy=arrays['test_accuracy'][i],
      step_time=arrays['step_time'],
      compile_time=arrays['compile_time'],
    )
    for i in range(len(seeds))
  ]
