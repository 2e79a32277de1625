"""Compressed averaging, error feedback and AdaComp on simulated workers.

Eight workers simulated with ``jax.vmap(..., axis_name='workers')`` on one
device; the references are NumPy: payloads decoded bit by bit, error
feedback and AdaComp's Algorithm 1 transcribed independently here.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo

N = 8
AXIS = 'workers'


def _worker_grads(seed, n=N):
  rng = np.random.default_rng(seed)
  return {
    'w': jnp.asarray(rng.normal(size=(n, 3, 5)), jnp.float32),
    'b': jnp.asarray(rng.normal(size=(n, 7)) * 10.0, jnp.float32),
  }


def _run(tx, grads_seq):
  """Runs ``tx`` per worker over the steps; (updates per step, states)."""
  init = jax.vmap(tx.init)(grads_seq[0])
  step = jax.jit(jax.vmap(tx.update, axis_name=AXIS))
  state, outs = init, []
  for g in grads_seq:
    u, state = step(g, state)
    outs.append(u)
  return outs, state


def _leaf_keys(key, step, worker, num_leaves):
  """The documented key schedule of `compressed_mean`'s state."""
  k = jax.random.key(key)
  for _ in range(step):
    k = jax.random.split(k)[0]
  step_key = jax.random.split(k)[1]
  return jax.random.split(jax.random.fold_in(step_key, worker), num_leaves)


def _np_natural_decode(payload, d):
  code = np.asarray(payload['exponent'], np.int64)
  sign = np.unpackbits(np.asarray(payload['sign']), bitorder='little')[:d]
  mag = np.where(code == 0, 0.0, np.exp2(code.astype(np.float64) - 127))
  mag = np.where(code == 255, np.nan, mag)
  return (1.0 - 2.0 * sign) * mag


def test_identity_compressed_mean_is_the_mean():
  grads = _worker_grads(0)
  tx = optax_zoo.compressed_mean(optax_zoo.identity_compressor(), AXIS)
  (out,), _ = _run(tx, [grads])
  pmean = jax.vmap(lambda g: jax.lax.pmean(g, AXIS), axis_name=AXIS)(grads)
  for leaf, want, g in zip(
    jax.tree.leaves(out),
    jax.tree.leaves(pmean),
    jax.tree.leaves(grads),
    strict=True,
  ):
    np.testing.assert_allclose(leaf, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
      leaf[0], np.mean(np.asarray(g, np.float64), axis=0), rtol=1e-5
    )


def test_natural_compressed_mean_is_the_average_of_decoded_payloads():
  c = optax_zoo.natural_compressor()
  tx = optax_zoo.compressed_mean(c, AXIS, key=3)
  grads_seq = [_worker_grads(s) for s in range(3)]
  outs, state = _run(tx, grads_seq)
  compress = jax.jit(c.compress)
  for step, (grads, out) in enumerate(zip(grads_seq, outs, strict=True)):
    leaves = jax.tree.leaves(grads)
    want = []
    for j, g in enumerate(leaves):
      decoded = [
        _np_natural_decode(
          compress(_leaf_keys(3, step, i, len(leaves))[j], g[i]), g[i].size
        ).reshape(g.shape[1:])
        for i in range(N)
      ]
      want.append(np.mean(decoded, axis=0))
    for got, w in zip(jax.tree.leaves(out), want, strict=True):
      for i in range(N):  # every worker holds the same average
        np.testing.assert_allclose(got[i], w, rtol=1e-6, atol=0)
  np.testing.assert_array_equal(state.count, np.full(N, 3))


