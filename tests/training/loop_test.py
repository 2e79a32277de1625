"""Tests for the training loop."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optax_zoo
from optax_zoo._src import test_utils as tu
from optax_zoo.training import (
  MLP,
  Dataset,
  ResNet1D,
  digits,
  make_train_fn,
  train,
  train_seeds,
)
from optax_zoo.training import loop as loop_lib


@pytest.fixture(scope='module')
def data():
  return digits()


@pytest.fixture(scope='module')
def small(data):
  """A quarter of digits, for runs that only need to be short."""
  return Dataset(
    data.x_train[:400],
    data.y_train[:400],
    data.x_test[:100],
    data.y_test[:100],
    num_classes=10,
    name='digits-small',
  )


def _mlp(rngs):
  return MLP(64, (32,), rngs=rngs)


def test_train_lowers_the_loss(data):
  history = train(
    _mlp(nnx.Rngs(0)), optax.adam(1e-2), data, steps=60, eval_every=20
  ).history
  np.testing.assert_array_equal(history.steps, [0, 20, 40, 60])
  assert history.test_loss[-1] < 0.5 * history.test_loss[0]
  assert history.train_loss[-1] < history.train_loss[1]
  assert np.isnan(history.train_loss[0])
  assert history.final_accuracy > 0.85
  assert history.best_accuracy >= history.final_accuracy
  assert history.step_time.shape == (3,)
  assert np.all(history.step_time > 0) and history.compile_time > 0


def test_train_updates_the_model_in_place(small):
  model = _mlp(nnx.Rngs(0))
  before = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
  history = train(
    model, optax.adam(1e-2), small, steps=10, eval_every=10
  ).history
  after = nnx.state(model, nnx.Param)
  assert not np.allclose(before['head']['kernel'], after['head']['kernel'])
  accuracy = jnp.mean(jnp.argmax(model(small.x_test), -1) == small.y_test)
  np.testing.assert_allclose(accuracy, history.final_accuracy, atol=1e-6)


def test_last_chunk_may_be_shorter(small):
  history = train(
    _mlp(nnx.Rngs(0)), optax.sgd(0.1), small, steps=25, eval_every=10
  ).history
  np.testing.assert_array_equal(history.steps, [0, 10, 20, 25])


def test_vmapped_seeds_match_separate_runs(small):
  kwargs = {'steps': 30, 'eval_every': 10, 'batch_size': 32}
  tx = optax.adam(1e-2)
  histories = train_seeds(_mlp, tx, small, seeds=[0, 1], **kwargs).histories
  for seed, vmapped in zip([0, 1], histories, strict=True):
    alone = train(_mlp(nnx.Rngs(seed)), tx, small, seed=seed, **kwargs).history
    np.testing.assert_allclose(vmapped.test_loss, alone.test_loss, rtol=1e-4)
    np.testing.assert_allclose(vmapped.train_loss, alone.train_loss, rtol=1e-4)
    np.testing.assert_allclose(
      vmapped.test_accuracy, alone.test_accuracy, atol=1e-6
    )
  assert not np.allclose(histories[0].test_loss, histories[1].test_loss)


def test_train_step_donates_params_and_opt_state(small):
  graphdef, params, rest = nnx.split(_mlp(nnx.Rngs(0)), nnx.Param, ...)
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)
  train_fn = make_train_fn(graphdef, tx)
  batches = jnp.arange(64, dtype=jnp.int32).reshape(2, 32)
  out = train_fn(params, rest, opt_state, small.x_train, small.y_train, batches)
  assert all(x.is_deleted() for x in jax.tree.leaves(params))
  assert all(x.is_deleted() for x in jax.tree.leaves(opt_state) if x.size > 1)
  assert out[3].shape == (2,)


def test_works_with_a_chained_transform(small):
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
  history = train(_mlp(nnx.Rngs(0)), tx, small, steps=40, eval_every=20).history
  assert history.test_loss[-1] < 0.5 * history.test_loss[0]


def test_batchnorm_statistics_train_and_are_used_in_eval(small):
  model = ResNet1D(channels=8, num_blocks=1, rngs=nnx.Rngs(0))
  history = train(
    model, optax.adam(1e-2), small, steps=20, eval_every=20
  ).history
  stats = nnx.state(model, nnx.BatchStat)
  assert np.any(np.asarray(stats['stem_bn']['mean']) != 0)
  model.eval()
  logits = nnx.jit(lambda m, x: m(x))(model, small.x_test)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == small.y_test)
  np.testing.assert_allclose(accuracy, history.final_accuracy, atol=1e-6)
  assert model.blocks[0].bn1.use_running_average


def test_evaluates_the_weights_eval_params_returns(small):
  # Slow weights that never sync stay at the initialization: the evaluated
  # model must not improve while the fast weights train.
  tx = optax_zoo.lookahead(optax.adam(1e-2), sync_period=1000, alpha=0.5)
  history = train(_mlp(nnx.Rngs(0)), tx, small, steps=30, eval_every=10).history
  np.testing.assert_allclose(history.test_loss, history.test_loss[0])
  assert history.train_loss[-1] < 0.5 * history.train_loss[1]


def test_nnx_optimizer_matches_the_functional_loop(small):
  # The stateful NNX API on the same batches reaches the same weights.
  tx = optax_zoo.create('adam', learning_rate=1e-2)
  steps, batch_size = 20, 32
  history = train(
    _mlp(nnx.Rngs(0)), tx, small, steps=steps, batch_size=batch_size
  ).history
  model = _mlp(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, x, y):
    def loss_fn(model):
      return loop_lib.cross_entropy_loss(model(x), y)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  order = loop_lib._batch_order(0, len(small.y_train), batch_size, steps)
  losses = [
    step(model, optimizer, small.x_train[b], small.y_train[b]) for b in order
  ]
  assert losses[-1] < 0.5 * losses[0]
  test_loss = loop_lib.cross_entropy_loss(model(small.x_test), small.y_test)
  np.testing.assert_allclose(test_loss, history.test_loss[-1], rtol=1e-4)


def test_extra_args_transforms_get_the_loss_and_its_spread(small):
  def recorder():
    def update(updates, state, params=None, *, value, value_variance, **_):
      return jax.tree.map(jnp.zeros_like, updates), (value, value_variance)

    return optax.GradientTransformationExtraArgs(
      lambda params: (jnp.zeros([]), jnp.zeros([])), update
    )

  model = _mlp(nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = recorder()
  batch = jnp.arange(32, dtype=jnp.int32)
  # Before the call, which donates (deletes) the model's parameters.
  per_example = optax.softmax_cross_entropy_with_integer_labels(
    model(small.x_train[batch]), small.y_train[batch]
  )
  _, _, (value, value_variance), losses = make_train_fn(graphdef, tx)(
    params, rest, tx.init(params), small.x_train, small.y_train, batch[None]
  )
  np.testing.assert_allclose(value, losses[0])
  np.testing.assert_allclose(value, per_example.mean(), rtol=1e-5)
  np.testing.assert_allclose(
    value_variance, jnp.mean(per_example**2), rtol=1e-5
  )


@pytest.mark.parametrize('name', ['koala_v', 'koala_m'])
def test_trains_with_a_method_that_needs_the_loss(small, name):
  tx = optax_zoo.create(name, learning_rate=1.0)
  history = train(_mlp(nnx.Rngs(0)), tx, small, steps=60, eval_every=20).history
  assert history.test_loss[-1] < 0.5 * history.test_loss[0]


def test_batch_order_visits_each_example_once_per_epoch():
  order = loop_lib._batch_order(0, num_train=10, batch_size=3, steps=7)
  assert order.shape == (7, 3)
  for epoch in range(2):
    seen = order[3 * epoch : 3 * epoch + 3].ravel()
    assert len(set(seen.tolist())) == 9
  assert not np.array_equal(order[:3], order[3:6])


def test_history_reports_steps_to_target_and_serializes(small):
  history = train(
    _mlp(nnx.Rngs(0)), optax.adam(1e-2), small, steps=20, eval_every=10
  ).history
  assert history.steps_to(0.0) == 0
  assert history.steps_to(1.01) is None
  record = json.loads(json.dumps(history.to_dict()))
  assert record['train_loss'][0] is None
  assert record['steps'] == [0, 10, 20]


@pytest.mark.parametrize(
  ('kwargs', 'match'),
  [
    ({'steps': 0}, '`steps`'),
    ({'steps': 5, 'batch_size': 401}, r'`batch_size`.*\[1, 400\]'),
    ({'steps': 5, 'eval_every': 0}, '`eval_every`'),
    ({'steps': 5, 'seed': -1}, '`seed`'),
  ],
)
def test_bad_arguments_raise_value_error(small, kwargs, match):
  with pytest.raises(ValueError, match=match):
    train(_mlp(nnx.Rngs(0)), optax.sgd(0.1), small, **kwargs)


def test_train_seeds_rejects_repeated_seeds(small):
  with pytest.raises(ValueError, match='`seeds`'):
    train_seeds(_mlp, optax.sgd(0.1), small, seeds=[1, 1], steps=5)


def _accuracy(model, data):
  model.eval()
  logits = nnx.jit(lambda m, x: m(x))(model, data.x_test)
  return float(jnp.mean(jnp.argmax(logits, -1) == data.y_test))


def test_returns_the_weights_it_scored(data):
  # SWA: the history scores the average; the result and the model hold it.
  tx = optax_zoo.swa(optax.sgd(0.05, momentum=0.9), start_step=100)
  model = _mlp(nnx.Rngs(0))
  result = train(model, tx, data, steps=200, eval_every=50)
  final = result.history.final_accuracy
  assert _accuracy(result.model(), data) == final
  assert _accuracy(model, data) == final
  trained = result.params['head']['kernel'][...]
  averaged = result.eval_params['head']['kernel'][...]
  assert not np.allclose(trained, averaged)
  np.testing.assert_array_equal(
    nnx.state(model, nnx.Param)['head']['kernel'][...], averaged
  )
  fast = _accuracy(result.model(evaluated=False), data)
  assert 0.5 < fast != final
  # The optimizer state continues the run: its average is the one scored
  # (to rounding: here it is computed op by op, in the loop inside a fused
  # jitted program, which may differ in the last bit).
  np.testing.assert_allclose(
    optax_zoo.eval_params(result.opt_state, result.params)['head']['kernel'],
    averaged,
    rtol=1e-6,
    atol=0,
  )


def test_averaged_weights_get_their_own_batchnorm_statistics(small):
  batch_size = 32
  tx = optax_zoo.swa(optax.sgd(0.05, momentum=0.9), start_step=10)

  def resnet():
    return ResNet1D(channels=8, num_blocks=1, rngs=nnx.Rngs(0))

  x_train = small.x_train[:, :40]
  data = Dataset(
    x_train,
    small.y_train,
    small.x_test[:, :40],
    small.y_test,
    num_classes=10,
    name='digits-40',
  )
  result = train(resnet(), tx, data, steps=30, eval_every=30, batch_size=32)
  # By hand: the averaged weights, and BatchNorm statistics averaged over
  # one ordered pass of the training set.
  per_epoch = len(data.y_train) // batch_size
  batches = x_train[: per_epoch * batch_size].reshape(per_epoch, batch_size, -1)
  by_hand = optax_zoo.update_batch_stats(resnet(), result.eval_params, batches)
  expected = nnx.state(by_hand, nnx.BatchStat)
  got = nnx.filter_state(result.eval_model_state, nnx.BatchStat)
  tu.assert_trees_close(got, expected, rtol=1e-4, atol=1e-6)
  trained = nnx.filter_state(result.model_state, nnx.BatchStat)
  assert not np.allclose(
    got['stem_bn']['mean'][...], trained['stem_bn']['mean'][...], atol=1e-3
  )
  assert _accuracy(by_hand, data) == result.history.final_accuracy


def test_plain_methods_keep_the_training_statistics(small):
  model = ResNet1D(channels=8, num_blocks=1, rngs=nnx.Rngs(0))
  result = train(model, optax.adam(1e-2), small, steps=10, eval_every=10)
  assert result.eval_model_state is result.model_state
  assert result.eval_params is result.params


def test_on_eval_hook_records_measurements_at_the_given_steps(small):
  seen = []

  def hook(state):
    seen.append(state.step)
    kernel = state.params['head']['kernel'][...]
    return {'head_norm': jnp.linalg.norm(kernel, axis=(-2, -1))}

  result = train(
    _mlp(nnx.Rngs(0)),
    optax.adam(1e-2),
    small,
    steps=30,
    eval_every=[5, 12],
    on_eval=hook,
  )
  assert seen == [0, 5, 12, 30]
  np.testing.assert_array_equal(result.history.steps, [0, 5, 12, 30])
  norms = result.history.measurements['head_norm']
  assert norms.shape == (4,) and len(set(norms.tolist())) == 4
  final = jnp.linalg.norm(result.params['head']['kernel'][...])
  np.testing.assert_allclose(norms[-1], final, rtol=1e-6)
  stacked = train_seeds(
    _mlp,
    optax.adam(1e-2),
    small,
    seeds=[0, 1],
    steps=10,
    eval_every=5,
    on_eval=hook,
  )
  assert stacked.history.measurements['head_norm'].shape == (2, 3)
  assert stacked.histories[1].measurements['head_norm'].shape == (3,)


def test_seed_results_match_separate_runs(small):
  kwargs = {'steps': 10, 'eval_every': 10, 'batch_size': 32}
  tx = optax_zoo.lookahead(optax.adam(1e-2), sync_period=3)
  stacked = train_seeds(_mlp, tx, small, seeds=[3, 4], **kwargs)
  alone = train(_mlp(nnx.Rngs(4)), tx, small, seed=4, **kwargs)
  second = stacked.seed(1)
  tu.assert_trees_close(second.params, alone.params, rtol=1e-4, atol=1e-6)
  tu.assert_trees_close(
    second.eval_params, alone.eval_params, rtol=1e-4, atol=1e-6
  )
  assert second.history.final_accuracy == stacked.histories[1].final_accuracy


def _grad_fn_recorder(num_splits):
  """Records how far ``grad_fn`` is from the step's own gradient."""

  def update(updates, state, params=None, *, grad_fn, **_):
    whole = grad_fn(params)
    parts = [grad_fn(params, i, num_splits) for i in range(num_splits)]
    mean_of_parts = jax.tree.map(lambda *g: sum(g) / num_splits, *parts)
    gap = lambda a, b: jnp.max(
      jnp.stack(
        [
          jnp.max(jnp.abs(x - y))
          for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        ]
      )
    )
    record = (gap(whole, updates), gap(mean_of_parts, updates))
    record += (gap(parts[0], updates),)
    return jax.tree.map(jnp.zeros_like, updates), record

  return optax.GradientTransformationExtraArgs(
    lambda params: tuple(jnp.zeros([]) for _ in range(3)), update
  )


