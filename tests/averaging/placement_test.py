"""Averaging wrappers anywhere in a chain; lookahead where it must be."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo


def _loss(w):
  return jnp.sum((w - 3.0) ** 2)


def _run(tx, steps=50):
  """The iterates visited from w = 1 and the final state."""
  w = jnp.array([1.0])
  state, update = tx.init(w), jax.jit(tx.update)
  seen = []
  for _ in range(steps):
    updates, state = update(jax.grad(_loss)(w), state, w)
    w = optax.apply_updates(w, updates)
    seen.append(np.asarray(w, np.float64))
  return seen, state


AVERAGERS = {
  'swa': lambda inner: optax_zoo.swa(inner, start_step=0),
  'swag': lambda inner: optax_zoo.swag(inner, rank=2, start_step=0),
  'swa_every_3': lambda inner: optax_zoo.swa(inner, start_step=4, every_k=3),
}


@pytest.mark.parametrize('name', list(AVERAGERS))
@pytest.mark.parametrize('placement', ['first', 'last'])
def test_average_is_the_mean_of_the_visited_iterates(name, placement):
  # The case: with SWA first, before a scale, eval_params gave 2.229
  # where the mean of the iterates is 2.686 (it averaged params plus its own
  # unscaled inner update).
  wrap = AVERAGERS[name]
  tx = (
    optax.chain(wrap(optax.scale_by_adam()), optax.scale(-0.1))
    if placement == 'first'
    else wrap(optax.chain(optax.scale_by_adam(), optax.scale(-0.1)))
  )
  seen, state = _run(tx)
  got = optax_zoo.eval_params(state, jnp.asarray(seen[-1], jnp.float32))
  if name == 'swa_every_3':
    seen = [w for t, w in enumerate(seen, 1) if t >= 4 and (t - 4) % 3 == 0]
  np.testing.assert_allclose(got, np.mean(seen, axis=0), rtol=1e-6)
  if name == 'swa':
    np.testing.assert_allclose(got, [2.686], atol=1e-3)


def test_gadam_averages_what_a_later_transform_makes_of_its_update():
  tx = optax.chain(optax_zoo.gadam(0.1, start_step=0), optax.scale(0.5))
  seen, state = _run(tx)
  got = optax_zoo.eval_params(state, jnp.asarray(seen[-1], jnp.float32))
  np.testing.assert_allclose(got, np.mean(seen, axis=0), rtol=1e-6)


@pytest.mark.parametrize(
  'make',
  [
    lambda: optax_zoo.lookahead(optax.scale_by_adam()),
    lambda: optax_zoo.periodic_swa(
      optax.scale_by_adam(), start_step=0, period=5
    ),
  ],
  ids=['lookahead', 'periodic_swa'],
)
def test_a_method_that_must_be_last_is_caught_before_a_transform(make):
  # Lookahead first, before a scale, gave slow weights 3.348 where the fast
  # weights' true lookahead average is 2.734: its synchronizing update was
  # scaled. It must produce the final update, so eval_params refuses.
  seen, state = _run(optax.chain(make(), optax.scale(-0.1)))
  with pytest.raises(ValueError, match='must be the last transform'):
    optax_zoo.eval_params(state, jnp.asarray(seen[-1], jnp.float32))
  nested = optax.MultiSteps(
    optax.chain(optax.masked(make(), lambda p: True), optax.clip(1.0)), 1
  )
  state = nested.init(jnp.ones(1))
  with pytest.raises(ValueError, match='last transform'):
    optax_zoo.eval_params(state, jnp.ones(1))


def test_lookahead_last_in_the_chain_is_accepted():
  tx = optax.chain(
    optax.clip(1.0),
    optax_zoo.lookahead(optax.chain(optax.scale_by_adam(), optax.scale(-0.1))),
  )
  seen, state = _run(tx, steps=9)
  got = optax_zoo.eval_params(state, jnp.asarray(seen[-1], jnp.float32))
  # Synchronized at step 6, the slow weights are the fast weights there.
  np.testing.assert_allclose(got, seen[5], rtol=1e-6)
