r"""Compressed averaging across workers: exchange payloads, decode, average.

Each worker compresses its own update, the fixed-layout payloads (see
`optax_zoo.distributed.Compressor`) are all-gathered over ``axis_name`` and
every worker decodes all of them and averages. Codes are gathered, never
summed: a ``psum`` of uint8 codes would wrap at 256, and a sum of decoded
values would need the decoding before the collective, which is the float32
traffic compression is meant to avoid.

Call the transforms inside `jax.shard_map` over ``axis_name``, or under
``jax.vmap(..., axis_name=...)`` to simulate workers on one device. Inside
`jax.shard_map` the averaged update is marked invariant over ``axis_name``
(it is the same on every worker), so replicated parameters stay replicated.

Wire, per step and per worker, for n workers: a ring all-gather in which
each worker receives the n - 1 other payloads, ``(n - 1) * P`` bytes where
``P`` is `Compressor.tree_payload_bytes` of the update (see
`Compressor.wire_bytes`), and sends as many. That grows with n, while a ring
all-reduce of the uncompressed update of ``B`` bytes moves ``2 (n - 1) / n *
B``: compression saves bandwidth only while ``n < 2 B / P``, that is ``n <
64 / b`` for float32 updates sent at b bits per coordinate (see
`compressed_mean`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from optax_zoo import adaptive
from optax_zoo._src import validation as v
from optax_zoo.distributed import _compressors as cz

__all__ = [
  'AdaCompState',
  'CompressedMeanState',
  'ErrorFeedbackState',
  'adacomp',
  'compressed_mean',
  'error_feedback',
  'natural_compression',
  'natural_dithering',
  'scale_by_adacomp',
]


class CompressedMeanState(NamedTuple):
  """State of `compressed_mean`.

  Attributes:
    count: steps taken, int32.
    rng_key: the raw data (uint32, `jax.random.key_data`) of the key the
      next step splits; the same on every worker (each worker folds its
      `lax.axis_index` into the step's key).
  """

  count: jax.Array
  rng_key: jax.Array


class ErrorFeedbackState(NamedTuple):
  """State of `error_feedback`.

  Attributes:
    count: steps taken, int32.
    rng_key: as in `CompressedMeanState`.
    residual: this worker's compression error, a tree like the params in
      ``residual_dtype``; it differs between workers.
  """

  count: jax.Array
  rng_key: jax.Array
  residual: Any


class AdaCompState(NamedTuple):
  """State of `scale_by_adacomp`.

  Attributes:
    count: steps taken, int32.
    residue: this worker's unsent gradient residue, a tree like the params
      in ``residual_dtype``; it differs between workers.
  """

  count: jax.Array
  residue: Any


def _check_axis_name(axis_name: Any) -> None:
  names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
  if not names or not all(isinstance(n, str) and n for n in names):
    raise ValueError(
      '`axis_name` must be a mesh axis name (a non-empty str) or a tuple '
      f'of them, got {axis_name!r}.'
    )


def _axis_size(axis_name: Hashable) -> int:
  """The size of ``axis_name``; a ValueError naming it if it is unbound."""
  try:
    return lax.axis_size(axis_name)
  except NameError as e:
    raise ValueError(
      f'`axis_name` {axis_name!r} is not bound: call `update` inside '
      '`jax.shard_map` over a mesh with that axis, or inside '
      '`jax.vmap(..., axis_name=...)`.'
    ) from e


def _all_gather(tree: Any, axis_name: Hashable) -> Any:
  """``lax.all_gather`` of every leaf, invariant under `jax.shard_map`.

  `jax.vmap` rejects ``to='invarying'`` (it has no notion of varying
  values), so it is asked for only where ``axis_name`` is a manual mesh
  axis.
  """
  names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
  manual = jax.sharding.get_abstract_mesh().manual_axes
  kwargs = {'to': 'invarying'} if all(n in manual for n in names) else {}
  return jax.tree.map(lambda a: lax.all_gather(a, axis_name, **kwargs), tree)


def _check_compressor(compressor: Any) -> None:
  if not isinstance(compressor, cz.Compressor):
    raise ValueError(
      '`compressor` must be a Compressor (e.g. natural_compressor()), got '
      f'{compressor!r}.'
    )


class _Keys:
  """The key stream of a state: raw data in, per-worker leaf keys out."""

  def __init__(self, key: Any):
    base = v.as_key(key)
    self.impl = jax.random.key_impl(base)
    self.data = jax.random.key_data(base)

  def init(self) -> jax.Array:
    return jnp.array(self.data, copy=True)

  def step(self, raw: jax.Array, axis_name: Hashable, num_leaves: int):
    """(next raw key, one key per leaf for this worker)."""
    next_key, step_key = jax.random.split(
      jax.random.wrap_key_data(raw, impl=self.impl)
    )
    worker_key = jax.random.fold_in(step_key, lax.axis_index(axis_name))
    leaf_keys = jax.random.split(worker_key, max(1, num_leaves))
    return jax.random.key_data(next_key), leaf_keys


def _mean_of(decode, gathered: Any, n: int, dtype: Any) -> jax.Array:
  """The average of the n gathered payloads decoded to float32.

  The payloads are decoded one worker at a time into one accumulator, so
  that decoding holds one float32 leaf, not n of them.
  """

  def worker(i):
    return decode(jax.tree.map(lambda a: a[i], gathered))

  total = lax.fori_loop(1, n, lambda i, acc: acc + worker(i), worker(0))
  return (total / n).astype(dtype)


def _exchange(compressor, payloads, like, axis_name, n):
  gathered = _all_gather(payloads, axis_name)
  return [
    _mean_of(
      lambda p, x=x: compressor.decompress(p, x.shape, jnp.float32),
      g,
      n,
      x.dtype,
    )
    for g, x in zip(gathered, like, strict=True)
  ]


def _saturate(p: jax.Array, dtype: Any) -> jax.Array:
  """Float32 ``p`` in ``dtype``, finite values clipped to its range.

  A finite sum must not reach the wire as inf; NaN and inf pass as they are.
  """
  if jnp.dtype(dtype).itemsize >= 4:
    return p.astype(dtype)
  big = float(jnp.finfo(dtype).max)
  return jnp.where(jnp.isfinite(p), jnp.clip(p, -big, big), p).astype(dtype)


def compressed_mean(
  compressor: cz.Compressor, axis_name: Hashable, *, key: Any = 0
) -> optax.GradientTransformationExtraArgs:
  r"""Averages the workers' updates through compressed payloads.

  .. math::
    u \leftarrow \frac1n \sum_{i=1}^n D\bigl(C_{k_i}(u_i)\bigr),

  where worker :math:`i` compresses its update :math:`u_i` with its own key
  :math:`k_i`, :math:`D` decodes and the payloads travel by all-gather.
  Keys: each step splits the state's key into ``(next, step)``; worker
  :math:`i` uses ``jax.random.split(jax.random.fold_in(step, i),
  num_leaves)[j]`` for the j-th leaf of the update (tree order), so workers
  draw independent roundings from one replicated key. With an unbiased
  compressor the result is an unbiased estimate of the mean update whose
  variance is at most :math:`\omega/n^2 \sum_i \|u_i\|^2`. On an axis of
  size one it is exactly ``compressor.decompress(compressor.compress(k,
  u))``; with `identity_compressor` it is ``lax.pmean(u, axis_name)``.
  Averaging happens in float32; the result has the update's dtype.

  Wire, per step and per worker for n workers: ``(n - 1) *
  compressor.tree_payload_bytes(updates)`` bytes received, and as many sent
  (ring all-gather, `Compressor.wire_bytes`); e.g. `natural_compressor`'s
  payload is ``d + ceil(d / 8)`` uint8 per leaf of d coordinates. Payloads
  are gathered, not reduced, so the traffic grows as ``n - 1``, whereas a
  float32 ring all-reduce moves ``2 (n - 1) / n * 4 d`` bytes each way
  (under ``8 d`` for any n). Compression saves bandwidth only while ``n <
  64 / b`` for b payload bits per float32 coordinate (``n < 2 B / P`` in
  general, B the uncompressed and P the payload bytes; sent plus received,
  the convention of `busiest_node_bytes`, gives the same crossover):
  natural compression (9 bits) beats the all-reduce for at most 7 workers
  (``64 / 9 ~ 7.1``; at n = 8 it moves ``7.9 d`` bytes against ``7 d``),
  natural dithering with 7 levels (4 bits) for at most 15. Every worker
  holds the n gathered payloads (``n * P`` bytes) and decodes them one at a
  time into a float32 accumulator: O(n d) time, one float32 leaf of memory
  beyond the payloads.

  Non-finite updates: the compressors never turn a NaN or inf into a finite
  value, so a non-finite update on one worker makes the average non-finite
  on every worker (NaN for `natural_compressor`).

  Args:
    compressor: a `Compressor`.
    axis_name: the mesh (or vmap) axis of the workers.
    key: an int seed or a PRNG key; the state holds it and splits it every
      step, identically on every worker. Two transforms built with the same
      key (the default 0 included) draw the same random bits step for step,
      so their roundings are correlated: give each its own key.

  Returns:
    An `optax.GradientTransformationExtraArgs` with a `CompressedMeanState`;
    place it first in a chain, before the optimizer.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_zoo
    >>> tx = optax.chain(
    ...     optax_zoo.compressed_mean(
    ...         optax_zoo.natural_compressor(), 'workers', key=0),
    ...     optax.sgd(0.1))
    >>> grads = jnp.array([[1.0, 2.0], [3.0, 4.0]])  # 2 workers
    >>> def step(g):
    ...   updates, _ = tx.update(g, tx.init(g))
    ...   return updates
    >>> updates = jax.vmap(step, axis_name='workers')(grads)
    >>> bool(jnp.all(updates[0] == updates[1]))  # all workers agree
    True

    The same code under `jax.shard_map`, one worker per device::

      mesh = jax.make_mesh((n,), ('workers',),
                           axis_types=(jax.sharding.AxisType.Auto,))
      state = tx.init(params)  # replicated: count and key only
      f = jax.shard_map(lambda g, s: tx.update(g[0], s), mesh=mesh,
                        in_specs=(P('workers'), P()), out_specs=(P(), P()))

  References:
    Horvath et al., Natural Compression for Distributed Deep Learning, 2019
    (arXiv:1905.10988): compressed worker-to-master messages; here every
    worker decodes all of them, with no master.
  """
  _check_compressor(compressor)
  _check_axis_name(axis_name)
  keys = _Keys(key)

  def init_fn(params):
    del params
    return CompressedMeanState(
      count=jnp.zeros([], jnp.int32), rng_key=keys.init()
    )

  def update_fn(updates, state, params=None, **extra):
    del params, extra
    n = _axis_size(axis_name)
    leaves, treedef = jax.tree.flatten(updates)
    next_key, leaf_keys = keys.step(state.rng_key, axis_name, len(leaves))
    payloads = [
      compressor.compress(k, x) for k, x in zip(leaf_keys, leaves, strict=False)
    ]
    means = _exchange(compressor, payloads, leaves, axis_name, n)
    return jax.tree.unflatten(treedef, means), CompressedMeanState(
      count=optax.safe_increment(state.count), rng_key=next_key
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def error_feedback(
  compressor: cz.Compressor,
  axis_name: Hashable,
  *,
  key: Any = 0,
  residual_dtype: Any = jnp.float32,
) -> optax.GradientTransformationExtraArgs:
  r"""Compressed averaging with error feedback: the residual stays local.

  Each worker adds its residual to its update, sends the compression of
  the sum and keeps what the compression lost (Seide et al. 2014's 1-bit
  SGD error feedback; EF-SGD, Karimireddy et al. 2019, Algorithm 2):

  .. math::
    p_i = u_i + e_i,\quad
    e_i \leftarrow p_i - D(C(p_i)),\quad
    u \leftarrow \frac1n \sum_i D(C(p_i)).

  Nothing the compressor drops is lost: over T steps the sent values plus
  the final residual add up to the sum of the updates, which is what makes
  biased compressors (`top_k_compressor`, unscaled `random_k_compressor`)
  converge. The residual is of the update before the learning rate (as in
  Seide et al.); Karimireddy et al. feed back the error of the scaled step,
  which is the same for a constant learning rate. The residual is per
  worker: under `jax.shard_map` its state leaves are sharded over
  ``axis_name``, not replicated.

  The compressor must be a contraction, :math:`\omega < 1` for every leaf
  (``compressor.variance_factor(d)``; :math:`1 - \delta` in Karimireddy et
  al.): with :math:`\omega \ge 1` the residual can grow without bound
  (the scaled `random_k_compressor`, :math:`\omega = d/k - 1`, makes it
  grow geometrically). Such a compressor raises a ValueError when the state
  is initialised or the update traced, rather than being rescaled by
  :math:`1/(1 + \omega)` behind the user's back; use
  ``random_k_compressor(k, scaled=False)``, `top_k_compressor`,
  `natural_compressor` or, for large leaves, `natural_dithering_compressor`
  with more levels (its :math:`\omega` reaches 1 at 14336 coordinates with
  the default 7 levels).

  The sum :math:`p_i` is formed in float32 and compressed in the update's
  dtype, so the payload is the one `Compressor.payload_bytes` documents for
  that dtype; a finite sum beyond that dtype's range (float16's 65504) is
  sent saturated at its largest finite value and the excess stays in the
  residual. What a low-precision payload cannot hold (bfloat16 rounding
  included) stays in the float32 residual too.

  Non-finite updates: a NaN or inf in a worker's update is sent (the
  average becomes non-finite on every worker, as in `compressed_mean`) and
  leaves that worker's residual NaN for good, in those coordinates (the
  whole leaf for a compressor that poisons it, as natural dithering does):
  every later average is NaN there too, on every worker. Nothing here
  skips such a step; `optax.apply_if_finite` around this transform does
  not either, since it checks each worker's own update and workers would
  part ways around the all-gather. Restore the state (e.g. from a
  checkpoint, or ``init`` again) after a non-finite step.

  Wire: as `compressed_mean`, ``(n - 1) * compressor.tree_payload_bytes``
  bytes received (and as many sent) per worker per step, the payload in the
  update's dtype.

  Args:
    compressor: a `Compressor` with ``variance_factor(d) < 1`` for the
      leaves it is used on.
    axis_name: the mesh (or vmap) axis of the workers.
    key: an int seed or a PRNG key, as in `compressed_mean` (give each
      transform its own).
    residual_dtype: dtype of the residual; float32 by default so that small
      errors accumulate even for bfloat16 updates.

  Returns:
    An `optax.GradientTransformationExtraArgs` with an `ErrorFeedbackState`;
    place it first in a chain, before the optimizer.

  Example:
    >>> import jax, jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.error_feedback(
    ...     optax_zoo.top_k_compressor(1), 'workers')
    >>> g = jnp.array([[3.0, 1.0]])  # one worker
    >>> def two_steps(g):
    ...   s = tx.init(g)
    ...   u1, s = tx.update(g, s)
    ...   u2, s = tx.update(g, s)
    ...   return u1, u2, s.residual
    >>> u1, u2, residual = jax.vmap(two_steps, axis_name='workers')(g)
    >>> u1, u2  # the 1 waits in the residual until it has grown to 2
    (Array([[3., 0.]], dtype=float32), Array([[3., 0.]], dtype=float32))
    >>> residual
    Array([[0., 2.]], dtype=float32)

  References:
    Seide, Fu, Droppo, Li & Yu, 1-Bit Stochastic Gradient Descent and its
    Application to Data-Parallel Distributed Training of Speech DNNs,
    Interspeech 2014; Karimireddy, Rebjock, Stich & Jaggi, Error Feedback
    Fixes SignSGD and other Gradient Compression Schemes, ICML 2019
    (arXiv:1901.09847).
  """
  _check_compressor(compressor)
  _check_axis_name(axis_name)
  v.check_float_dtype('residual_dtype', residual_dtype, allow_none=False)
  keys = _Keys(key)

  def check_contraction(tree):
    for leaf in jax.tree.leaves(tree):
      d = math.prod(jnp.shape(leaf))
      omega = compressor.variance_factor(d) if d else 0.0
      if not omega < 1:
        raise ValueError(
          f'`compressor` of `error_feedback` must be a contraction, variance '
          f'factor < 1 for every leaf; {compressor.name} has {omega:.4g} for '
          f'a leaf of {d} coordinates, with which error feedback can diverge. '
          'Use top_k_compressor, random_k_compressor(k, scaled=False), '
          'natural_compressor, or natural_dithering_compressor with more '
          'levels.'
        )

  def init_fn(params):
    check_contraction(params)
    return ErrorFeedbackState(
      count=jnp.zeros([], jnp.int32),
      rng_key=keys.init(),
      residual=jax.tree.map(
        lambda p: jnp.zeros(jnp.shape(p), residual_dtype), params
      ),
    )

  def update_fn(updates, state, params=None, **extra):
    del params, extra
    n = _axis_size(axis_name)
    check_contraction(updates)
    leaves, treedef = jax.tree.flatten(updates)
    residuals = treedef.flatten_up_to(state.residual)
    next_key, leaf_keys = keys.step(state.rng_key, axis_name, len(leaves))
    payloads, new_residuals = [], []
    for k, u, e in zip(leaf_keys, leaves, residuals, strict=True):
      p = e.astype(jnp.float32) + u.astype(jnp.float32)
      payload = compressor.compress(k, _saturate(p, u.dtype))
      sent = compressor.decompress(payload, p.shape, jnp.float32)
      payloads.append(payload)
      new_residuals.append((p - sent).astype(e.dtype))
    means = _exchange(compressor, payloads, leaves, axis_name, n)
    return jax.tree.unflatten(treedef, means), ErrorFeedbackState(
      count=optax.safe_increment(state.count),
      rng_key=next_key,
      residual=jax.tree.unflatten(treedef, new_residuals),
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_adacomp(
  axis_name: Hashable,
  *,
  bin_size: int = 50,
  max_per_bin: int = 4,
  residual_dtype: Any = jnp.float32,
) -> optax.GradientTransformationExtraArgs:
  r"""AdaComp: bin-wise selection by local maximum with residue feedback.

  Chen et al. (2018), Algorithm 1, per leaf (flattened, cut into bins of
  :math:`L_T` = ``bin_size`` coordinates, the last one padded with zeros):

  .. math::
    G = R + \Delta W,\quad H = G + \Delta W,\quad
    g^{\max}_b = \max_{i \in b} |G_i|,\quad
    S = \{i : |H_i| \ge g^{\max}_{b(i)}\},

  the selected coordinates are sent ternary-quantized, :math:`\hat G_i =
  \operatorname{sign}(G_i)\, \sigma` for :math:`i \in S` with one scale per
  leaf, :math:`\sigma = \operatorname{mean}_b g^{\max}_b`, and the residue
  keeps the rest, :math:`R \leftarrow G - \hat G`. The workers' :math:`\hat
  G` are all-gathered, decoded and averaged. Biased and deterministic.

  Fixed payload, so that it can be all-gathered: ``max_per_bin`` slots per
  bin. When more coordinates of a bin are selected, the ones with the
  largest :math:`|H|` are sent and the others stay in the residue (a
  deviation that only delays them); with ``max_per_bin >= bin_size`` it is
  the paper's rule exactly. Coordinates with :math:`G_i = 0` are never sent
  (ternary quantization would send 0 for them: same update). Per leaf of d
  coordinates with :math:`B = \lceil d / L_T \rceil` bins the payload is
  ``'scale'`` float32 ``()``, ``'index'`` the local indices
  (:math:`B \times` ``max_per_bin``; uint8 for ``bin_size`` < 256, uint16
  below 65536, else uint32; the value ``bin_size`` marks an empty slot) and
  ``'sign'`` packed sign bits (uint8, ``ceil(B * max_per_bin / 8)``): with
  the defaults 4 + 4.5 B bytes, a compression rate of 44x against float32.

  We read the scale as the mean of the bins' local maxima, as does the only
  public transcription we found (an MXNet contrib operator); we read the
  paper's settings as :math:`L_T = 50` for convolutional and 500 for
  fully-connected and recurrent layers (the default here is 50).

  A NaN or inf in a leaf makes its scale non-finite and the leaf decodes to
  NaN on every worker (and stays in the residue).

  Wire, per step and per worker for n workers: ``(n - 1)`` times the
  payload bytes above, summed over leaves.

  Args:
    axis_name: the mesh (or vmap) axis of the workers.
    bin_size: :math:`L_T`, coordinates per bin, an int >= 1.
    max_per_bin: payload slots per bin, an int >= 1.
    residual_dtype: dtype of the residue (float32 by default).

  Returns:
    An `optax.GradientTransformationExtraArgs` with an `AdaCompState`;
    place it first in a chain, before the optimizer.

  Example:
    >>> import jax, jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.scale_by_adacomp('workers', bin_size=4)
    >>> g = jnp.array([[0.5, -4.0, 1.0, 3.5]])  # one worker
    >>> def step(g):
    ...   updates, state = tx.update(g, tx.init(g))
    ...   return updates, state.residue
    >>> updates, residue = jax.vmap(step, axis_name='workers')(g)
    >>> updates  # |H| = |2 g| >= max |G| = 4 selects -4 and 3.5; scale 4
    Array([[ 0., -4.,  0.,  4.]], dtype=float32)
    >>> residue
    Array([[ 0.5,  0. ,  1. , -0.5]], dtype=float32)

  References:
    Chen, Choi, Brand, Agrawal, Zhang & Gopalakrishnan, AdaComp: Adaptive
    Residual Gradient Compression for Data-Parallel Distributed Training,
    AAAI 2018 (arXiv:1712.02679).
  """
  _check_axis_name(axis_name)
  v.check_int('bin_size', bin_size, minimum=1, maximum=2**32 - 2)
  v.check_int('max_per_bin', max_per_bin, minimum=1)
  v.check_float_dtype('residual_dtype', residual_dtype, allow_none=False)
  bin_size, max_per_bin = int(bin_size), int(max_per_bin)

  def init_fn(params):
    return AdaCompState(
      count=jnp.zeros([], jnp.int32),
      residue=jax.tree.map(
        lambda p: jnp.zeros(jnp.shape(p), residual_dtype), params
      ),
    )

  def update_fn(updates, state, params=None, **extra):
    del params, extra
    n = _axis_size(axis_name)
    leaves, treedef = jax.tree.flatten(updates)
    residues = treedef.flatten_up_to(state.residue)
    payloads, new_residues = [], []
    for u, r in zip(leaves, residues, strict=True):
      du = jnp.reshape(u, (-1,)).astype(jnp.float32)
      g = jnp.reshape(r, (-1,)).astype(jnp.float32) + du
      payload, sent = cz.adacomp_encode(g, g + du, bin_size, max_per_bin)
      payloads.append(payload)
      new_residues.append((g - sent).reshape(r.shape).astype(r.dtype))
    gathered = _all_gather(payloads, axis_name)
    means = [
      _mean_of(
        lambda p, d=u.size: cz.adacomp_decode(p, d, bin_size), g, n, u.dtype
      ).reshape(u.shape)
      for g, u in zip(gathered, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, means), AdaCompState(
      count=optax.safe_increment(state.count),
      residue=jax.tree.unflatten(treedef, new_residues),
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def natural_compression(
  learning_rate: optax.ScalarOrSchedule,
  axis_name: Hashable,
  *,
  key: Any = 0,
  momentum: jax.typing.ArrayLike | None = None,
  nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Data-parallel SGD whose gradients travel natural-compressed.

  ``optax.chain(compressed_mean(natural_compressor(), axis_name, key=key),
  sgd(learning_rate, momentum, nesterov))``:

  .. math::
    g = \frac1n \sum_i C_{\text{nat}}(g_i),\quad
    \Delta = -\eta\, \mathrm{SGD}(g).

  Each payload is 9 bits per coordinate (`natural_compressor`) against 32
  for float32; the averaged gradient is unbiased with variance factor 1/8
  per worker, so SGD's convergence theory holds with the gradient variance
  inflated by at most that factor (Horvath et al. 2019).

  Wire, per step and per worker for n workers: ``(n - 1) * (d + ceil(d /
  8))`` bytes received (and as many sent) per leaf of d coordinates. The
  payloads are all-gathered, not reduced (the paper sends them to a
  master), so this beats a float32 ring all-reduce's ``8 d (n - 1) / n``
  only for n < 64/9, at most 7 workers; beyond that it moves more bytes
  (see `compressed_mean`).

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    axis_name: the mesh (or vmap) axis of the workers.
    key: an int seed or a PRNG key for the rounding (an int may also be
      injected with `optax.inject_hyperparams`); give each compressed
      transform its own key, or their roundings are correlated.
    momentum: SGD momentum in [0, 1), or None.
    nesterov: Nesterov momentum (needs ``momentum``).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax, jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.natural_compression(0.5, 'workers', key=0)
    >>> g = jnp.array([[1.0, -2.0]])  # one worker; powers of two are exact
    >>> jax.vmap(lambda g: tx.update(g, tx.init(g))[0],
    ...          axis_name='workers')(g)
    Array([[-0.5,  1. ]], dtype=float32)

  References:
    Horvath et al., Natural Compression for Distributed Deep Learning, 2019
    (arXiv:1905.10988).
  """
  return optax.chain(
    compressed_mean(cz.natural_compressor(), axis_name, key=key),
    adaptive.sgd(learning_rate, momentum, nesterov),
  )


def natural_dithering(
  learning_rate: optax.ScalarOrSchedule,
  axis_name: Hashable,
  *,
  levels: int = 7,
  norm: float = 2.0,
  key: Any = 0,
  momentum: jax.typing.ArrayLike | None = None,
  nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Data-parallel SGD whose gradients travel natural-dithered.

  ``optax.chain(compressed_mean(natural_dithering_compressor(levels,
  norm=norm), axis_name, key=key), sgd(learning_rate, momentum,
  nesterov))``:

  .. math::
    g = \frac1n \sum_i C_{\text{nd}}(g_i),\quad
    \Delta = -\eta\, \mathrm{SGD}(g).

  Unbiased; ``ceil(log2(levels + 1)) + 1`` bits per coordinate plus a
  float32 norm per leaf (see `natural_dithering_compressor` for the
  variance factor).

  Wire, per step and per worker for n workers: ``(n - 1) * (4 + ceil(d b /
  8) + ceil(d / 8))`` bytes received (and as many sent) per leaf of d
  coordinates, ``b = ceil(log2(levels + 1))``: fewer than a float32 ring
  all-reduce only for ``n < 64 / (b + 1)`` on large leaves (at most 15
  workers with the default 7 levels; see `compressed_mean`).

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    axis_name: the mesh (or vmap) axis of the workers.
    levels: the number of nonzero levels, an int in [1, 126].
    norm: 2.0 or ``math.inf``.
    key: an int seed or a PRNG key for the rounding; give each compressed
      transform its own key, or their roundings are correlated.
    momentum: SGD momentum in [0, 1), or None.
    nesterov: Nesterov momentum (needs ``momentum``).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax, jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.natural_dithering(1.0, 'workers', levels=3)
    >>> g = jnp.array([[0.0, 3.0, -4.0]])  # norm 5
    >>> u = jax.vmap(lambda g: tx.update(g, tx.init(g))[0],
    ...              axis_name='workers')(g)
    >>> bool(jnp.all(jnp.isin(jnp.abs(u), jnp.array([0, 1.25, 2.5, 5.0]))))
    True

  References:
    Horvath et al., Natural Compression for Distributed Deep Learning, 2019
    (arXiv:1905.10988).
  """
  return optax.chain(
    compressed_mean(
      cz.natural_dithering_compressor(levels, norm=norm), axis_name, key=key
    ),
    adaptive.sgd(learning_rate, momentum, nesterov),
  )


def adacomp(
  learning_rate: optax.ScalarOrSchedule,
  axis_name: Hashable,
  *,
  bin_size: int = 50,
  max_per_bin: int = 4,
  momentum: jax.typing.ArrayLike | None = None,
  nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Data-parallel SGD with AdaComp-compressed gradients.

  ``optax.chain(scale_by_adacomp(axis_name, bin_size=bin_size,
  max_per_bin=max_per_bin), sgd(learning_rate, momentum, nesterov))``: the
  paper compresses the gradient and the optimizer (SGD with momentum or
  Adam) runs on the averaged decoded gradients.

  .. math::
    g = \frac1n \sum_i \hat G_i,\quad \Delta = -\eta\, \mathrm{SGD}(g).

  Wire, per step and per worker for n workers: ``(n - 1)`` AdaComp payloads
  (see `scale_by_adacomp`).

  Args:
    learning_rate: step size, a float >= 0 or a schedule.
    axis_name: the mesh (or vmap) axis of the workers.
    bin_size: :math:`L_T`, coordinates per bin, an int >= 1.
    max_per_bin: payload slots per bin, an int >= 1.
    momentum: SGD momentum in [0, 1), or None.
    nesterov: Nesterov momentum (needs ``momentum``).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> import jax, jax.numpy as jnp, optax_zoo
    >>> tx = optax_zoo.adacomp(1.0, 'workers', bin_size=2)
    >>> g = jnp.array([[1.0, -3.0, 2.0, 0.5]])
    >>> jax.vmap(lambda g: tx.update(g, tx.init(g))[0],
    ...          axis_name='workers')(g)
    Array([[-0. ,  2.5, -2.5, -0. ]], dtype=float32)

  References:
    Chen et al., AdaComp: Adaptive Residual Gradient Compression for
    Data-Parallel Distributed Training, AAAI 2018 (arXiv:1712.02679).
  """
  return optax.chain(
    scale_by_adacomp(axis_name, bin_size=bin_size, max_per_bin=max_per_bin),
    adaptive.sgd(learning_rate, momentum, nesterov),
  )
