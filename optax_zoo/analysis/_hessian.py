"""Hessian spectra: power iteration, Lanczos, Hutchinson and SLQ densities."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optax_zoo._src import validation as v
from optax_zoo.analysis._operators import make_operator

__all__ = [
  'Eigenpairs',
  'SpectralDensity',
  'TraceEstimate',
  'hessian_trace',
  'spectral_density',
  'top_hessian_eigenvalues',
]


class Eigenpairs(NamedTuple):
  """Eigenvalues and eigenvectors of a curvature operator.

  Attributes:
    eigenvalues: shape ``(k,)``, ordered by decreasing magnitude.
    eigenvectors: the parameter pytree with a leading axis of size ``k``;
      each eigenvector has unit Euclidean norm over all leaves.
    num_matvecs: curvature-vector products spent.
  """

  eigenvalues: jax.Array
  eigenvectors: Any
  num_matvecs: int


class TraceEstimate(NamedTuple):
  """A Hutchinson trace estimate.

  Attributes:
    trace: the mean of the probes' quadratic forms.
    stderr: its standard error, ``std(samples, ddof=1) / sqrt(n)`` (NaN for
      one probe).
    samples: the quadratic forms :math:`z_i^\\top H z_i`, shape ``(n,)``.
  """

  trace: jax.Array
  stderr: jax.Array
  samples: jax.Array


class SpectralDensity(NamedTuple):
  """A smoothed eigenvalue density from stochastic Lanczos quadrature.

  Attributes:
    grid: the points where the density is evaluated, shape ``(G,)``.
    density: the density on ``grid``, shape ``(G,)``; it integrates to 1
      when the grid covers the spectrum with a margin of a few ``sigma``.
    nodes: the Ritz values of each probe, shape ``(num_probes, steps)``.
    weights: their quadrature weights (each row sums to 1), same shape.
    sigma: the Gaussian broadening's standard deviation.
  """

  grid: jax.Array
  density: jax.Array
  nodes: jax.Array
  weights: jax.Array
  sigma: float


def _normalize(x: jax.Array) -> jax.Array:
  return x / jnp.linalg.norm(x)


def _tridiagonal_eigh(alpha: np.ndarray, beta: np.ndarray):
  """Eigenpairs of the Lanczos tridiagonal matrix, in NumPy.

  Outside jit: the matrix's size is the number of steps taken, and eager JAX
  would compile each size.
  """
  t = np.diag(alpha) + np.diag(beta[:-1], 1) + np.diag(beta[:-1], -1)
  return np.linalg.eigh(t)


def _lanczos_step(matvec, operands, basis, j, scale):
  """Lanczos step ``j`` with full reorthogonalization.

  ``basis`` holds the orthonormal vectors as rows, zero past row ``j``;
  ``scale`` is the largest ``|alpha|`` of the earlier steps.
  Returns the basis with row ``j + 1`` set (zero if the Krylov space became
  invariant, when ``beta_j`` is at rounding level), ``alpha_j``, ``beta_j``
  and whether the space is invariant.
  """
  tiny = 100 * jnp.finfo(basis.dtype).eps
  q = basis[j]
  w = matvec(operands, q)
  a = jnp.dot(q, w)
  # Twice is enough (Kahan's "twice is enough" rule) to keep the basis
  # orthogonal to rounding level, which plain three-term Lanczos is not.
  # (basis @ w) @ basis runs twice as fast as basis.T @ (basis @ w) on
  # XLA:CPU.
  w = w - (basis @ w) @ basis
  w = w - (basis @ w) @ basis
  b = jnp.linalg.norm(w)
  invariant = b <= tiny * jnp.maximum(jnp.maximum(scale, jnp.abs(a)), b)
  nxt = jnp.where(invariant, 0.0, w / jnp.where(invariant, 1.0, b))
  return basis.at[j + 1].set(nxt, mode='drop'), a, b, invariant


def _lanczos_basis(v0, num_steps):
  return jnp.zeros((num_steps, v0.shape[0]), v0.dtype).at[0].set(_normalize(v0))


def _lanczos(matvec, operands, v0, num_steps):
  """``num_steps`` Lanczos steps from ``v0``, stopping early if invariant.

  Returns:
    ``(alpha, beta, basis, steps)``: the tridiagonal matrix's diagonal and
    off-diagonal (``beta[j]`` couples steps ``j`` and ``j + 1``), the
    orthonormal basis as rows and the number of steps taken. Unused rows of
    the basis and coefficients stay zero.
  """

  def body(carry):
    j, basis, alpha, beta, _ = carry
    scale = jnp.max(jnp.abs(alpha))
    basis, a, b, invariant = _lanczos_step(matvec, operands, basis, j, scale)
    return j + 1, basis, alpha.at[j].set(a), beta.at[j].set(b), invariant

  def cond(carry):
    j, *_, done = carry
    return (j < num_steps) & ~done

  zeros = jnp.zeros(num_steps, v0.dtype)
  init = (0, _lanczos_basis(v0, num_steps), zeros, zeros, False)
  steps, basis, alpha, beta, _ = jax.lax.while_loop(cond, body, init)
  return alpha, beta, basis, steps


_lanczos_basis_jit = jax.jit(_lanczos_basis, static_argnums=1)


@functools.partial(jax.jit, static_argnums=1)
def _grow_jit(basis, rows):
  pad = jnp.zeros((rows - basis.shape[0], basis.shape[1]), basis.dtype)
  return jnp.concatenate([basis, pad])


@functools.partial(jax.jit, static_argnums=(0,), donate_argnums=(2,))
def _lanczos_step_jit(matvec, operands, basis, j, scale):
  return _lanczos_step(matvec, operands, basis, j, scale)


def _lanczos_until_converged(matvec, operands, v0, num_steps, k, tol):
  """Lanczos that stops once the ``k`` top Ritz values settle.

  After step ``j`` it stops when the ``k`` Ritz values of largest magnitude
  all moved by less than ``tol`` relative to the previous step (PyHessian's
  criterion for power iteration), when the Krylov space is invariant, or
  after ``num_steps`` steps. The loop runs on the host around one jitted
  step: the Ritz values of the small tridiagonal matrix cost microseconds in
  LAPACK, while inside a jitted loop the padded matrix made each step cost
  several Hessian-vector products. The basis starts with 16 rows and doubles
  when full (one compilation per size, cached): reorthogonalizing against
  all ``num_steps`` rows from the start cost as much as the product itself.

  Returns:
    ``(alpha, beta, basis)`` of the steps taken, as NumPy arrays.
  """
  basis = _lanczos_basis_jit(v0, min(16, num_steps))
  alpha, beta = [], []
  previous = np.zeros(k)
  for j in range(num_steps):
    rows = basis.shape[0]
    if j + 1 >= rows and rows < num_steps:
      basis = _grow_jit(basis, min(2 * rows, num_steps))
    scale = max(map(abs, alpha), default=0.0)
    basis, a, b, invariant = _lanczos_step_jit(
      matvec, operands, basis, j, scale
    )
    alpha.append(float(a))
    beta.append(float(b))
    if bool(invariant):
      break
    theta = _tridiagonal_eigh(np.asarray(alpha), np.asarray(beta))[0]
    top = np.zeros(k)
    ranked = theta[np.argsort(-np.abs(theta))[:k]]
    top[: ranked.size] = ranked
    change = np.abs(top - previous) / (np.abs(previous) + 1e-6)
    if j + 1 > k and np.all(change < tol):
      break
    previous = top
  steps = len(alpha)
  return np.asarray(alpha), np.asarray(beta), np.asarray(basis)[:steps]


@functools.partial(jax.jit, static_argnums=(0,))
def _power(matvec, operands, v0, found, tol, max_iters):
  """PyHessian's power iteration, deflated by projecting out ``found``.

  Stops when two successive Rayleigh quotients agree to
  ``|new - old| / (|old| + 1e-6) < tol``, as PyHessian does.
  """

  def body(carry):
    i, q, value, _ = carry
    q = _normalize(q - (found @ q) @ found)
    hq = matvec(operands, q)
    new = jnp.dot(q, hq)
    done = (i > 0) & (jnp.abs(new - value) / (jnp.abs(value) + 1e-6) < tol)
    return i + 1, _normalize(hq), new, done

  def cond(carry):
    i, *_, done = carry
    return (i < max_iters) & ~done

  init = (0, _normalize(v0), jnp.zeros((), v0.dtype), False)
  iters, q, value, _ = jax.lax.while_loop(cond, body, init)
  return value, q, iters


def _check_key(key: Any) -> None:
  if not isinstance(key, jax.Array):
    raise ValueError(f'`key` must be a jax.random key, got {key!r}.')


def top_hessian_eigenvalues(
  fun: Callable[..., jax.Array],
  params: Any,
  *,
  key: jax.Array,
  k: int = 1,
  method: str = 'lanczos',
  tol: float = 1e-3,
  max_iters: int = 100,
  batches: Iterable[Any] | None = None,
  ggn_loss_fn: Callable[..., jax.Array] | None = None,
) -> Eigenpairs:
  """The ``k`` Hessian eigenvalues of largest magnitude, and eigenvectors.

  ``method='power'`` is PyHessian's power iteration: for each eigenvalue in
  turn, iterate :math:`q \\leftarrow Hq / \\|Hq\\|` from a Gaussian start,
  projecting out the eigenvectors already found (deflation), until two
  successive Rayleigh quotients :math:`q^\\top H q` agree to a relative
  ``tol`` (PyHessian's criterion) or ``max_iters`` products.

  ``method='lanczos'`` runs Lanczos with full reorthogonalization and returns
  the Ritz pairs of largest magnitude once each Ritz value moves by less
  than a relative ``tol`` in one step (the same criterion) or after
  ``max_iters`` products. It needs far fewer products than power iteration
  when eigenvalues are close, and all ``k`` pairs come from one run.

  The power loop runs inside one jitted `lax.while_loop` on the flattened
  parameter vector; the Lanczos loop runs one jitted step per product and
  checks convergence on the host.

  Args:
    fun: ``fun(params) -> scalar``, or ``fun(params, batch) -> scalar`` with
      ``batches``; with ``ggn_loss_fn`` it returns model outputs instead.
    params: any pytree of arrays (for example ``nnx.split(model,
      nnx.Param, ...)[1]``).
    key: a `jax.random.key` for the starting vectors.
    k: how many eigenpairs, in [1, number of parameters].
    method: ``'power'`` or ``'lanczos'``.
    tol: the relative convergence tolerance, > 0.
    max_iters: the most curvature-vector products per eigenvalue for
      ``'power'`` and in all for ``'lanczos'`` (capped at the number of
      parameters), >= 1.
    batches: an iterable of batches; the curvature is then the batch-size
      weighted average of the per-batch curvatures (the data-set Hessian).
    ggn_loss_fn: use the generalized Gauss-Newton matrix of
      ``ggn_loss_fn(fun(params, *batch), *batch)`` instead of the Hessian
      (see `ggn_vp`).

  Returns:
    An `Eigenpairs` tuple.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.analysis import top_hessian_eigenvalues
    >>> f = lambda p: 0.5 * jnp.sum(jnp.array([3.0, 2.0, 1.0]) * p['w'] ** 2)
    >>> out = top_hessian_eigenvalues(
    ...   f, {'w': jnp.ones(3)}, key=jax.random.key(0), k=2)
    >>> out.eigenvalues.round(4)
    Array([3., 2.], dtype=float32)
    >>> out.eigenvectors['w'].shape
    (2, 3)

  References:
    Yao et al., `PyHessian: Neural Networks Through the Lens of the Hessian
    <https://arxiv.org/abs/1912.07145>`_, 2020.

    Golub and Van Loan, Matrix Computations, 4th ed., section 10.1.
  """
  v.check_choice('method', method, ('power', 'lanczos'))
  v.check_positive('tol', tol)
  v.check_int('max_iters', max_iters, minimum=1)
  _check_key(key)
  op = make_operator(fun, params, batches=batches, ggn_loss_fn=ggn_loss_fn)
  v.check_int('k', k, minimum=1, maximum=op.dim)
  flat = op.flat_params
  if method == 'power':
    found = jnp.zeros((k, op.dim), flat.dtype)
    values, total = [], 0
    for i, subkey in enumerate(jax.random.split(key, k)):
      start = jax.random.normal(subkey, flat.shape, flat.dtype)
      value, q, iters = _power(
        op.matvec, op.operands, start, found, tol, max_iters
      )
      found = found.at[i].set(q)
      values.append(value)
      total += int(iters)
    values = jnp.stack(values)
    order = jnp.argsort(-jnp.abs(values))
    vectors = found[order]
    values = values[order]
  else:
    steps_max = min(max_iters, op.dim)
    start = jax.random.normal(key, flat.shape, flat.dtype)
    alpha, beta, basis = _lanczos_until_converged(
      op.matvec, op.operands, start, steps_max, k, tol
    )
    total = alpha.size
    theta, s = _tridiagonal_eigh(alpha, beta)
    top = np.argsort(-np.abs(theta))[: min(k, total)]
    values = jnp.asarray(theta[top], flat.dtype)
    ritz = basis.T @ s[:, top]
    vectors = jnp.asarray((ritz / np.linalg.norm(ritz, axis=0)).T, flat.dtype)
  return Eigenpairs(values, jax.vmap(op.unravel)(vectors), total)


@functools.partial(jax.jit, static_argnums=(0,))
def _quadratic_forms(matvec, operands, probes):
  return jax.lax.map(lambda z: jnp.dot(z, matvec(operands, z)), probes)


def hessian_trace(
  fun: Callable[..., jax.Array],
  params: Any,
  *,
  key: jax.Array,
  num_samples: int = 100,
  batches: Iterable[Any] | None = None,
  ggn_loss_fn: Callable[..., jax.Array] | None = None,
) -> TraceEstimate:
  """Hutchinson's estimate of the Hessian trace, with its standard error.

  .. math::
    \\operatorname{tr} H = \\mathbb{E}_z[z^\\top H z], \\qquad
    z_i \\in \\{-1, +1\\} \\text{ uniformly (Rademacher)},

  averaged over ``num_samples`` independent probes. Rademacher probes have
  the smallest variance of any i.i.d. probe distribution,
  :math:`2 \\sum_{i \\ne j} H_{ij}^2`. PyHessian instead draws probes until
  the running mean moves by less than a relative ``tol``; a fixed count
  with a standard error says how far to trust the number.

  Args:
    fun: as in `top_hessian_eigenvalues`.
    params: any pytree of arrays.
    key: a `jax.random.key` for the probes.
    num_samples: the number of probes, >= 1.
    batches: as in `top_hessian_eigenvalues`.
    ggn_loss_fn: as in `top_hessian_eigenvalues`.

  Returns:
    A `TraceEstimate`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.analysis import hessian_trace
    >>> f = lambda p: 0.5 * jnp.sum(jnp.array([3.0, 2.0, 1.0]) * p ** 2)
    >>> est = hessian_trace(f, jnp.ones(3), key=jax.random.key(0),
    ...                     num_samples=10)
    >>> float(est.trace), float(est.stderr)  # exact for a diagonal Hessian
    (6.0, 0.0)

  References:
    Hutchinson, `A stochastic estimator of the trace of the influence matrix
    for Laplacian smoothing splines
    <https://doi.org/10.1080/03610919008812866>`_, 1990.
  """
  v.check_int('num_samples', num_samples, minimum=1)
  _check_key(key)
  op = make_operator(fun, params, batches=batches, ggn_loss_fn=ggn_loss_fn)
  flat = op.flat_params
  probes = jax.random.rademacher(key, (num_samples, op.dim), flat.dtype)
  samples = _quadratic_forms(op.matvec, op.operands, probes)
  stderr = (
    jnp.std(samples, ddof=1) / math.sqrt(num_samples)
    if num_samples > 1
    else jnp.array(jnp.nan, flat.dtype)
  )
  return TraceEstimate(jnp.mean(samples), stderr, samples)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _slq_coefficients(matvec, operands, probes, num_steps):
  def one(probe):
    alpha, beta, _, steps = _lanczos(matvec, operands, probe, num_steps)
    return alpha, beta, steps

  return jax.vmap(one)(probes)


def _gauss_quadrature(alpha: np.ndarray, beta: np.ndarray, steps: np.ndarray):
  """Gauss quadrature nodes and weights of each probe's tridiagonal.

  A probe whose Krylov space became invariant early has fewer nodes; its
  row is padded with copies of its first node at weight zero.
  """
  nodes = np.zeros(alpha.shape)
  weights = np.zeros(alpha.shape)
  for i, (a, b, n) in enumerate(zip(alpha, beta, steps, strict=True)):
    theta, s = _tridiagonal_eigh(a[:n], b[:n])
    nodes[i] = theta[0]
    nodes[i, :n] = theta
    weights[i, :n] = s[0] ** 2
  return nodes, weights


def spectral_density(
  fun: Callable[..., jax.Array],
  params: Any,
  *,
  key: jax.Array,
  num_probes: int = 1,
  lanczos_steps: int = 80,
  grid: jax.Array | int = 1000,
  sigma: float | None = None,
  batches: Iterable[Any] | None = None,
  ggn_loss_fn: Callable[..., jax.Array] | None = None,
) -> SpectralDensity:
  """The Hessian's eigenvalue density by stochastic Lanczos quadrature.

  For a unit probe :math:`q`, ``m`` Lanczos steps give a tridiagonal
  :math:`T = S \\Theta S^\\top` whose Ritz values :math:`\\theta_j` and
  weights :math:`w_j = S_{1j}^2` are an ``m``-point Gauss quadrature of the
  spectral measure :math:`q^\\top \\delta(\\lambda - H) q`. Averaged over
  Gaussian probes and broadened by a Gaussian of width :math:`\\sigma`:

  .. math::
    \\phi(t) = \\frac{1}{P} \\sum_{p=1}^{P} \\sum_{j=1}^{m} w^{(p)}_j\\,
    \\mathcal{N}(t;\\, \\theta^{(p)}_j, \\sigma^2).

  Args:
    fun: as in `top_hessian_eigenvalues`.
    params: any pytree of arrays.
    key: a `jax.random.key` for the probes.
    num_probes: the number of probes ``P``, >= 1 (PyHessian's ``n_v``).
    lanczos_steps: Lanczos steps ``m`` per probe, >= 1 (capped at the
      number of parameters); the probes run vmapped.
    grid: the points to evaluate the density at, or how many points to
      spread over the Ritz values' range plus ``5 sigma`` on each side.
    sigma: the broadening, > 0; default 1% of the Ritz values' range.
    batches: as in `top_hessian_eigenvalues`.
    ggn_loss_fn: as in `top_hessian_eigenvalues`.

  Returns:
    A `SpectralDensity`; plot it with ``optax_zoo.analysis.plotting``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.analysis import spectral_density
    >>> f = lambda p: 0.5 * jnp.sum(jnp.arange(1.0, 9.0) * p ** 2)
    >>> sd = spectral_density(f, jnp.ones(8), key=jax.random.key(0))
    >>> dx = sd.grid[1] - sd.grid[0]
    >>> round(float(jnp.sum(sd.density) * dx), 3)
    1.0

  References:
    Ghorbani, Krishnan and Xiao, `An Investigation into Neural Net
    Optimization via Hessian Eigenvalue Density
    <https://arxiv.org/abs/1901.10159>`_, 2019.

    Lin, Saad and Yang, `Approximating spectral densities of large matrices
    <https://arxiv.org/abs/1308.5467>`_, 2016.
  """
  v.check_int('num_probes', num_probes, minimum=1)
  v.check_int('lanczos_steps', lanczos_steps, minimum=1)
  if sigma is not None:
    v.check_positive('sigma', sigma)
  if isinstance(grid, int):
    v.check_int('grid', grid, minimum=2)
  _check_key(key)
  op = make_operator(fun, params, batches=batches, ggn_loss_fn=ggn_loss_fn)
  flat = op.flat_params
  probes = jax.random.normal(key, (num_probes, op.dim), flat.dtype)
  alpha, beta, steps = _slq_coefficients(
    op.matvec, op.operands, probes, min(lanczos_steps, op.dim)
  )
  nodes, weights = _gauss_quadrature(
    np.asarray(alpha), np.asarray(beta), np.asarray(steps)
  )
  nodes = jnp.asarray(nodes, flat.dtype)
  weights = jnp.asarray(weights, flat.dtype)
  lo, hi = float(jnp.min(nodes)), float(jnp.max(nodes))
  if sigma is None:
    sigma = 0.01 * (hi - lo) if hi > lo else 0.01 * max(abs(hi), 1.0)
  if isinstance(grid, int):
    grid = jnp.linspace(lo - 5 * sigma, hi + 5 * sigma, grid, dtype=flat.dtype)
  grid = jnp.asarray(grid)
  gauss = jnp.exp(-0.5 * ((grid[:, None, None] - nodes) / sigma) ** 2)
  density = jnp.sum(weights * gauss, axis=(1, 2)) / (
    num_probes * sigma * np.sqrt(2 * np.pi)
  )
  return SpectralDensity(grid, density, nodes, weights, float(sigma))
