"""FreeTickets and Sup-tickets against NumPy transcriptions of their code."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from optax_zoo import sparsity as sp


def _np_truncate(mask, weight, grad, rate, *, zero_dropped):
  """One layer of the references' ``Masking.truncate_weights(rate)``.

  ``magnitude_death``: ``num_remove = ceil(rate * n_active)``; the
  threshold is the ``num_zeros + num_remove``-th smallest ``|w|`` and
  every weight at or below it dies. ``gradient_growth``: the
  ``removed`` entries of largest ``|g|`` off the new mask are set.
  FreeTickets calls ``apply_mask`` between the two (``zero_dropped``:
  a dropped weight grown back restarts at 0); Sup-tickets does not.
  Returns the new mask and the weights after the final ``apply_mask``.
  """
  m = np.asarray(mask).ravel().astype(bool)
  w = np.asarray(weight, np.float32).ravel().copy()
  n_active = int(m.sum())
  num_remove = math.ceil(rate * n_active)
  k = (m.size - n_active) + num_remove
  threshold = np.sort(np.abs(w))[k - 1]
  new = np.abs(w) > threshold
  removed = n_active - int(new.sum())
  if zero_dropped:
    w = w * new
  score = np.abs(np.asarray(grad, np.float32).ravel()) * ~new
  new[np.argsort(-score, kind='stable')[:removed]] = True
  shape = np.shape(mask)
  return new.reshape(shape), (w * new).reshape(shape)


def _np_prune_global(leaves, keep):
  """Sup-tickets' pruning: ``torch.topk`` over the concatenated masked
  layers, every weight ``>=`` the ``keep``-th largest magnitude stays."""
  scores = np.concatenate([np.abs(x).ravel() for x in leaves])
  threshold = np.sort(scores)[::-1][keep - 1]
  return [
    np.where(np.abs(x) >= threshold, x, 0).astype(x.dtype) for x in leaves
  ]


def _layer_masks(rng, shapes, counts):
  masks = []
  for shape, n in zip(shapes, counts, strict=True):
    flat = np.zeros(math.prod(shape), bool)
    flat[rng.permutation(flat.size)[:n]] = True
    masks.append(flat.reshape(shape))
  return masks


def _distinct(rng, shape, spacing=0.05):
  """Values whose magnitudes are ``spacing`` apart (the 1e-5 tie-breaking
  noise cannot reorder them), with random signs."""
  n = math.prod(shape)
  mags = spacing * (1 + rng.permutation(n))
  return (mags * rng.choice([-1.0, 1.0], n)).reshape(shape).astype(np.float32)


def _reexplore_case(seed):
  rng = np.random.default_rng(seed)
  shapes, counts = [(4, 5), (5, 2)], [10, 5]
  masks = _layer_masks(rng, shapes, counts)
  weights = [_distinct(rng, s) * m for s, m in zip(shapes, masks, strict=True)]
  grads = [_distinct(rng, s, 0.01) for s in shapes]
  # A just-dropped weight (the weakest active one) gets the largest
  # gradient: it is grown back, where the two references differ.
  for w, g, m in zip(weights, grads, masks, strict=True):
    active = np.flatnonzero(m)
    weakest = active[np.argmin(np.abs(w.ravel()[active]))]
    g.ravel()[weakest] = 10.0
  return masks, weights, grads


@pytest.mark.parametrize('seed', range(3))
def test_free_tickets_reexploration_matches_the_reference(seed):
  masks, weights, grads = _reexplore_case(seed)
  lr, q = 0.1, 0.8
  tx = sp.free_tickets(
    optax.sgd(lr),
    sparsity=0.5,
    total_steps=20,
    num_tickets=2,
    exploration_steps=10,
    update_every=1000,
    large_drop_fraction=q,
    distribution='uniform',
  )
  params = {'a': jnp.asarray(weights[0]), 'b': jnp.asarray(weights[1])}
  state = tx.init(params)
  # Windows [10, 15) and [15, 20): the re-exploration is step 15.
  sparse_state = state.sparse_state._replace(
    count=jnp.int32(15), masks={'a': masks[0], 'b': masks[1]}
  )
  state = state._replace(count=jnp.int32(15), sparse_state=sparse_state)
  g = {'a': jnp.asarray(grads[0]), 'b': jnp.asarray(grads[1])}
  updates, new_state = jax.jit(tx.update)(g, state, params)
  new = optax.apply_updates(params, updates)
  differs = 0
  for name, m, w, gr in zip('ab', masks, weights, grads, strict=True):
    stepped = (w - np.float32(lr) * gr) * m  # optimizer.step, apply_mask
    want_mask, want_sup = _np_truncate(m, stepped, gr, q, zero_dropped=False)
    _, want_free = _np_truncate(m, stepped, gr, q, zero_dropped=True)
    np.testing.assert_array_equal(new_state.sparse_state.masks[name], want_mask)
    assert int(want_mask.sum()) == int(m.sum())
    np.testing.assert_allclose(new[name], want_sup, rtol=1e-6, atol=0)
    # The FreeTickets reference zeroes a dropped weight it grows back.
    regrown = (want_sup != want_free).ravel()
    assert np.all(want_free.ravel()[regrown] == 0)
    differs += int(regrown.sum())
  assert differs >= 2
  # The re-exploration step stores the weights it was handed: ticket 0.
  assert int(new_state.n_stored) == 1
  np.testing.assert_array_equal(new_state.tickets['a'][0], params['a'])


def _random_grads(params, i):
  keys = jax.random.split(jax.random.key(1000 + i), len(params))
  return {
    k: jax.random.normal(key, jnp.shape(p))
    for key, (k, p) in zip(keys, sorted(params.items()), strict=True)
  }


def _params():
  rng = np.random.default_rng(7)
  return {
    'a': jnp.asarray(rng.normal(size=(6, 10)), jnp.float32),
    'b': jnp.asarray(rng.normal(size=(10, 3)), jnp.float32),
    'bias': jnp.asarray(rng.normal(size=3), jnp.float32),
  }


def _train(tx, steps, params=None):
  """``(handed, states)``: the params handed to each update (and the
  final ones), and the state after each update."""
  params = _params() if params is None else params
  state = tx.init(params)
  step = jax.jit(tx.update)
  handed, states = [], []
  for i in range(steps):
    handed.append(params)
    updates, state = step(_random_grads(params, i), state, params)
    params = optax.apply_updates(params, updates)
    states.append(state)
  handed.append(params)
  return handed, states


def test_free_tickets_stores_one_ticket_per_window_and_reexplores_there():
  q, total, explore = 0.8, 40, 10
  tx = sp.free_tickets(
    optax.sgd(0.05, momentum=0.9),
    sparsity=0.6,
    total_steps=total,
    num_tickets=3,
    exploration_steps=explore,
    update_every=7,
    drop_fraction=0.25,
    large_drop_fraction=q,
    key=3,
  )
  handed, states = _train(tx, total)
  starts = [10, 20, 30, 40]
  masks0 = tx.init(_params()).sparse_state.masks
  masks = [masks0] + [s.sparse_state.masks for s in states]
  for t in range(total):
    before, after = np.asarray(masks[t]['a']), np.asarray(masks[t + 1]['a'])
    changed = int((before & ~after).sum())  # dropped and not regrown
    n = int(before.sum())
    if t in starts[1:3]:
      assert changed > 0.5 * n  # most of q = 0.8 moves
    elif (t + 1) % 7 == 0:
      assert changed <= math.floor(0.25 * n)
    else:
      assert changed == 0
  final = states[-1]
  assert int(final.n_stored) == 2
  members, valid = sp.free_tickets_members(final, handed[-1])
  assert np.all(np.asarray(valid))
  for m, t in enumerate((20, 30, 40)):
    for name in ('a', 'b', 'bias'):
      np.testing.assert_array_equal(members[name][m], handed[t][name])
  # Different subnetworks, each at the target's per-layer counts.
  supports = [np.asarray(members['a'][m] != 0) for m in range(3)]
  assert (supports[0] != supports[2]).sum() > 0.5 * supports[0].sum()
  want = sp.sparsity_distribution([(6, 10), (10, 3)], 0.6, 'erk')
  assert int(masks[-1]['a'].sum()) == round(want[0] * 60)


def test_free_tickets_members_before_the_end_mark_the_future_invalid():
  tx = sp.free_tickets(
    optax.sgd(0.1), sparsity=0.5, total_steps=30, num_tickets=3
  )
  handed, states = _train(tx, 15)  # windows [10, 16), [16, 23), [23, 30)
  members, valid = sp.free_tickets_members(states[-1], handed[-1])
  np.testing.assert_array_equal(valid, [True, False, False])
  np.testing.assert_array_equal(members['a'][0], handed[-1]['a'])
  with pytest.raises(ValueError, match='FreeTicketsState'):
    sp.free_tickets_members(optax.sgd(0.1).init(_params()), _params())


def _mlp(params, x):
  h = jnp.tanh(x @ params['w1'] + params['b1'])
  return h @ params['w2']


def test_ensemble_predict_averages_softmax_exactly():
  rng = np.random.default_rng(0)
  members = {
    'w1': jnp.asarray(rng.normal(size=(4, 5, 8)), jnp.float32),
    'b1': jnp.asarray(rng.normal(size=(4, 8)), jnp.float32),
    'w2': jnp.asarray(3 * rng.normal(size=(4, 8, 3)), jnp.float32),
  }
  x = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
  got = sp.ensemble_predict(_mlp, members, x)
  probs = [
    jax.nn.softmax(_mlp(jax.tree.map(lambda a, i=i: a[i], members), x))
    for i in range(4)
  ]
  np.testing.assert_allclose(got, np.mean(probs, axis=0), rtol=1e-6)
  np.testing.assert_allclose(np.sum(got, -1), 1.0, rtol=1e-6)
  # Not the softmax of the mean logits.
  logits = np.mean(
    [_mlp(jax.tree.map(lambda a, i=i: a[i], members), x) for i in range(4)],
    axis=0,
  )
  assert not np.allclose(got, jax.nn.softmax(logits), atol=1e-3)
  valid = jnp.array([True, False, True, False])
  np.testing.assert_allclose(
    jax.jit(lambda m, v: sp.ensemble_predict(_mlp, m, x, valid=v))(
      members, valid
    ),
    (probs[0] + probs[2]) / 2,
    rtol=1e-6,
  )
  with pytest.raises(ValueError, match='apply_fn'):
    sp.ensemble_predict(None, members, x)


def _sup(total=40, cycle=6, cycles=3, **kwargs):
  kw = dict(
    sparsity=0.5,
    total_steps=total,
    cycle_steps=cycle,
    num_cycles=cycles,
    update_every=5,
    distribution='uniform',
    key=1,
  )
  return sp.sup_tickets(optax.sgd(0.05, momentum=0.9), **{**kw, **kwargs})


@pytest.mark.parametrize('factor', [None, 0.3])
def test_sup_tickets_superposition_matches_the_reference(factor):
  total, cycle, cycles = 40, 6, 3
  pretrain = total - cycle * cycles  # 22
  tx = _sup(total, cycle, cycles, superposition_factor=factor)
  handed, states = _train(tx, total)
  budget = int(states[0].budget)
  assert budget == 30 + 15  # uniform 0.5 of 60 + 30 masked weights
  names = ('a', 'b')
  sup = {k: np.asarray(handed[pretrain][k]) for k in ('a', 'b', 'bias')}
  for c in range(1, cycles + 1):
    lam = 1 / (c + 1) if factor is None else factor
    ticket = handed[pretrain + c * cycle]
    mixed = {
      k: (np.float32(1 - lam) * sup[k] + np.float32(lam) * np.asarray(v))
      for k, v in ticket.items()
    }
    pruned = _np_prune_global([mixed[k] for k in names], budget)
    sup = {**mixed, **dict(zip(names, pruned, strict=True))}
    if c < cycles:  # stored by the update that was handed the ticket
      got = states[pretrain + c * cycle].superposed
      for k in sup:
        np.testing.assert_allclose(got[k], sup[k], rtol=1e-5, atol=1e-7)
  final = optax_zoo.eval_params(states[-1], handed[-1])
  assert bool(states[-1].pending)
  for k in sup:
    np.testing.assert_allclose(final[k], sup[k], rtol=1e-5, atol=1e-7)
  # The superposed ticket holds exactly the target's number of weights
  # (global: its per-layer counts are the ranking's).
  assert sum(int((final[k] != 0).sum()) for k in names) == budget
  assert not np.array_equal(final['a'], handed[-1]['a'])


def test_sup_tickets_reexplores_at_each_cycle_start_only():
  total, cycle, cycles = 40, 6, 3
  pretrain = total - cycle * cycles
  tx = _sup(total, cycle, cycles, large_drop_fraction=0.5)
  handed, states = _train(tx, total)
  masks = [tx.init(_params()).sparse_state.masks] + [
    s.sparse_state.masks for s in states
  ]
  for t in range(total):
    moved = bool(np.any(np.asarray(masks[t]['a']) != masks[t + 1]['a']))
    if t >= pretrain:
      assert moved == ((t - pretrain) % cycle == 0), t
    elif (t + 1) % 5 != 0:
      assert not moved, t
  # eval_params: the trained params until the first cycle ends, then the
  # superposition stored last.
  for t in (3, pretrain + 2):
    evaluated = optax_zoo.eval_params(states[t - 1], handed[t])
    np.testing.assert_array_equal(evaluated['a'], handed[t]['a'])
  t = pretrain + cycle + 2
  evaluated = optax_zoo.eval_params(states[t - 1], handed[t])
  np.testing.assert_array_equal(evaluated['a'], states[t - 1].superposed['a'])
  assert [int(states[t].n_superposed) for t in (pretrain - 1, pretrain)] == [
    0,
    1,
  ]


def test_reexploration_zeroes_the_momentum_of_grown_weights():
  tx = sp.free_tickets(
    optax.sgd(0.1, momentum=0.9),
    sparsity=0.5,
    total_steps=20,
    num_tickets=2,
    exploration_steps=10,
    update_every=1000,
    distribution='uniform',
  )
  params = _params()
  state = tx.init(params)
  params = sp.apply_masks(params, state.sparse_state.masks)
  trace = jax.tree.map(lambda p: jnp.full(p.shape, 0.5), params)
  sparse_state = state.sparse_state._replace(
    count=jnp.int32(15),
    inner_state=(optax.TraceState(trace=trace), optax.EmptyState()),
  )
  state = state._replace(count=jnp.int32(15), sparse_state=sparse_state)
  grads = _random_grads(params, 0)
  _, new_state = tx.update(grads, state, params)
  old_mask = np.asarray(state.sparse_state.masks['a'])
  new_mask = np.asarray(new_state.sparse_state.masks['a'])
  grown = new_mask & ~old_mask
  assert grown.sum() > 0
  new_trace = np.asarray(new_state.sparse_state.inner_state[0].trace['a'])
  np.testing.assert_array_equal(new_trace[grown], 0.0)
  # Elsewhere the inner step ran: 0.9 * 0.5 + the masked gradient.
  keep = ~grown
  want = 0.45 + np.asarray(grads['a']) * old_mask
  np.testing.assert_allclose(new_trace[keep], want[keep], rtol=1e-6)


def test_free_tickets_schedule_matches_the_reference_milestones():
  # main_EDST.py: epochs 450, exploration 150, 3 models -> lr 0.1 up to
  # epoch 150, then per window of 100 epochs 0.01 for 50 and 0.001.
  lr = sp.free_tickets_schedule(
    0.1, total_steps=450, num_tickets=3, exploration_steps=150
  )
  got = np.asarray(jax.vmap(lr)(jnp.arange(450)))
  want = np.empty(450)
  for epoch in range(450):
    if epoch < 150:
      want[epoch] = 0.1
    else:
      want[epoch] = 0.01 if (epoch - 150) % 100 < 50 else 0.001
  np.testing.assert_allclose(got, want, rtol=1e-6)


def _reference_cyclic(epoch, cycle, a1, a2, it):
  t = ((epoch % cycle) + it) / cycle
  if t < 0.5:
    return a1 * (1.0 - 2.0 * t) + a2 * 2.0 * t
  return a1 * (2.0 * t - 1.0) + a2 * (2.0 - 2.0 * t)


def test_sup_tickets_schedule_matches_the_reference():
  # 250 "epochs" of one step, cycle 8, 3 cycles: pre-training 226 epochs
  # with MultiStepLR at 113 and 169; cycles with iter fraction 0.
  lr = sp.sup_tickets_schedule(
    0.1, total_steps=250, cycle_steps=8, num_cycles=3
  )
  got = np.asarray(jax.vmap(lr)(jnp.arange(250)))
  want = [0.1 * 0.1 ** ((e >= 113) + (e >= 169)) for e in range(226)]
  want += [_reference_cyclic(e, 8, 0.001, 0.005, 0.0) for e in range(24)]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Within an epoch of 4 steps the reference moves by iter fractions.
  lr = sp.sup_tickets_schedule(
    1.0,
    total_steps=40,
    cycle_steps=8,
    num_cycles=1,
    cycle_end_value=0.05,
    cycle_mid_value=0.0001,
  )
  steps = [float(lr(32 + s)) for s in range(8)]
  want = [_reference_cyclic(0, 1, 0.05, 0.0001, s / 8) for s in range(8)]
  np.testing.assert_allclose(steps, want, rtol=1e-5)


def test_eval_params_through_chain_inject_and_jit():
  kwargs = dict(sparsity=0.5, total_steps=20, cycle_steps=4, num_cycles=2)
  plain = sp.sup_tickets(optax.sgd(0.05), update_every=5, **kwargs)
  chained = optax.chain(optax.clip_by_global_norm(1e6), plain)
  injected = optax.inject_hyperparams(
    sp.sup_tickets,
    static_args=(
      'sparsity',
      'total_steps',
      'cycle_steps',
      'num_cycles',
      'update_every',
    ),
  )(inner=optax.sgd(0.05), update_every=5, large_drop_fraction=0.5, **kwargs)
  results = []
  for tx in (plain, chained, injected):
    handed, states = _train(tx, 20)
    results.append(jax.jit(optax_zoo.eval_params)(states[-1], handed[-1]))
  for got in results[1:]:
    for k in got:
      np.testing.assert_allclose(got[k], results[0][k], rtol=1e-6)
  assert not np.array_equal(results[0]['a'], _train(plain, 20)[0][-1]['a'])


def test_training_loop_evaluates_the_superposed_ticket():
  from flax import nnx

  from optax_zoo import training

  data = training.digits()
  tx = sp.sup_tickets(
    optax.sgd(0.1, momentum=0.9),
    sparsity=0.5,
    total_steps=24,
    cycle_steps=4,
    num_cycles=2,
    update_every=5,
  )
  model = training.MLP(64, (16,), rngs=nnx.Rngs(0))
  result = training.train(model, tx, data, steps=24, eval_every=[])
  want = optax_zoo.eval_params(result.opt_state, result.params)
  for got, ref in zip(
    jax.tree.leaves(result.eval_params), jax.tree.leaves(want), strict=True
  ):
    np.testing.assert_array_equal(got, ref)
  trained = jax.tree.leaves(result.params)
  assert any(
    not np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(result.eval_params), trained, strict=True)
  )
  kernels = [x for x in jax.tree.leaves(result.eval_params) if x.ndim == 2]
  budget = int(result.opt_state.budget)
  assert sum(int((k != 0).sum()) for k in kernels) == budget


_GOOD_FREE = dict(inner=optax.sgd(0.1), sparsity=0.5, total_steps=30)
_GOOD_SUP = dict(_GOOD_FREE, cycle_steps=4)
_BAD_SHARED = [
  ({'sparsity': 1.0}, 'sparsity'),
  ({'distribution': 'er'}, 'distribution'),
  ({'update_every': 0}, 'update_every'),
  ({'drop_fraction': 1.5}, 'drop_fraction'),
  ({'drop_fraction_schedule': 'linear'}, 'drop_fraction_schedule'),
  ({'large_drop_fraction': -0.1}, 'large_drop_fraction'),
  ({'growth': 'momentum'}, 'growth'),
  ({'total_steps': 0}, 'total_steps'),
  ({'inner': 'sgd'}, 'inner'),
  ({'key': True}, 'key'),
]


@pytest.mark.parametrize(
  'bad, name',
  [
    *_BAD_SHARED,
    ({'num_tickets': 0}, 'num_tickets'),
    ({'num_tickets': 31}, 'num_tickets'),
    ({'exploration_steps': 28}, 'exploration_steps'),
    ({'exploration_steps': -1}, 'exploration_steps'),
  ],
)
def test_free_tickets_bad_arguments_raise(bad, name):
  with pytest.raises(ValueError, match=name):
    sp.free_tickets(**{**_GOOD_FREE, **bad})


@pytest.mark.parametrize(
  'bad, name',
  [
    *_BAD_SHARED,
    ({'cycle_steps': 0}, 'cycle_steps'),
    ({'cycle_steps': 30}, 'cycle_steps'),
    ({'num_cycles': 0}, 'num_cycles'),
    ({'num_cycles': 8}, 'num_cycles'),
    ({'superposition_factor': 0.0}, 'superposition_factor'),
    ({'superposition_factor': 1.5}, 'superposition_factor'),
  ],
)
def test_sup_tickets_bad_arguments_raise(bad, name):
  with pytest.raises(ValueError, match=name):
    sp.sup_tickets(**{**_GOOD_SUP, **bad})


def test_schedules_and_updates_reject_bad_input():
  with pytest.raises(ValueError, match='ticket_values'):
    sp.free_tickets_schedule(0.1, total_steps=30, ticket_values=(0.1,))
  with pytest.raises(ValueError, match='init_value'):
    sp.free_tickets_schedule(-0.1, total_steps=30)
  with pytest.raises(ValueError, match='num_cycles'):
    sp.sup_tickets_schedule(0.1, total_steps=30, cycle_steps=10, num_cycles=3)
  with pytest.raises(ValueError, match='cycle_mid_value'):
    sp.sup_tickets_schedule(
      0.1, total_steps=30, cycle_steps=4, cycle_mid_value=0.0
    )
  for tx in (sp.free_tickets(**_GOOD_FREE), sp.sup_tickets(**_GOOD_SUP)):
    with pytest.raises(ValueError, match='params'):
      tx.update(_params(), tx.init(_params()))
