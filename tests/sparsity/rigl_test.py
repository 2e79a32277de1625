"""RigL, SET and static sparse training against a NumPy transcription."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from optax_zoo import sparsity as sp


def _np_drop_grow(mask, weight, grow_score, fraction, noise):
  """The RigL / SET mask update, transcribed from the algorithm.

  Keep the ``n - k`` active weights of largest ``|w| + noise``; grow the
  ``k`` non-kept entries of largest ``grow_score``; ``k = floor(f n)``
  (float32). Ties: the lower flat index first.
  """
  m = np.asarray(mask).ravel()
  active = [int(i) for i in np.flatnonzero(m)]
  k = int(np.float32(len(active)) * np.float32(fraction))
  drop = np.abs(np.asarray(weight, np.float32).ravel()) + np.asarray(noise)
  by_drop = sorted(active, key=lambda i: (-drop[i], i))
  kept = set(by_drop[: len(active) - k])
  score = np.asarray(grow_score, np.float32).ravel()
  rest = [i for i in range(m.size) if i not in kept]
  grown = set(sorted(rest, key=lambda i: (-score[i], i))[:k])
  new = np.zeros(m.size, bool)
  new[sorted(kept | grown)] = True
  new_conn = np.zeros(m.size, bool)
  new_conn[sorted(grown - set(active))] = True
  return new.reshape(np.shape(mask)), new_conn.reshape(np.shape(mask))


def test_top_k_selects_as_a_stable_sort_with_nans_signed_zeros_and_infs():
  from optax_zoo.sparsity import _rigl

  rng = np.random.default_rng(0)
  special = [np.nan, -0.0, 0.0, np.inf, -np.inf, -1e-30, 1e-30, -2.5, 2.5]
  score = np.concatenate(
    [rng.choice(special, 40), np.round(rng.normal(size=40), 1)]
  ).astype(np.float32)
  rng.shuffle(score)
  eligible = rng.random(score.size) < 0.7
  # The order the reference's top_k gives: larger first (NaN lowest, -0.0
  # equal to 0.0), then the lower index.
  ranked = np.where(np.isnan(score), -np.inf, score)
  order = sorted(
    np.flatnonzero(eligible), key=lambda i: (-ranked[i], np.isnan(score[i]), i)
  )
  top_k = jax.jit(_rigl._top_k)
  for k in range(int(eligible.sum()) + 1):
    want = np.zeros(score.size, bool)
    want[order[:k]] = True
    got = top_k(jnp.asarray(score), jnp.asarray(eligible), k)
    np.testing.assert_array_equal(got, want, err_msg=f'k={k}')


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('fraction', [0.0, 0.3, 0.5, 1.0])
def test_drop_and_grow_matches_numpy(seed, fraction):
  rng = np.random.default_rng(seed)
  mask = rng.random((6, 7)) < 0.4
  weight = rng.normal(size=(6, 7)) * mask
  # Gradient magnitudes on a coarse grid: many ties.
  score = np.round(np.abs(rng.normal(size=(6, 7))), 1)
  key = jax.random.key(seed)
  noise = 1e-5 * np.asarray(jax.random.normal(key, (42,), jnp.float32))
  new, grown = sp.drop_and_grow(
    jnp.asarray(mask),
    jnp.asarray(weight, jnp.float32),
    jnp.asarray(score, jnp.float32),
    fraction,
    key,
  )
  want_new, want_grown = _np_drop_grow(mask, weight, score, fraction, noise)
  np.testing.assert_array_equal(new, want_new)
  np.testing.assert_array_equal(grown, want_grown)
  assert int(new.sum()) == int(mask.sum())


def test_drop_fraction_cosine_schedule():
  t = np.arange(0, 120, 7)
  want = 0.3 / 2 * (1 + np.cos(np.pi * np.minimum(t, 75.0) / 75.0))
  got = sp.drop_fraction_at(t, 0.3, 75.0, 'cosine')
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert float(sp.drop_fraction_at(50, 0.3, 75.0, 'constant')) == (
    pytest.approx(0.3)
  )


def _params():
  return {
    'w': jnp.linspace(-1.0, 1.0, 24).reshape(4, 6),
    'b': jnp.linspace(0.1, 0.6, 6),
  }


def _grads(i):
  k1, k2 = jax.random.split(jax.random.key(100 + i))
  return {'w': jax.random.normal(k1, (4, 6)), 'b': jax.random.normal(k2, (6,))}


def test_one_rigl_update_matches_numpy():
  tx = sp.rigl(
    optax.sgd(0.1, momentum=0.9),
    sparsity=0.5,
    total_steps=100,
    update_every=2,
    distribution='uniform',
    drop_fraction=0.5,
    drop_fraction_schedule='constant',
    key=3,
  )
  rng = np.random.default_rng(0)
  mask = np.zeros(24, bool)
  mask[rng.permutation(24)[:12]] = True
  mask = mask.reshape(4, 6)
  # Magnitudes 0.05 apart: the 1e-5 noise cannot reorder them.
  w = (0.05 * (1 + rng.permutation(24)) * rng.choice([-1, 1], 24)).reshape(4, 6)
  params = {'w': jnp.asarray(w * mask, jnp.float32), 'b': _params()['b']}
  trace = {
    'w': jnp.asarray(rng.normal(size=(4, 6)), jnp.float32),
    'b': jnp.asarray(rng.normal(size=6), jnp.float32),
  }
  state = tx.init(params)
  state = state._replace(
    count=jnp.int32(2),
    masks={'w': jnp.asarray(mask), 'b': state.masks['b']},
    inner_state=(optax.TraceState(trace=trace), optax.EmptyState()),
  )
  grads = {
    'w': jnp.asarray(rng.normal(size=(4, 6)), jnp.float32),
    'b': jnp.asarray(rng.normal(size=6), jnp.float32),
  }
  updates, new_state = jax.jit(tx.update)(grads, state, params)
  new_params = optax.apply_updates(params, updates)

  want_mask, want_new = _np_drop_grow(
    mask, params['w'], np.abs(grads['w']), 0.5, np.zeros(24)
  )
  np.testing.assert_array_equal(new_state.masks['w'], want_mask)
  assert want_new.sum() > 0
  # Kept and regrown weights keep their values, grown start at 0, the rest
  # is exactly 0; the inner step is skipped (dense 'b' does not move).
  want_w = np.where(want_mask & ~want_new, np.asarray(params['w']), 0.0)
  np.testing.assert_array_equal(new_params['w'], want_w.astype(np.float32))
  np.testing.assert_array_equal(new_params['b'], params['b'])
  # Momentum zeroed exactly where connections are new.
  want_trace = np.where(want_new, 0.0, np.asarray(trace['w']))
  new_trace = new_state.inner_state[0].trace
  np.testing.assert_array_equal(new_trace['w'], want_trace.astype(np.float32))
  np.testing.assert_array_equal(new_trace['b'], trace['b'])
  assert int(new_state.count) == 3


def test_a_dropped_weight_that_regrows_keeps_its_value_and_momentum():
  tx = sp.rigl(
    optax.sgd(0.1, momentum=0.9),
    sparsity=0.5,
    total_steps=100,
    update_every=1,
    distribution='uniform',
    drop_fraction=0.5,
    drop_fraction_schedule='constant',
  )
  mask = jnp.array([[True, True, True, True, False, False, False, False]])
  w = jnp.array([[0.01, 0.5, 0.6, 0.7, 0.0, 0.0, 0.0, 0.0]])
  # The weakest weight (index 0) has the largest gradient: it is dropped
  # and grown back; the second grown connection is index 4.
  g = jnp.array([[9.0, 0.0, 0.0, 0.0, 5.0, 1.0, 0.5, 0.0]])
  params = {'w': w}
  state = tx.init(params)
  trace = {'w': jnp.full((1, 8), 2.0)}
  state = state._replace(
    masks={'w': mask},
    inner_state=(optax.TraceState(trace=trace), optax.EmptyState()),
  )
  updates, state = tx.update({'w': g}, state, params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(
    state.masks['w'], [[True, False, True, True, True, False, False, False]]
  )
  np.testing.assert_array_equal(
    new['w'], np.float32([[0.01, 0.0, 0.6, 0.7, 0.0, 0.0, 0.0, 0.0]])
  )
  np.testing.assert_array_equal(
    state.inner_state[0].trace['w'], [[2, 2, 2, 2, 0, 2, 2, 2]]
  )


_INNERS = {
  'adam': lambda: optax.adam(0.01),
  'sgd_momentum': lambda: optax.sgd(0.01, momentum=0.9),
  'inject_adam': lambda: optax.inject_hyperparams(optax.adam)(
    learning_rate=0.01
  ),
  'optax_zoo_adan': lambda: optax_zoo.adan(0.01),
  'optax_zoo_adamw': lambda: optax_zoo.adamw(0.01, weight_decay=0.1),
}


@pytest.mark.parametrize('inner', list(_INNERS))
def test_update_step_skips_inner_and_zeroes_moments_of_grown(inner):
  tx = sp.rigl(
    _INNERS[inner](),
    sparsity=0.5,
    total_steps=100,
    update_every=10,
    distribution='uniform',
  )
  params = _params()
  state = tx.init(params)
  params = sp.apply_masks(params, state.masks)
  # Moments that are nonzero everywhere, so zeroing shows.
  shapes = {p.shape for p in jax.tree.leaves(params)}
  filled = jax.tree.map(
    lambda x: (
      x + 0.5
      if jnp.issubdtype(x.dtype, jnp.floating) and x.shape in shapes
      else x
    ),
    state.inner_state,
  )
  state = state._replace(inner_state=filled)
  updates, new_state = jax.jit(tx.update)(_grads(0), state, params)
  new_mask, old_mask = new_state.masks['w'], state.masks['w']
  grown = np.asarray(new_mask & ~old_mask)
  assert grown.sum() > 0
  assert int(new_mask.sum()) == int(old_mask.sum()) == 12
  # No inner step: kept weights, dense leaves and counts do not move.
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new['b'], params['b'])
  np.testing.assert_array_equal(new['w'], np.where(new_mask, params['w'], 0.0))
  old_leaves = jax.tree.leaves(filled)
  new_leaves = jax.tree.leaves(new_state.inner_state)
  checked = 0
  for old, got in zip(old_leaves, new_leaves, strict=True):
    if old.shape == (4, 6) and jnp.issubdtype(old.dtype, jnp.floating):
      np.testing.assert_array_equal(got, np.where(grown, 0.0, old))
      checked += 1
    else:
      np.testing.assert_array_equal(got, old)
  assert checked >= 1
  # The next step is an inner step: it moves the active weights.
  updates, _ = jax.jit(tx.update)(_grads(1), new_state, new)
  assert np.any(np.asarray(updates['w'])[np.asarray(new_mask)] != 0)


def _train(tx, steps, params=None):
  params = _params() if params is None else params
  state = tx.init(params)
  step = jax.jit(tx.update)
  history = []
  for i in range(steps):
    keys = jax.random.split(jax.random.key(i), len(jax.tree.leaves(params)))
    grads = jax.tree.unflatten(
      jax.tree.structure(params),
      [
        jax.random.normal(k, jnp.shape(p))
        for k, p in zip(keys, jax.tree.leaves(params), strict=True)
      ],
    )
    updates, state = step(grads, state, params)
    params = optax.apply_updates(params, updates)
    history.append((params, state))
  return history


@pytest.mark.parametrize('method', ['rigl', 'set_sparse'])
def test_densities_hold_and_params_stay_zero_off_mask_under_jit(method):
  kwargs = dict(sparsity=0.6, total_steps=40, update_every=4, key=1)
  params = {
    'a': jnp.linspace(-1.0, 1.0, 60).reshape(6, 10),
    'b': jnp.linspace(-1.0, 2.0, 30).reshape(10, 3),
    'bias': jnp.ones(3),
  }
  tx = getattr(sp, method)(optax.adam(0.05), **kwargs)
  want = sp.sparsity_distribution([(6, 10), (10, 3)], 0.6, 'erk')
  counts = [round(d * n) for d, n in zip(want, (60, 30), strict=True)]
  history = _train(tx, 40, params)
  changes = 0
  prev = tx.init(params).masks
  for p, state in history:
    masks = state.masks
    assert [int(masks['a'].sum()), int(masks['b'].sum())] == counts
    assert bool(masks['bias'].all())
    for name in ('a', 'b'):
      off = np.asarray(p[name])[~np.asarray(masks[name])]
      np.testing.assert_array_equal(off, 0.0)
    changes += int(np.any(np.asarray(masks['a']) != np.asarray(prev['a'])))
    prev = masks
  # Mask updates at steps 0, 4, ..., 28 (< 0.75 * 40); the last ones drop
  # few weights, but the mask must have moved several times.
  assert changes >= 3
  final = history[-1][1].masks
  for _, state in history[30:]:
    np.testing.assert_array_equal(state.masks['a'], final['a'])


def test_rigl_grows_where_the_gradient_is_large_and_set_does_not():
  kwargs = dict(
    sparsity=0.75,
    total_steps=100,
    update_every=10,
    distribution='uniform',
    drop_fraction=0.5,
    drop_fraction_schedule='constant',
    key=0,
  )
  params = {'w': jnp.linspace(0.1, 1.0, 400).reshape(20, 20)}
  grads = {'w': jnp.zeros((20, 20)).at[:, :5].set(1.0)}
  picks = {}
  for name in ('rigl', 'set_sparse'):
    tx = getattr(sp, name)(optax.sgd(0.1), **kwargs)
    state = tx.init(params)
    _, new = tx.update(grads, state, sp.apply_masks(params, state.masks))
    grown = np.asarray(new.masks['w'] & ~state.masks['w'])
    picks[name] = grown[:, :5].sum() / grown.sum()
  assert picks['rigl'] == 1.0
  assert picks['set_sparse'] < 0.6


def test_set_steps_on_a_mask_update_then_drops_from_the_new_weights():
  # The authors' SET applies the inner step first and updates the mask
  # from the stepped weights; growth is random, so only the kept set and
  # the weights are predictable.
  tx = sp.set_sparse(
    optax.sgd(0.1),
    sparsity=0.5,
    total_steps=100,
    update_every=10,
    distribution='uniform',
    drop_fraction=0.5,
    drop_fraction_schedule='constant',
  )
  rng = np.random.default_rng(1)
  params = {
    'w': jnp.asarray(
      (0.05 * (1 + rng.permutation(24))).reshape(4, 6), jnp.float32
    )
  }
  state = tx.init(params)
  mask = np.asarray(state.masks['w'])
  params = sp.apply_masks(params, state.masks)
  grads = {'w': jnp.asarray(rng.choice([-0.1, 0.1], (4, 6)), jnp.float32)}
  updates, new_state = tx.update(grads, state, params)
  new = np.asarray(optax.apply_updates(params, updates)['w'])
  stepped = (
    np.asarray(params['w']) - np.float32(0.1) * np.asarray(grads['w']) * mask
  )
  active = np.flatnonzero(mask)
  kept = np.zeros(24, bool)
  kept[sorted(active, key=lambda i: -abs(stepped.ravel()[i]))[:6]] = True
  kept = kept.reshape(4, 6)
  new_mask = np.asarray(new_state.masks['w'])
  assert new_mask.sum() == 12 and np.all(new_mask[kept])
  grown = new_mask & ~mask
  want = np.where(new_mask & ~grown, stepped, 0.0).astype(np.float32)
  np.testing.assert_array_equal(new, want)


def test_static_sparse_never_changes_its_mask_and_steps_every_time():
  tx = sp.static_sparse(optax.sgd(0.1), sparsity=0.5, key=2)
  mask0 = tx.init(_params()).masks
  history = _train(tx, 12)
  prev = sp.apply_masks(_params(), mask0)
  for p, state in history:
    np.testing.assert_array_equal(state.masks['w'], mask0['w'])
    moved = np.asarray(p['w'] != prev['w'])
    np.testing.assert_array_equal(moved, np.asarray(mask0['w']))
    prev = p


def test_keep_dense_leaf_stays_dense():
  params = {'first': jnp.ones((4, 6)), 'w': jnp.ones((6, 8))}
  tx = sp.rigl(
    optax.sgd(0.1),
    sparsity=0.3,
    total_steps=20,
    update_every=2,
    keep_dense={'first': True, 'w': False},
  )
  for _, state in _train(tx, 6, params):
    assert bool(state.masks['first'].all())
    assert int(state.masks['w'].sum()) == round(0.7 * 72 - 24)


def test_nan_gradient_on_a_mask_update_is_not_hidden():
  tx = sp.rigl(optax.sgd(0.1), sparsity=0.5, total_steps=10)
  params = _params()
  state = tx.init(params)
  grads = _grads(0)
  grads['w'] = grads['w'].at[0, 0].set(jnp.nan)
  grads['b'] = grads['b'].at[1].set(jnp.nan)
  updates, new = tx.update(grads, state, params)
  assert np.isnan(np.asarray(updates['b'])[1])
  assert int(new.masks['w'].sum()) == int(state.masks['w'].sum())


@pytest.mark.parametrize(
  'bad, name',
  [
    ({'sparsity': 1.0}, 'sparsity'),
    ({'sparsity': -0.01}, 'sparsity'),
    ({'update_every': 0}, 'update_every'),
    ({'drop_fraction': 1.01}, 'drop_fraction'),
    ({'drop_fraction': -0.1}, 'drop_fraction'),
    ({'distribution': 'er'}, 'distribution'),
    ({'drop_fraction_schedule': 'exp'}, 'drop_fraction_schedule'),
    ({'end_fraction': 0.0}, 'end_fraction'),
    ({'end_fraction': 1.5}, 'end_fraction'),
    ({'total_steps': 0}, 'total_steps'),
    ({'inner': 'adam'}, 'inner'),
    ({'key': True}, 'key'),
  ],
)
@pytest.mark.parametrize('method', ['rigl', 'set_sparse'])
def test_bad_arguments_raise(method, bad, name):
  kwargs = {'inner': optax.sgd(0.1), 'sparsity': 0.5, 'total_steps': 10}
  with pytest.raises(ValueError, match=name):
    getattr(sp, method)(**{**kwargs, **bad})


def test_static_sparse_bad_arguments_and_missing_params_raise():
  with pytest.raises(ValueError, match='sparsity'):
    sp.static_sparse(optax.sgd(0.1), sparsity=1.5)
  with pytest.raises(ValueError, match='distribution'):
    sp.static_sparse(optax.sgd(0.1), sparsity=0.5, distribution='x')
  tx = sp.rigl(optax.sgd(0.1), sparsity=0.5, total_steps=10)
  with pytest.raises(ValueError, match='params'):
    tx.update(_grads(0), tx.init(_params()))


def test_works_inside_a_chain_and_under_vmap_over_seeds():
  tx = optax.chain(
    optax.clip_by_global_norm(1.0),
    sp.rigl(optax.adam(0.01), sparsity=0.5, total_steps=20, update_every=3),
  )

  @functools.partial(jax.vmap, in_axes=(0, None))
  def run(seed, steps):
    del seed
    params = _params()
    state = tx.init(params)

    def body(carry, i):
      p, s = carry
      u, s = tx.update(jax.tree.map(lambda x: x * (i + 1), _grads(0)), s, p)
      return (optax.apply_updates(p, u), s), None

    (p, s), _ = jax.lax.scan(body, (params, state), jnp.arange(steps))
    return p, s[1].masks

  p, masks = run(jnp.arange(2), 9)
  off = np.asarray(p['w'])[~np.asarray(masks['w'])]
  np.testing.assert_array_equal(off, 0.0)
  assert np.all(np.asarray(masks['w']).reshape(2, -1).sum(1) == 12)


@pytest.mark.parametrize('method', ['rigl', 'set_sparse'])
def test_a_mask_update_at_step_0_needs_masked_params(method):
  # The gradient at a dense initialization is not the sparse network's: a
  # mask update due at step 0 waits (the step trains without counting)
  # until the parameters handed are zero off the mask.
  tx = getattr(sp, method)(
    optax.sgd(0.1, momentum=0.9),
    sparsity=0.5,
    total_steps=100,
    update_every=10,
    drop_fraction_schedule='constant',
    key=0,
  )
  rng = np.random.default_rng(0)
  params = {'w': jnp.asarray(rng.normal(size=(8, 8)), jnp.float32)}
  grads = {'w': jnp.asarray(rng.normal(size=(8, 8)), jnp.float32)}
  state = tx.init(params)
  updates, dense = jax.jit(tx.update)(grads, state, params)
  np.testing.assert_array_equal(dense.masks['w'], state.masks['w'])
  trace = dense.inner_state[0].trace['w']
  np.testing.assert_allclose(trace, np.where(state.masks['w'], grads['w'], 0))
  assert int(dense.count) == 0
  new = optax.apply_updates(params, updates)
  assert bool(jnp.all(jnp.where(state.masks['w'], True, new['w'] == 0)))
  # The next step sees the masked parameters and makes the update.
  _, updated = jax.jit(tx.update)(grads, dense, new)
  assert bool(jnp.any(updated.masks['w'] != state.masks['w']))
  assert int(updated.count) == 1
  # Masked from the start: the update comes at the first step.
  masked = sp.apply_masks(params, state.masks)
  _, first = jax.jit(tx.update)(grads, state, masked)
  assert bool(jnp.any(first.masks['w'] != state.masks['w']))
  assert int(first.count) == 1