def test_workers_draw_distinct_keys():
  # The same update on every worker: distinct keys give distinct roundings,
  # so the average is not one worker's payload.
  g = jnp.tile(jnp.linspace(1.05, 1.95, 64)[None], (N, 1))
  c = optax_zoo.natural_compressor()
  (out,), _ = _run(optax_zoo.compressed_mean(c, AXIS), [g])
  one = jax.jit(c)(_leaf_keys(0, 0, 0, 1)[0], g[0])
  assert not np.allclose(out[0], one)
  # ... and an unbiased average: within 5 standard errors of the input.
  p = np.asarray(g[0]) - 1.0
  se = np.sqrt(np.sum(p * (1 - p)) / N) / 64
  assert abs(np.mean(out[0]) - np.mean(g[0])) < 5 * se


def test_size_one_axis_is_decompress_of_compress():
  for c in (
    optax_zoo.natural_compressor(),
    optax_zoo.natural_dithering_compressor(3),
    optax_zoo.random_k_compressor(2),
  ):
    g = _worker_grads(1, n=1)['b']
    (out,), _ = _run(optax_zoo.compressed_mean(c, AXIS, key=5), [g])
    want = jax.jit(c)(_leaf_keys(5, 0, 0, 1)[0], g[0])
    np.testing.assert_array_equal(out[0], want)


def test_bf16_updates_keep_their_dtype():
  g = jnp.asarray(np.random.default_rng(0).normal(size=(N, 9)), jnp.bfloat16)
  tx = optax_zoo.compressed_mean(optax_zoo.natural_compressor(), AXIS)
  (out,), _ = _run(tx, [g])
  assert out.dtype == jnp.bfloat16


def _np_top_k(x, k):
  out = np.zeros_like(x)
  idx = np.argsort(-np.abs(x), kind='stable')[:k]
  out[idx] = x[idx]
  return out


