"""Parity with torchao 0.18 and bitsandbytes 0.50 on CPU (`reference` extra).

torchao's ``AdamW8bit.step`` wraps its update in ``torch.compile`` (27-72 s
for a first step on CPU): here ``torch.compile`` is replaced by the identity
for these tests, so the same Python update runs eagerly, op by op. Its codes
then come from the same eager quantizer the compiled one traces.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optax_zoo import quantization as q

torch = pytest.importorskip('torch')
torchao_optim = pytest.importorskip('torchao.optim')
quant_utils = pytest.importorskip('torchao.optim.quant_utils')
bnb = pytest.importorskip('bitsandbytes')

# The reference figures: XLA's default compiler (see conftest.py).
pytestmark = pytest.mark.optimized
SHAPES = {'w': (64, 128), 'b': (128,)}  # w quantized, b (128 < 4096) not


@pytest.mark.parametrize('signed', [True, False])
def test_maps_and_codes_equal_the_references(signed):
  ours = q.SIGNED_MAP if signed else q.UNSIGNED_MAP
  bnb_map = bnb.functional.create_dynamic_map(signed=signed).numpy()
  tao_map = torch.tensor(
    quant_utils.create_dynamic_map(signed), dtype=torch.float32
  )
  np.testing.assert_array_equal(ours, bnb_map)
  np.testing.assert_array_equal(ours, tao_map.numpy())
  rng = np.random.default_rng(0)
  n = 256 * 64
  heavy = rng.standard_t(1, n) * 10.0 ** rng.uniform(-7, 0, n)
  for x in (rng.standard_normal(n), heavy):
    x = (x if signed else x * x).astype(np.float32)
    scaled, scale = quant_utils.scale_tensor(torch.from_numpy(x), 256)
    codes = quant_utils.quantize_8bit_with_qmap(scaled, tao_map).numpy()
    mine = q.quantize_blockwise(jnp.asarray(x), signed=signed)
    np.testing.assert_array_equal(mine.codes, codes)
    np.testing.assert_array_equal(mine.absmax, scale.numpy())


def _grads(rng, params):
  return {
    k: (rng.standard_normal(v.shape) * (1 + np.abs(v))).astype(np.float32)
    for k, v in params.items()
  }


def test_adamw8bit_follows_torchao_step_by_step(monkeypatch):
  monkeypatch.setattr(torch, 'compile', lambda fn, **kwargs: fn)
  rng = np.random.default_rng(0)
  p0 = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
  ref = {
    k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in p0.items()
  }
  opt = torchao_optim.AdamW8bit(list(ref.values()), lr=1e-2, weight_decay=1e-2)
  tx = q.adamw8bit(1e-2, weight_decay=1e-2)
  params = jax.tree.map(jnp.asarray, p0)
  state = tx.init(params)
  update = jax.jit(tx.update)
  agreement, worst = [], 0.0
  for _ in range(20):
    g = _grads(rng, p0)
    for k, t in ref.items():
      t.grad = torch.from_numpy(g[k])
    opt.step()
    updates, state = update(jax.tree.map(jnp.asarray, g), state, params)
    params = optax.apply_updates(params, updates)
    for k, t in ref.items():
      a = t.detach().numpy()
      worst = max(worst, np.max(np.abs(np.asarray(params[k]) - a) / np.abs(a)))
    tao = opt.state[ref['w']]
    for name, key in (('mu', 'exp_avg'), ('nu', 'exp_avg_sq')):
      mine = getattr(state[0].inner_state, name)['w'].codes
      agreement.append(np.mean(np.asarray(mine) == tao[key].codes.numpy()))
  # Codes agree but for a rare float32 tie (measured: 2 of 8192 codes at
  # worst), whose one-code difference then moves that parameter a little.
  assert min(agreement) > 0.999, min(agreement)
  assert worst < 1e-2, worst
  assert np.mean(agreement) > 0.9999


def test_adam8bit_follows_bitsandbytes_within_its_lookup_table():
  """bitsandbytes' CPU quantizer picks codes from a 65,536-bin table of the
  scaled value, not the nearest code: its moments carry up to a whole code
  gap of error, not half of one, so the trajectories part by about as much
  as 8-bit parts from 32-bit. Bound: 1/4 of the 32-bit-vs-8-bit distance.
  """
  rng = np.random.default_rng(1)
  p0 = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
  make = lambda: [
    torch.nn.Parameter(torch.from_numpy(p0[k].copy())) for k in SHAPES
  ]
  ref, full = make(), make()
  opt_ref = bnb.optim.Adam8bit(ref, lr=1e-2)
  opt_full = torch.optim.Adam(full, lr=1e-2)
  tx = q.adam8bit(1e-2)
  params = jax.tree.map(jnp.asarray, p0)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for _ in range(30):
    g = _grads(rng, p0)
    for ts in (ref, full):
      for t, k in zip(ts, SHAPES, strict=True):
        t.grad = torch.from_numpy(g[k].copy())
    opt_ref.step()
    opt_full.step()
    updates, state = update(jax.tree.map(jnp.asarray, g), state, params)
    params = optax.apply_updates(params, updates)
  w_ref, w_full = ref[0].detach().numpy(), full[0].detach().numpy()
  ours = np.asarray(params['w'])
  moved = np.linalg.norm(w_full - p0['w'])
  assert np.linalg.norm(ours - w_ref) < 0.25 * np.linalg.norm(ours - w_full)
  assert np.linalg.norm(ours - w_full) < 0.1 * moved
