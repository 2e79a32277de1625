"""Entropy-SGD against a NumPy transcription of ucla-vision/entropy-sgd."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from optax_zoo._src import extra_args
from optax_zoo._src import test_utils as tu
from optax_zoo.sharpness import _entropy_sgd

_DIM, _M = 3, 5  # features, examples per minibatch


def _loss_fn(params, batch):
  """Per-example logistic losses of a linear model (not a quadratic)."""
  x, y = batch
  z = x @ params['w'] + params['b']
  return jnp.logaddexp(0.0, z) - y * z


def _np_grad(params, x, y):
  z = x @ params['w'] + params['b']
  r = 1.0 / (1.0 + np.exp(-z)) - y
  return {'w': x.T @ r / len(y), 'b': np.mean(r)}


def _data(num_steps, batch_size, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(num_steps, batch_size, _DIM)).astype(np.float32)
  y = (rng.uniform(size=(num_steps, batch_size)) < 0.5).astype(np.float32)
  return x, y


def _port_steps(params, batches, draws, cfg, *, seed_momentum):
  """ucla-vision/entropy-sgd ``python/optim.py`` ``EntropySGD.step``.

  A line-by-line NumPy transcription (float64) of one parameter group.
  ``batches[t]`` lists the minibatches the closure returns at outer step
  ``t`` (the first at x, then one per Langevin step); ``draws[t][i]`` is
  the ``eta.normal_()`` of Langevin step ``i``. The port never increments
  ``state['t']``, so ``g = g0``. ``seed_momentum=False`` allocates the outer
  momentum buffer as zeros instead of a copy of the first gradient.
  """
  lr, mom, wd, damp = cfg['lr'], cfg['mom'], cfg['wd'], 0.0
  nesterov, big_l, eps, g0 = True, cfg['L'], cfg['eps'], cfg['g0']
  llr, beta1 = 0.1 if 'llr' not in cfg else cfg['llr'], cfg['beta1']
  w = {k: np.asarray(v, np.float64) for k, v in params.items()}
  state = None
  out = []
  for t, closure_batches in enumerate(batches):
    x0, y0 = closure_batches[0]
    dw_first = _np_grad(w, x0, y0)  # mf, merr = closure()
    if state is None:
      state = {
        'wc': {k: v.copy() for k, v in w.items()},
        'mdw': {
          k: (dw_first[k].copy() if seed_momentum else np.zeros_like(v))
          for k, v in w.items()
        },
      }
    wc = {k: v.copy() for k, v in w.items()}
    mw = {k: v.copy() for k, v in w.items()}
    lmdw = {k: np.zeros_like(v) for k, v in w.items()}
    g = g0 * (1 + 0.0) ** 0
    for i in range(big_l):
      xb, yb = closure_batches[1 + i]
      grads = _np_grad(w, xb, yb)
      for k in w:
        dw = grads[k]
        if wd > 0:
          dw = dw + wd * w[k]
        if mom > 0:
          lmdw[k] = mom * lmdw[k] + (1 - damp) * dw
          dw = dw + mom * lmdw[k] if nesterov else lmdw[k]
        eta = np.asarray(draws[t][i][k], np.float64)
        dw = dw - g * (wc[k] - w[k]) + eps / np.sqrt(0.5 * llr) * eta
        w[k] = w[k] - llr * dw
        mw[k] = beta1 * mw[k] + (1 - beta1) * w[k]
    for k in w:
      w[k] = wc[k].copy()
      dw = w[k] - mw[k]
      if wd > 0:
        dw = dw + wd * w[k]
      if mom > 0:
        state['mdw'][k] = mom * state['mdw'][k] + (1 - damp) * dw
        dw = dw + mom * state['mdw'][k] if nesterov else state['mdw'][k]
      w[k] = w[k] - lr * dw
    out.append({k: v.copy() for k, v in w.items()})
  return out


def _ours(params, x, y, cfg, minibatches=None, key=0):
  """Our steps on the step batches ``(x[t], y[t])``; params and draws."""
  inner = optax.chain(
    optax.add_decayed_weights(cfg['wd']),
    optax_zoo.sgd(
      cfg['lr'], momentum=cfg['mom'] or None, nesterov=cfg['mom'] > 0
    ),
  )
  tx = optax_zoo.entropy_sgd(
    inner,
    langevin_steps=cfg['L'],
    gamma=cfg['g0'],
    scoping=0.0,
    langevin_lr=cfg.get('llr', 0.1),
    noise=cfg['eps'],
    mu_decay=cfg['beta1'],
    langevin_momentum=cfg['mom'],
    langevin_weight_decay=cfg['wd'],
    minibatches=minibatches,
    key=key,
  )

  @jax.jit
  def step(params, state, batch):
    extra = extra_args.supply(['grad_fn'], _loss_fn, params, batch)
    grads = jax.grad(lambda p: _loss_fn(p, batch).mean())(params)
    updates, state = tx.update(grads, state, params, **extra)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  trajectory, draws = [], []
  for t in range(x.shape[0]):
    _, step_key = jax.random.split(jax.random.wrap_key_data(state.rng_key))
    draws.append(
      [
        _entropy_sgd._langevin_noise(step_key, i, params)
        for i in range(cfg['L'])
      ]
    )
    params, state = step(params, state, (x[t], y[t]))
    trajectory.append(params)
  return trajectory, draws


_CFG = {'lr': 0.5, 'L': 4, 'eps': 1e-2, 'g0': 0.03, 'beta1': 0.75}


@pytest.mark.parametrize(
  'mom, wd, minibatches',
  [(0.9, 1e-3, None), (0.0, 0.0, None), (0.9, 1e-3, 2)],
)
def test_matches_numpy_transcription_of_the_port(mom, wd, minibatches):
  cfg = {**_CFG, 'mom': mom, 'wd': wd}
  num_steps, parts = 6, minibatches or cfg['L']
  x, y = _data(num_steps, parts * _M)
  params = {'w': jnp.array([0.3, -0.2, 0.1]), 'b': jnp.array(0.05)}
  ours, draws = _ours(params, x, y, cfg, minibatches)
  # The closure returns the gradient at x first (on part 0 here: at
  # momentum 0.9 the port seeds its outer buffer with it, which we do not,
  # see below), then part i % parts at Langevin step i.
  split = lambda t, i: (
    x[t, (i % parts) * _M : (i % parts + 1) * _M],
    y[t, (i % parts) * _M : (i % parts + 1) * _M],
  )
  batches = [
    [split(t, 0)] + [split(t, i) for i in range(cfg['L'])]
    for t in range(num_steps)
  ]
  port = _port_steps(
    {k: np.asarray(v) for k, v in params.items()},
    batches,
    draws,
    cfg,
    seed_momentum=mom == 0,  # faithful where the seed has no effect
  )
  for t in range(num_steps):
    tu.assert_trees_close(ours[t], port[t], rtol=1e-5, atol=1e-7)
  moved = np.abs(np.asarray(ours[-1]['w']) - np.asarray(params['w']))
  assert np.all(moved > 1e-3)  # the comparison is not vacuous


def test_noise_enters_as_the_port_scales_it():
  # One Langevin step from a flat loss: x' = x - llr * eps / sqrt(llr / 2)
  # * eta, mu = 0.25 x', so the outer gradient is x - mu = 0.25 * (x - x').
  flat = lambda p, b: jnp.zeros(b.shape[0]) + 0.0 * jnp.sum(p)
  tx = optax_zoo.entropy_sgd(
    optax.sgd(1.0), langevin_steps=1, noise=0.5, langevin_lr=0.02, key=3
  )
  params = jnp.zeros(4)
  state = tx.init(params)
  extra = extra_args.supply(['grad_fn'], flat, params, jnp.zeros(2))
  updates, _ = tx.update(params, state, params, **extra)
  _, step_key = jax.random.split(jax.random.key(3))
  eta = _entropy_sgd._langevin_noise(step_key, 0, params)
  expected = -0.25 * 0.02 * 0.5 / np.sqrt(0.01) * eta
  np.testing.assert_allclose(updates, expected, rtol=1e-6)


def test_scoping_follows_its_formula():
  gamma, scoping = 0.5, 0.2
  x, y = _data(5, 2 * _M, seed=1)
  params = {'w': jnp.array([0.3, -0.2, 0.1]), 'b': jnp.array(0.05)}

  @jax.jit
  def update(g, s, state, params, batch):  # one compile: g, s are traced
    tx = optax_zoo.entropy_sgd(
      optax.sgd(0.5), langevin_steps=2, gamma=g, scoping=s, noise=1e-3
    )
    extra = extra_args.supply(['grad_fn'], _loss_fn, params, batch)
    grads = jax.grad(lambda p: _loss_fn(p, batch).mean())(params)
    return tx.update(grads, state, params, **extra)

  state = optax_zoo.entropy_sgd(optax.sgd(0.5)).init(params)
  for t in range(5):
    batch = (x[t], y[t])
    updates, new_state = update(gamma, scoping, state, params, batch)
    # The same step, gamma fixed at gamma (1 + scoping)^t, same state.
    g_t = gamma * (1 + scoping) ** t
    fixed, _ = update(g_t, 0.0, state, params, batch)
    tu.assert_trees_close(updates, fixed, rtol=2e-6, atol=1e-9)
    if t >= 2:  # and it is not gamma itself
      unscoped, _ = update(gamma, 0.0, state, params, batch)
      assert not np.allclose(updates['w'], unscoped['w'], rtol=1e-4, atol=0)
    params, state = optax.apply_updates(params, updates), new_state


def test_gradient_at_x_is_unused_but_its_nan_shows():
  params = {'w': jnp.array([0.3, -0.2, 0.1]), 'b': jnp.array(0.05)}
  x, y = _data(1, 4 * _M)
  batch = (x[0], y[0])
  tx = optax_zoo.entropy_sgd(optax.sgd(0.1), langevin_steps=4)
  state = tx.init(params)

  @jax.jit
  def update(grads):
    extra = extra_args.supply(['grad_fn'], _loss_fn, params, batch)
    return tx.update(grads, state, params, **extra)[0]

  a = update(jax.tree.map(jnp.ones_like, params))
  tu.assert_trees_equal(a, update(jax.tree.map(jnp.zeros_like, params)))
  c = update({'w': jnp.array([0.0, jnp.nan, 0.0]), 'b': jnp.array(0.0)})
  assert np.isnan(c['w'][1]) and np.all(np.isfinite(np.delete(c['w'], 1)))


def test_noise_key_lives_in_the_state():
  params = jnp.zeros(3)
  tx = optax_zoo.entropy_sgd(optax.sgd(1.0), langevin_steps=1, noise=1.0)
  flat = lambda p, b: 0.0 * jnp.sum(p) + jnp.zeros(b.shape[0])
  extra = extra_args.supply(['grad_fn'], flat, params, jnp.zeros(1))
  update = jax.jit(lambda s: tx.update(params, s, params, **extra))
  s0 = tx.init(params)
  u1, s1 = update(s0)
  u2, _ = update(s1)
  assert not np.allclose(u1, u2)  # a fresh draw every step
  tu.assert_trees_equal(update(s0)[0], u1)  # reproducible from the state
  other = optax_zoo.entropy_sgd(
    optax.sgd(1.0), langevin_steps=1, noise=1.0, key=jax.random.key(7)
  )
  u3, _ = other.update(params, other.init(params), params, **extra)
  assert not np.allclose(u1, u3)


def test_batch_that_minibatches_do_not_divide_raises():
  params = jnp.zeros(3)
  tx = optax_zoo.entropy_sgd(optax.sgd(0.1), langevin_steps=4)
  extra = extra_args.supply(['grad_fn'], _loss_fn_vec, params, jnp.ones((6, 3)))
  with pytest.raises(ValueError, match='minibatches'):
    tx.update(params, tx.init(params), params, **extra)
  ok = optax_zoo.entropy_sgd(optax.sgd(0.1), langevin_steps=4, minibatches=2)
  ok.update(params, ok.init(params), params, **extra)  # 6 = 2 parts of 3


def _loss_fn_vec(w, x):
  return (x @ w - 1.0) ** 2


@pytest.mark.parametrize(
  'bad',
  [
    {'langevin_steps': 0},
    {'langevin_steps': 2.5},
    {'gamma': 0.0},
    {'gamma': -0.1},
    {'scoping': -1e-3},
    {'langevin_lr': 0.0},
    {'noise': -1.0},
    {'mu_decay': 1.0},
    {'langevin_momentum': -0.1},
    {'langevin_weight_decay': -1.0},
    {'minibatches': 0},
    {'minibatches': 3},
    {'key': 'seed'},
    {'langevin_nesterov': 1},
  ],
)
def test_bad_input_raises_naming_the_argument(bad):
  (name,) = bad
  with pytest.raises(ValueError, match=name):
    optax_zoo.entropy_sgd(optax.sgd(0.1), **{'langevin_steps': 4, **bad})


def test_update_needs_grad_fn_and_params():
  tx = optax_zoo.entropy_sgd(optax.sgd(0.1))
  params = jnp.zeros(2)
  with pytest.raises(ValueError, match='grad_fn'):
    tx.update(params, tx.init(params), params)
  with pytest.raises(ValueError, match='params'):
    tx.update(params, tx.init(params), grad_fn=lambda p, i, n: p)