def test_error_feedback_matches_numpy_and_loses_nothing():
  k, steps = 2, 5
  c = optax_zoo.top_k_compressor(k)
  tx = optax_zoo.error_feedback(c, AXIS)
  rng = np.random.default_rng(0)
  seq = [
    jnp.asarray(rng.normal(size=(N, 6)), jnp.float32) for _ in range(steps)
  ]
  outs, state = _run(tx, seq)
  e = np.zeros((N, 6), np.float32)
  for g, out in zip(seq, outs, strict=True):
    p = e + np.asarray(g)
    sent = np.stack([_np_top_k(p[i], k) for i in range(N)])
    e = p - sent
    np.testing.assert_allclose(out[0], sent.mean(axis=0), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(state.residual, e, rtol=1e-6, atol=1e-7)
  # Sent plus the final residual is the sum of the updates.
  total_sent = np.sum([np.asarray(o[0], np.float64) for o in outs], axis=0)
  total = np.sum([np.asarray(g, np.float64) for g in seq], axis=0).mean(0)
  np.testing.assert_allclose(
    total_sent + np.asarray(state.residual, np.float64).mean(0),
    total,
    rtol=1e-5,
    atol=1e-5,
  )


def test_error_feedback_with_a_random_compressor_keeps_the_identity():
  tx = optax_zoo.error_feedback(optax_zoo.natural_compressor(), AXIS, key=1)
  seq = [_worker_grads(s) for s in range(4)]
  outs, state = _run(tx, seq)
  for name in ('w', 'b'):
    sent = np.sum([np.asarray(o[name][0], np.float64) for o in outs], axis=0)
    total = np.sum([np.asarray(g[name], np.float64) for g in seq], axis=0)
    np.testing.assert_allclose(
      sent + np.asarray(state.residual[name], np.float64).mean(0),
      total.mean(0),
      rtol=1e-5,
      atol=1e-4,
    )


def _np_adacomp(residue, grad, bin_size, max_per_bin):
  """Chen et al. 2018, Algorithm 1, on one flattened layer (float32).

  G = residue + dW; H = G + dW; per bin g_max = max |G|; send the
  coordinates with |H| >= g_max as sign(G) * scale, scale the mean of the
  bins' g_max; residue = G - sent. At most ``max_per_bin`` per bin, the
  largest |H| first; G = 0 sends nothing (ternary zero).
  """
  g = (residue + grad).astype(np.float32)
  h = (g + grad).astype(np.float32)
  d = len(g)
  bins = [range(b, min(b + bin_size, d)) for b in range(0, d, bin_size)]
  g_max = [max(abs(g[i]) for i in b) for b in bins]
  scale = np.float32(np.mean(np.asarray(g_max, np.float64)))
  sent = np.zeros(d, np.float32)
  for b, m in zip(bins, g_max, strict=True):
    chosen = [i for i in b if abs(h[i]) >= m and g[i] != 0]
    chosen = sorted(chosen, key=lambda i: -abs(h[i]))[:max_per_bin]
    for i in chosen:
      sent[i] = np.sign(g[i]) * scale
  return sent, g - sent


@pytest.mark.parametrize(('bin_size', 'max_per_bin'), [(4, 4), (5, 1), (50, 3)])
def test_adacomp_matches_numpy_algorithm_1(bin_size, max_per_bin):
  steps = 5
  tx = optax_zoo.scale_by_adacomp(
    AXIS, bin_size=bin_size, max_per_bin=max_per_bin
  )
  seq = [_worker_grads(s) for s in range(steps)]
  outs, state = _run(tx, seq)
  for name in ('w', 'b'):
    r = np.zeros((N, math.prod(seq[0][name].shape[1:])), np.float32)
    for g, out in zip(seq, outs, strict=True):
      flat = np.asarray(g[name]).reshape(N, -1)
      sent = np.zeros_like(r)
      for i in range(N):
        sent[i], r[i] = _np_adacomp(r[i], flat[i], bin_size, max_per_bin)
      want = sent.mean(axis=0).reshape(g[name].shape[1:])
      np.testing.assert_allclose(out[name][0], want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
      np.asarray(state.residue[name]).reshape(N, -1), r, rtol=1e-6, atol=1e-5
    )


def test_adacomp_payload_layout_and_bytes():
  from optax_zoo.distributed import _compressors as cz

  g = jnp.asarray(np.random.default_rng(0).normal(size=1234), jnp.float32)
  encode = jax.jit(cz.adacomp_encode, static_argnums=(2, 3))
  for bin_size, index_dtype in ((50, jnp.uint8), (500, jnp.uint16)):
    payload, _ = encode(g, 2 * g, bin_size, 4)
    bins = -(-1234 // bin_size)
    assert payload['index'].dtype == index_dtype
    assert payload['index'].shape == (bins, 4)
    assert payload['sign'].shape == (-(-bins * 4 // 8),)
    assert payload['scale'].dtype == jnp.float32
    nbytes = sum(p.nbytes for p in payload.values())
    assert nbytes == cz.adacomp_payload_bytes(1234, bin_size, 4)
  # 4 slots of one byte per bin of 50 plus half a byte of signs: 44x.
  assert 4 * 50_000 / cz.adacomp_payload_bytes(50_000, 50, 4) > 44


def test_adacomp_non_finite_is_not_hidden():
  g = jnp.array([[1.0, jnp.nan, 2.0, 0.5]])
  tx = optax_zoo.scale_by_adacomp(AXIS, bin_size=4)
  (out,), _ = _run(tx, [g])
  assert np.all(np.isnan(out))


def test_optimizer_faces_chain_compression_and_sgd():
  grads = _worker_grads(2)
  for face, compressed in (
    (
      optax_zoo.natural_compression(0.5, AXIS, key=4, momentum=0.9),
      optax_zoo.compressed_mean(optax_zoo.natural_compressor(), AXIS, key=4),
    ),
    (
      optax_zoo.natural_dithering(0.5, AXIS, levels=3, key=4, momentum=0.9),
      optax_zoo.compressed_mean(
        optax_zoo.natural_dithering_compressor(3), AXIS, key=4
      ),
    ),
    (
      optax_zoo.adacomp(0.5, AXIS, bin_size=5, momentum=0.9),
      optax_zoo.scale_by_adacomp(AXIS, bin_size=5),
    ),
  ):
    by_hand = optax.chain(compressed, optax.sgd(0.5, momentum=0.9))
    outs, _ = _run(face, [grads, grads])
    wants, _ = _run(by_hand, [grads, grads])
    for o, w in zip(outs, wants, strict=True):
      for a, b in zip(jax.tree.leaves(o), jax.tree.leaves(w), strict=True):
        np.testing.assert_array_equal(a, b)


def test_unbound_axis_name_raises():
  g = jnp.ones(4)
  for tx in (
    optax_zoo.compressed_mean(optax_zoo.natural_compressor(), 'nowhere'),
    optax_zoo.error_feedback(optax_zoo.natural_compressor(), 'nowhere'),
    optax_zoo.scale_by_adacomp('nowhere'),
  ):
    with pytest.raises(ValueError, match="`axis_name` 'nowhere' is not bound"):
      jax.jit(tx.update)(g, tx.init(g))
    with pytest.raises(ValueError, match='`axis_name`'):
      jax.vmap(tx.update, axis_name='elsewhere')(
        g[None], jax.vmap(tx.init)(g[None])
      )


@pytest.mark.parametrize(
  ('build', 'match'),
  [
    (lambda: optax_zoo.scale_by_adacomp(AXIS, bin_size=0), '`bin_size`'),
    (lambda: optax_zoo.scale_by_adacomp(AXIS, max_per_bin=0), '`max_per_bin`'),
    (lambda: optax_zoo.adacomp(0.1, AXIS, bin_size=-3), '`bin_size`'),
    (lambda: optax_zoo.compressed_mean('natural', AXIS), '`compressor`'),
    (
      lambda: optax_zoo.compressed_mean(optax_zoo.natural_compressor(), 3),
      '`axis_name`',
    ),
    (
      lambda: optax_zoo.error_feedback(optax_zoo.natural_compressor(), None),
      '`axis_name`',
    ),
    (
      lambda: optax_zoo.compressed_mean(
        optax_zoo.natural_compressor(), AXIS, key='seed'
      ),
      '`key`',
    ),
    (
      lambda: optax_zoo.error_feedback(
        optax_zoo.natural_compressor(), AXIS, residual_dtype=jnp.int32
      ),
      '`residual_dtype`',
    ),
    (lambda: optax_zoo.natural_dithering(0.1, AXIS, levels=0), '`levels`'),
    (lambda: optax_zoo.natural_compression(-0.1, AXIS), '`learning_rate`'),
  ],
)
def test_bad_input_raises(build, match):
  with pytest.raises(ValueError, match=match):
    build()


def _one_device_gathers(tx, g):
  """The all-gathers of one `tx.update` on a one-device mesh (lowered)."""
  from jax.sharding import AxisType
  from jax.sharding import PartitionSpec as P

  mesh = jax.make_mesh((1,), (AXIS,), axis_types=(AxisType.Auto,))
  state = tx.init(g)
  f = jax.shard_map(
    lambda g, s: tx.update(g, s)[0],
    mesh=mesh,
    in_specs=(P(), P()),
    out_specs=P(),
  )
  w = optax_zoo.wire_bytes(f, g, state)
  return [c for c in w.collectives if c.kind == 'all-gather']


@pytest.mark.parametrize(
  ('compressor', 'payload'),
  [
    (optax_zoo.identity_compressor(), 64 * 2),
    (optax_zoo.top_k_compressor(2), 2 * (2 + 4)),
    (optax_zoo.natural_compressor(), 64 + 8),
  ],
)
def test_error_feedback_sends_the_payload_of_the_update_dtype(
  compressor, payload
):
  # The residual sum is float32, but what crosses the wire must be the
  # bf16 payload `Compressor.payload_bytes` documents (identity used to
  # send 256 bytes for 64 bf16 coordinates, top_k(2) 16).
  g = jnp.ones(64, jnp.bfloat16)
  tx = optax_zoo.error_feedback(compressor, AXIS)
  gathers = _one_device_gathers(tx, g)
  assert sum(c.payload_bytes for c in gathers) == payload
  assert compressor.tree_payload_bytes(g) == payload
  assert compressor.wire_bytes(g, 2) == payload


def test_error_feedback_float16_large_values_stay_finite():
  # 40000 lies in float16's top binade: natural compression must not round
  # it up to 2^16 (inf in float16), also once the residual has grown.
  g = jnp.full((N, 4), 40000.0, jnp.float16)
  tx = optax_zoo.error_feedback(optax_zoo.natural_compressor(), AXIS, key=2)
  outs, state = _run(tx, [g] * 6)
  for out in outs:
    assert out.dtype == jnp.float16
    np.testing.assert_array_equal(out, np.full((N, 4), 2.0**15))
  # Nothing is lost: sent plus residual is the sum of the updates.
  np.testing.assert_allclose(
    np.asarray(state.residual), np.full((N, 4), 6 * (40000.0 - 2.0**15))
  )


def test_error_feedback_rejects_non_contractive_compressors():
  g = jnp.ones((1, 10))
  for c, d in (
    (optax_zoo.random_k_compressor(1), 10),  # omega = d/k - 1 = 9
    (optax_zoo.natural_dithering_compressor(7), 20000),  # omega ~ 1.35
  ):
    x = jnp.ones((1, d))
    tx = optax_zoo.error_feedback(c, AXIS)
    with pytest.raises(ValueError, match=rf'`compressor`.*leaf of {d} coord'):
      tx.init(x[0])
    state = jax.vmap(tx.init)(jnp.ones((1, 1)))
    with pytest.raises(ValueError, match=rf'`compressor`.*leaf of {d} coord'):
      # The state of a one-coordinate leaf (omega < 1) passed init; the
      # update is checked again when traced.
      jax.vmap(tx.update, axis_name=AXIS)(x, state)
  # Contractions pass: top_k (1 - k/d), unscaled random_k, natural (1/8),
  # and natural dithering on a small leaf.
  for c in (
    optax_zoo.top_k_compressor(1),
    optax_zoo.random_k_compressor(1, scaled=False),
    optax_zoo.natural_compressor(),
    optax_zoo.natural_dithering_compressor(7),
  ):
    tx = optax_zoo.error_feedback(c, AXIS)
    _run(tx, [g])


def test_error_feedback_residual_stays_nan_after_a_nan_update():
  good = jnp.ones((2, 3))
  bad = good.at[1, 0].set(jnp.nan)
  tx = optax_zoo.error_feedback(optax_zoo.top_k_compressor(1), AXIS)
  outs, state = _run(tx, [bad, good, good])
  assert all(np.all(np.isnan(o[:, 0])) for o in outs)
  assert np.isnan(state.residual[1, 0]) and np.all(
    np.isfinite(state.residual[0])
  )
  # top_k keeps choosing the NaN: that worker's other coordinates wait in
  # its residual.
  np.testing.assert_array_equal(state.residual[1, 1:], [3.0, 3.0])


def test_inject_hyperparams_takes_the_key_as_a_hyperparameter():
  grads = _worker_grads(4)
  plain = optax_zoo.natural_compression(0.1, AXIS, key=3)
  injected = optax.inject_hyperparams(optax_zoo.natural_compression)(
    learning_rate=0.1, axis_name=AXIS, key=3
  )
  want, _ = _run(plain, [grads, grads])
  got, _ = _run(injected, [grads, grads])
  for o, w in zip(got, want, strict=True):
    for a, b in zip(jax.tree.leaves(o), jax.tree.leaves(w), strict=True):
      np.testing.assert_array_equal(a, b)