def test_grad_fn_is_the_batch_gradient_and_splits_it(small):
  # With a mean loss the parts' gradients average to the batch gradient,
  # and a single part differs from it.
  model = _mlp(nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = _grad_fn_recorder(num_splits=4)
  batch = jnp.arange(32, dtype=jnp.int32)
  _, _, (whole, mean_of_parts, part), _ = make_train_fn(graphdef, tx)(
    params, rest, tx.init(params), small.x_train, small.y_train, batch[None]
  )
  assert whole < 1e-6 and mean_of_parts < 1e-5
  assert part > 1e-3


def test_grad_fn_rejects_a_split_that_does_not_divide_the_batch(small):
  graphdef, params, rest = nnx.split(_mlp(nnx.Rngs(0)), nnx.Param, ...)
  tx = _grad_fn_recorder(num_splits=3)
  with pytest.raises(
    ValueError, match=r'`num_splits`.*divide the batch size 32'
  ):
    make_train_fn(graphdef, tx)(
      params,
      rest,
      tx.init(params),
      small.x_train,
      small.y_train,
      jnp.arange(32, dtype=jnp.int32)[None],
    )


def test_trains_a_method_that_needs_grad_fn(small):
  tx = tu.EXTRAGRADIENT.build()
  history = train(_mlp(nnx.Rngs(0)), tx, small, steps=60, eval_every=20)
  assert history.history.test_loss[-1] < 0.5 * history.history.test_loss[0]
