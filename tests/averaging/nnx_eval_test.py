"""One NNX evaluation path: eval_params on what an NNX user holds."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optax_zoo
from optax_zoo._src import test_utils as tu


class _Net(nnx.Module):
  def __init__(self, rngs):
    self.dense = nnx.Linear(4, 32, rngs=rngs)
    self.norm = nnx.BatchNorm(32, rngs=rngs)
    self.out = nnx.Linear(32, 10, rngs=rngs)

  def __call__(self, x):
    return self.out(nnx.relu(self.norm(self.dense(x))))


def _trained(tx, steps=6):
  model = _Net(nnx.Rngs(0))
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = jax.random.normal(jax.random.key(1), (16, 4))
  y = jnp.arange(16) % 10
  history = []

  def loss_fn(m):
    logits = m(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  for _ in range(steps):
    opt.update(model, nnx.grad(loss_fn)(model))
    history.append(jax.tree.map(np.asarray, nnx.state(model, nnx.Param)))
  return model, opt, x, history


def _mean(history):
  return jax.tree.map(lambda *xs: np.mean(xs, axis=0), *history)


@pytest.mark.parametrize('holder', ['opt_state', 'optimizer'])
def test_eval_params_takes_the_model(holder):
  # Before: eval_params(opt.opt_state, model) raised "Incompatible shapes for
  # broadcasting: shapes=[(10,), (32,)]".
  tx = optax.chain(optax.clip(1.0), optax_zoo.swa(optax.sgd(0.1), start_step=0))
  model, opt, _, history = _trained(tx)
  state = opt.opt_state if holder == 'opt_state' else opt
  got = optax_zoo.eval_params(state, model)
  assert isinstance(got, nnx.State)
  want = optax_zoo.eval_params(opt.opt_state, nnx.state(model, nnx.Param))
  tu.assert_trees_equal(got, want)
  tu.assert_trees_close(
    jax.tree.map(np.asarray, got), _mean(history), rtol=1e-5, atol=1e-6
  )


def test_eval_params_with_a_wrt_filter_needs_the_optimizer():
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  tx = optax_zoo.lookahead(optax.sgd(0.1))
  # Train the kernel only: the state covers part of the Params.
  opt = nnx.Optimizer(model, tx, wrt=nnx.PathContains('kernel'))
  initial = jax.tree.map(np.asarray, nnx.state(model, opt.wrt))
  grads = nnx.grad(
    lambda m: jnp.sum(m(jnp.ones((2, 3)))),
    argnums=nnx.DiffState(0, opt.wrt),
  )(model)
  opt.update(model, grads)
  got = optax_zoo.eval_params(opt, model)
  # Before its first synchronization lookahead's slow weights are the
  # initial ones.
  tu.assert_trees_equal(jax.tree.map(np.asarray, got), initial)
  assert not np.allclose(got['kernel'][...], model.kernel[...])
  with pytest.raises(ValueError, match=r'nnx\.state\(model, wrt\)'):
    optax_zoo.eval_params(opt.opt_state, model)
  with pytest.raises(ValueError, match=r'got an nnx\.Optimizer'):
    optax_zoo.eval_params(opt.opt_state, opt)


def test_eval_model_has_the_average_and_fresh_batch_statistics():
  tx = optax_zoo.swa(optax.sgd(0.1), start_step=0)
  model, opt, x, history = _trained(tx)
  batches = [x[:8], x[8:]]
  fresh = optax_zoo.eval_model(opt, model, batches)
  tu.assert_trees_close(
    jax.tree.map(np.asarray, nnx.state(fresh, nnx.Param)),
    _mean(history),
    rtol=1e-5,
    atol=1e-6,
  )
  want = optax_zoo.update_batch_stats(
    model, optax_zoo.eval_params(opt, model), batches
  )
  np.testing.assert_allclose(fresh.norm.mean[...], want.norm.mean[...])
  assert not np.allclose(fresh.norm.mean[...], model.norm.mean[...])
  # The trained model is untouched; without batches the statistics stay.
  tu.assert_trees_equal(
    jax.tree.map(np.asarray, nnx.state(model, nnx.Param)), history[-1]
  )
  kept = optax_zoo.eval_model(opt, model)
  np.testing.assert_array_equal(kept.norm.mean[...], model.norm.mean[...])
  assert kept.norm.use_running_average  # eval mode
