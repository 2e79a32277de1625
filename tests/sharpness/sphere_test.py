"""Tests for `sphere_sgd`: SGD on the sphere at a fixed effective rate."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from optax_zoo._src import test_utils as tu
from tests.reference import parity

_MASK = {'w': True, 'b': False, 's': True}


def _params():
  return parity.initial_params()  # w (6, 5), b (5,), s (1,)


def _sphere_norm(params, mask=_MASK):
  return np.sqrt(
    sum(
      np.sum(np.square(np.asarray(p, np.float64)))
      for k, p in params.items()
      if mask[k]
    )
  )


def _run(tx, params, steps, grad_fn=None):
  grad_fn = grad_fn or parity.noisy_quadratic_grads(scale=3.0)
  update = jax.jit(tx.update)
  params = jax.tree.map(jnp.asarray, params)
  state = tx.init(params)
  path = []
  for t in range(steps):
    g = grad_fn(t, jax.tree.map(np.asarray, params))
    updates, state = update(jax.tree.map(jnp.asarray, g), state, params)
    params = optax.apply_updates(params, updates)
    path.append(jax.tree.map(np.asarray, params))
  return path, state


def test_masked_norm_stays_at_its_init_value():
  params = _params()
  tx = optax_zoo.sphere_sgd(effective_lr=0.05, mask=_MASK, learning_rate=0.0)
  path, state = _run(tx, params, 300)
  norm0 = _sphere_norm(params)
  np.testing.assert_allclose(float(state.norm0), norm0, rtol=1e-6)
  norms = np.array([_sphere_norm(p) for p in path])
  assert np.max(np.abs(norms / norm0 - 1)) < 1e-6
  # It moved (a large angle) and the frozen leaf did not.
  cos = np.sum(path[-1]['w'] * params['w']) / np.sum(params['w'] ** 2)
  assert cos < 0.9
  np.testing.assert_array_equal(path[-1]['b'], params['b'])


def test_one_step_matches_its_formula():
  params = _params()
  g = parity.noisy_quadratic_grads()(0, params)
  elr, lr, mu, wd = 0.03, 0.2, 0.9, 1e-2
  tx = optax_zoo.sphere_sgd(
    effective_lr=elr,
    mask=_MASK,
    learning_rate=lr,
    momentum=mu,
    weight_decay=wd,
  )
  p = jax.tree.map(jnp.asarray, params)
  state = tx.init(p)
  # Two steps, so the momentum buffer enters the second.
  for step in range(2):
    updates, state = jax.jit(tx.update)(jax.tree.map(jnp.asarray, g), state, p)
    new = optax.apply_updates(p, updates)
    if step == 0:
      p = new
  p = jax.tree.map(np.asarray, p)
  params64 = {k: np.asarray(v, np.float64) for k, v in params.items()}
  norm0 = _sphere_norm(params)
  d0 = {k: g[k] + wd * params64[k] for k in g}
  m1 = {k: mu * d0[k] + g[k] + wd * p[k] for k in g}
  eta = elr * norm0**2
  moved = {k: p[k] - (eta if _MASK[k] else lr) * m1[k] for k in g}
  scale = norm0 / _sphere_norm(moved)
  expected = {k: moved[k] * scale if _MASK[k] else moved[k] for k in g}
  tu.assert_trees_close(
    jax.tree.map(np.asarray, new), expected, rtol=2e-6, atol=1e-6
  )


def test_the_unmasked_rate_defaults_to_the_raw_sphere_step():
  # The reference's default (no --noninvlr): every group steps with
  # lr = elr * ||w0||^2, only the masked ones are projected.
  params = _params()
  g = parity.noisy_quadratic_grads()(0, params)
  tx = optax_zoo.sphere_sgd(effective_lr=0.01, mask=_MASK)
  p = jax.tree.map(jnp.asarray, params)
  updates, _ = tx.update(jax.tree.map(jnp.asarray, g), tx.init(p), p)
  eta = 0.01 * _sphere_norm(params) ** 2
  np.testing.assert_allclose(updates['b'], -eta * g['b'], rtol=1e-6)


def test_per_filter_keeps_each_filter_on_its_sphere():
  params = _params()
  mask = {'w': True, 'b': True, 's': False}
  tx = optax_zoo.sphere_sgd(
    effective_lr=0.02, mask=mask, learning_rate=0.0, per_filter=True
  )
  norm0 = _sphere_norm(params, mask)
  radius = norm0 / np.sqrt(5 + 5)  # 5 filters of w (its last axis), 5 of b
  equalized = optax_zoo.sphere_equalize_filters(params, mask)
  np.testing.assert_allclose(
    np.linalg.norm(equalized['w'], axis=0), radius, rtol=1e-6
  )
  for start in (params, jax.tree.map(np.asarray, equalized)):
    path, _ = _run(tx, start, 100)
    for p in path:
      np.testing.assert_allclose(
        np.linalg.norm(p['w'], axis=0), radius, rtol=2e-6
      )
      np.testing.assert_allclose(np.abs(p['b']), radius, rtol=2e-6)
    assert not np.allclose(path[-1]['w'], path[0]['w'], atol=1e-2)


def test_the_effective_rate_does_not_depend_on_the_radius():
  # On a scale-invariant loss the gradient shrinks as 1/||w||: a fixed
  # effective rate gives the same directions on spheres of any radius,
  # where plain SGD at a fixed rate would not.
  a = jax.random.normal(jax.random.key(0), (6, 4))
  loss = lambda p: jnp.sum(jnp.tanh(a @ (p['w'] / jnp.linalg.norm(p['w']))))
  w0 = jax.random.normal(jax.random.key(1), (4,))

  def directions(radius, tx):
    grad_fn = lambda t, p: jax.grad(loss)(p)
    path, _ = _run(tx, {'w': radius * w0}, 40, grad_fn)
    return np.stack([p['w'] / np.linalg.norm(p['w']) for p in path])

  sphere = optax_zoo.sphere_sgd(effective_lr=0.1, mask={'w': True})
  np.testing.assert_allclose(
    directions(1.0, sphere), directions(7.0, sphere), rtol=1e-5, atol=1e-6
  )
  sgd = optax.sgd(0.1)
  assert not np.allclose(directions(1.0, sgd), directions(7.0, sgd), atol=1e-3)


class _TheirSphere:
  """tipt0p/three_regimes_on_the_sphere, transcribed from its torch code.

  ``train.py`` (``--fix_elr`` / ``--fix_all_elr``, ``--noninvlr``) builds a
  ``torch.optim.SGD`` over two groups, scale-invariant parameters first;
  ``training_utils.train_epoch`` rescales after each step with
  ``fix_si_pnorm`` (joint) or ``fix_si_pnorms`` (per filter, dim 0). Leaves
  come in our layout (filters last) and are moved to torch's (filters
  first).
  """

  def __init__(self, params, mask, *, elr, noninvlr, momentum, wd, fix_all):
    import torch

    self.torch, self.mask, self.fix_all = torch, mask, fix_all
    self.names = sorted(params)
    self.p = {
      k: torch.nn.Parameter(torch.tensor(np.moveaxis(params[k], -1, 0)))
      for k in self.names
    }
    si = [self.p[k] for k in self.names if mask[k]]
    other = [self.p[k] for k in self.names if not mask[k]]
    with torch.no_grad():
      sq = sum((p**2).sum().item() for p in si)
      if fix_all:
        self.si_pnorm_0 = np.sqrt(sq / sum(p.shape[0] for p in si))
        self._fix_si_pnorms()
        lr = elr * sum((p**2).sum().item() for p in si)
      else:
        self.si_pnorm_0 = np.sqrt(sq)
        lr = elr * self.si_pnorm_0**2
    groups = [{'params': si}, {'params': other}]
    if noninvlr >= 0:
      groups[1]['lr'] = noninvlr
    self.opt = torch.optim.SGD(
      groups, lr=lr, momentum=momentum, weight_decay=wd
    )

  def _fix_si_pnorm(self):
    si = [self.p[k] for k in self.names if self.mask[k]]
    si_pnorm = np.sqrt(sum((p**2).sum().item() for p in si))
    for p in si:
      p.data *= self.si_pnorm_0 / si_pnorm

  def _fix_si_pnorms(self):
    for k in self.names:
      if self.mask[k]:
        p = self.p[k]
        p.data *= self.si_pnorm_0 / self.torch.norm_except_dim(p.data, 2, 0)

  def step(self, grads):
    for k in self.names:
      self.p[k].grad = self.torch.tensor(np.moveaxis(grads[k], -1, 0))
    self.opt.step()
    with self.torch.no_grad():
      self._fix_si_pnorms() if self.fix_all else self._fix_si_pnorm()
    return {
      k: np.moveaxis(self.p[k].detach().numpy(), 0, -1) for k in self.names
    }


@pytest.mark.parametrize(
  ('noninvlr', 'momentum', 'wd', 'fix_all'),
  [
    (0.0, 0.0, 0.0, False),  # the paper's runs: fully SI, frozen head
    (-1.0, 0.0, 0.0, False),  # other leaves at the raw rate
    (0.05, 0.9, 1e-3, False),
    (0.0, 0.0, 0.0, True),  # --fix_all_elr
  ],
)
def test_matches_the_reference_code(noninvlr, momentum, wd, fix_all):
  pytest.importorskip('torch')
  params = _params()
  mask = {'w': True, 'b': False, 's': True}
  if fix_all:  # the reference equalizes filter norms before training
    params = jax.tree.map(
      np.asarray, optax_zoo.sphere_equalize_filters(params, mask)
    )
  elr = 0.02
  tx = optax_zoo.sphere_sgd(
    effective_lr=elr,
    mask=mask,
    learning_rate=None if noninvlr < 0 else noninvlr,
    momentum=momentum or None,
    weight_decay=wd,
    per_filter=fix_all,
  )
  ref = _TheirSphere(
    params,
    mask,
    elr=elr,
    noninvlr=noninvlr,
    momentum=momentum,
    wd=wd,
    fix_all=fix_all,
  )
  worst = parity.run_parity(
    tx, ref, params, parity.noisy_quadratic_grads(scale=2.0), steps=150
  )
  parity.assert_within_registered('sphere_sgd', worst)


def test_bad_arguments_raise_naming_them():
  for bad in (0.0, -1e-3):
    with pytest.raises(ValueError, match='effective_lr'):
      optax_zoo.sphere_sgd(effective_lr=bad, mask=_MASK)
  with pytest.raises(ValueError, match='mask'):
    optax_zoo.sphere_sgd(effective_lr=0.1, mask={'w': False, 'b': False})
  with pytest.raises(ValueError, match='mask'):
    optax_zoo.sphere_sgd(effective_lr=0.1, mask=None)
  # A function of the params is checked at init.
  tx = optax_zoo.sphere_sgd(
    effective_lr=0.1, mask=lambda p: jax.tree.map(lambda x: x.ndim > 2, p)
  )
  with pytest.raises(ValueError, match='mask'):
    tx.init(_params())
  with pytest.raises(ValueError, match='per_filter'):
    optax_zoo.sphere_sgd(effective_lr=0.1, mask=_MASK, per_filter=1)
  # A warm-up schedule may start at 0; a negative one may not.
  optax_zoo.sphere_sgd(
    effective_lr=optax.linear_schedule(0.0, 0.1, 10), mask=_MASK
  )
  with pytest.raises(ValueError, match='effective_lr'):
    optax_zoo.sphere_sgd(effective_lr=lambda t: -0.1, mask=_MASK)
