"""Drop-in lookahead against optax's lookahead, and eval_params."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from optax_zoo._src import test_utils as tu


def _grad(params, i):
  noise = jax.random.normal(jax.random.key(i), params.shape)
  return jax.grad(tu.rosenbrock)(params) + 0.1 * noise


@pytest.mark.parametrize('reset_state', [False, True])
@pytest.mark.parametrize('sync_period', [1, 5])
def test_equals_optax_lookahead_step_for_step(sync_period, reset_state):
  fast = optax.adam(1e-2)
  ours = optax_zoo.lookahead(
    fast, sync_period=sync_period, alpha=0.3, reset_state=reset_state
  )
  theirs = optax.lookahead(
    fast, sync_period=sync_period, slow_step_size=0.3, reset_state=reset_state
  )
  p = jnp.array([-0.5, 1.5])
  lp = optax.LookaheadParams.init_synced(p)
  s, ls = ours.init(p), theirs.init(lp)
  for i in range(60):
    u, s = ours.update(_grad(p, i), s, p)
    p = optax.apply_updates(p, u)
    lu, ls = theirs.update(_grad(lp.fast, i), ls, lp)
    lp = optax.apply_updates(lp, lu)
    np.testing.assert_array_equal(p, lp.fast)
    np.testing.assert_array_equal(optax_zoo.eval_params(s, p), lp.slow)


def test_slow_weights_follow_the_paper_formula():
  # Algorithm 1 of Zhang et al. with plain SGD, written out.
  lr, k, alpha = 0.1, 3, 0.5
  tx = optax_zoo.lookahead(optax.sgd(lr), sync_period=k, alpha=alpha)
  p = jnp.array([2.0, -1.0])
  state = tx.init(p)
  slow, fast = np.asarray(p), np.asarray(p)
  for i in range(12):
    g = _grad(p, i)
    u, state = tx.update(g, state, p)
    p = optax.apply_updates(p, u)
    fast = fast - lr * np.asarray(g)
    if (i + 1) % k == 0:
      slow = slow + alpha * (fast - slow)
      fast = slow
    np.testing.assert_allclose(p, fast, rtol=1e-6)
    np.testing.assert_allclose(state.slow, slow, rtol=1e-6)


def test_eval_params_through_chain_inject_and_multisteps():
  p = jnp.ones(2)
  inner = optax_zoo.lookahead(optax.sgd(0.5), sync_period=4)
  for tx in (
    optax.chain(optax.clip_by_global_norm(10.0), inner),
    optax.inject_hyperparams(optax_zoo.lookahead)(
      optax.sgd(0.5), sync_period=4, alpha=0.5
    ),
    optax.MultiSteps(inner, every_k_schedule=1),
  ):
    state = tx.init(p)
    q = p
    for i in range(2):
      u, state = tx.update(_grad(q, i), state, q)
      q = optax.apply_updates(q, u)
    assert not np.allclose(q, p)
    np.testing.assert_array_equal(optax_zoo.eval_params(state, q), p)


def test_eval_params_without_averaging_returns_params():
  p = {'a': jnp.ones(3)}
  state = optax.chain(optax.adam(1e-3), optax.ema(0.9)).init(p)
  assert optax_zoo.eval_params(state, p) is p


def test_bad_input_raises():
  tx = optax_zoo.lookahead(optax.sgd(0.1))
  with pytest.raises(ValueError, match='params'):
    tx.update(jnp.ones(1), tx.init(jnp.ones(1)))
  with pytest.raises(ValueError, match='`inner`'):
    optax_zoo.lookahead('adam')
  with pytest.raises(ValueError, match='`sync_period`'):
    optax_zoo.lookahead(optax.sgd(0.1), sync_period=2.5)
