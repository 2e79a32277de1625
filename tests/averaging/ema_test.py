"""weight_ema against a NumPy transcription of jax-privacy's `ema`."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from optax_zoo._src import test_utils as tu


def _grads(i):
  return {'w': jax.random.normal(jax.random.key(i), (2, 3))}


def _reference(seen, decay, start_step, warmup):
  """jax-privacy's dp_sgd/averaging.py `ema`, transcribed.

  The average starts at the initial weights; after update s (from 0) the
  new weights are folded in with ``t = s - start_step``: ``mu *= t >= 0``,
  then ``mu = min(mu, (1 + t) / (10 + t))`` under warm-up. (For t <= -2
  that mu is negative, but t = -1 gives mu = 0 and restarts the average at
  the iterate, so the averages from t = 0 on are unaffected; ours keeps mu
  = 0 before the start.)
  """
  avg = np.asarray(seen[0], np.float64)
  for s, p in enumerate(seen[1:]):
    t = s - start_step
    mu = decay * (t >= 0)
    if warmup:
      mu = min(mu, (1.0 + t) / (10.0 + t))
    avg = mu * avg + (1 - mu) * np.asarray(p, np.float64)
  return avg


@pytest.mark.parametrize('warmup', [True, False])
@pytest.mark.parametrize('start_step', [0, 7])
def test_weight_ema_matches_jax_privacy(start_step, warmup):
  decay = 0.9
  tx = optax_zoo.weight_ema(
    optax.sgd(0.05, momentum=0.9),
    decay=decay,
    start_step=start_step,
    warmup=warmup,
  )
  params = {'w': jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
  state = tx.init(params)
  update = jax.jit(tx.update)
  seen = [params['w']]
  for i in range(60):
    updates, state = update(_grads(i), state, params)
    params = optax.apply_updates(params, updates)
    seen.append(params['w'])
  ours = optax_zoo.eval_params(state, params)['w']
  np.testing.assert_allclose(
    ours, _reference(seen, decay, start_step, warmup), rtol=1e-5, atol=1e-6
  )
  # The inner optimizer's trajectory is untouched.
  plain = optax.sgd(0.05, momentum=0.9)
  p, s = {'w': seen[0]}, plain.init({'w': seen[0]})
  for i in range(60):
    u, s = plain.update(_grads(i), s, p)
    p = optax.apply_updates(p, u)
  tu.assert_trees_equal(p['w'], seen[-1])


def test_weight_ema_is_the_iterate_before_it_starts():
  tx = optax_zoo.weight_ema(optax.sgd(0.1), decay=0.99, start_step=5)
  params = jnp.ones(3)
  state = tx.init(params)
  for i in range(5):
    updates, state = tx.update(jnp.full(3, float(i)), state, params)
    params = optax.apply_updates(params, updates)
  tu.assert_trees_equal(optax_zoo.eval_params(state, params), params)


def test_weight_ema_keeps_a_float32_average_of_bf16_params():
  tx = optax_zoo.weight_ema(optax.sgd(1e-3), decay=0.999, warmup=False)
  params = jnp.ones(4, jnp.bfloat16)
  state = tx.init(params)
  assert state.ema.dtype == jnp.float32
  _, state = tx.update(jnp.ones(4, jnp.bfloat16), state, params)
  assert optax_zoo.eval_params(state, params).dtype == jnp.bfloat16


@pytest.mark.parametrize(
  'bad',
  [{'decay': 1.0}, {'decay': -0.5}, {'start_step': -1}, {'warmup': 1}],
)
def test_bad_weight_ema_arguments_raise(bad):
  kwargs = {'decay': 0.9, **bad}
  name = next(iter(bad))
  with pytest.raises(ValueError, match=name):
    optax_zoo.weight_ema(optax.sgd(0.1), **kwargs)
