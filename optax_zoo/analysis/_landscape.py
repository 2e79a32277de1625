"""Loss landscapes: filter-normalized directions, surfaces, planes, barriers."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from optax_zoo._src import validation as v

__all__ = [
  'Interpolation',
  'Plane',
  'cka',
  'interpolate',
  'loss_surface',
  'plane',
  'random_direction',
]


def _tree_dot(a: Any, b: Any) -> jax.Array:
  return ravel_pytree(a)[0] @ ravel_pytree(b)[0]


def _normalize_leaf(d, w, normalization, filter_axis):
  if normalization == 'layer':
    return d * jnp.linalg.norm(w) / (jnp.linalg.norm(d) + 1e-10)
  axes = tuple(a for a in range(d.ndim) if a != filter_axis % d.ndim)
  d_norm = jnp.sqrt(jnp.sum(d**2, axis=axes, keepdims=True))
  w_norm = jnp.sqrt(jnp.sum(w**2, axis=axes, keepdims=True))
  return d * w_norm / (d_norm + 1e-10)


def random_direction(
  key: jax.Array,
  params: Any,
  *,
  normalization: str = 'filter',
  ignore: str | None = 'biasbn',
  filter_axis: int = -1,
) -> Any:
  """A Gaussian direction scaled filter by filter to the weights' norms.

  For each weight array :math:`\\theta_i` with two or more axes, every
  filter (a slice along ``filter_axis``: an output neuron of a dense kernel,
  an output channel of a convolution) of a Gaussian direction :math:`d` is
  rescaled to the norm of the matching filter of the weights,

  .. math::
    d_{i,j} \\leftarrow \\frac{d_{i,j}}{\\|d_{i,j}\\|} \\|\\theta_{i,j}\\|,

  which removes the scale invariance of ReLU networks from landscape plots
  (Li et al., 2018). Arrays with fewer than two axes (biases, normalization
  scales and offsets) are zeroed with ``ignore='biasbn'``, as the paper's
  plots do, or set to the weights themselves with ``ignore=None``, as the
  reference code does.

  Args:
    key: a `jax.random.key`.
    params: any pytree of arrays, for example a Flax NNX ``nnx.State``.
    normalization: ``'filter'`` (per filter), ``'layer'`` (per array) or
      ``'none'`` (the raw Gaussian direction).
    ignore: ``'biasbn'`` or None, see above.
    filter_axis: the axis that indexes filters: -1 for Flax kernels
      (``(..., in, out)``), 0 for PyTorch weights (``(out, in, ...)``).

  Returns:
    A pytree with the structure, shapes and dtypes of ``params``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.analysis import random_direction
    >>> params = {'kernel': jnp.ones((3, 2)), 'bias': jnp.ones(2)}
    >>> d = random_direction(jax.random.key(0), params)
    >>> jnp.linalg.norm(d['kernel'], axis=0).round(4), d['bias']
    (Array([1.7321, 1.7321], dtype=float32), Array([0., 0.], dtype=float32))

  References:
    Li et al., `Visualizing the Loss Landscape of Neural Nets
    <https://arxiv.org/abs/1712.09913>`_, 2018 (tomgoldstein/loss-landscape,
    ``net_plotter.py``).
  """
  v.check_choice('normalization', normalization, ('filter', 'layer', 'none'))
  v.check_choice('ignore', ignore, ('biasbn', None))
  return _random_direction(key, params, normalization, ignore, filter_axis)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _random_direction(key, params, normalization, ignore, filter_axis):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  out = []
  for k, w in zip(keys, leaves, strict=True):
    d = jax.random.normal(k, jnp.shape(w), jnp.result_type(w))
    if normalization != 'none':
      if jnp.ndim(w) <= 1:
        d = jnp.zeros_like(d) if ignore == 'biasbn' else jnp.asarray(w)
      else:
        d = _normalize_leaf(d, w, normalization, filter_axis)
    out.append(d)
  return jax.tree.unflatten(treedef, out)


def loss_surface(
  fun: Callable[[Any], Any],
  params: Any,
  directions: Sequence[Any],
  coords: Sequence[jax.Array],
  *,
  batch_size: int | None = None,
) -> Any:
  """``fun`` on a 1-D or 2-D grid around ``params``.

  Evaluates :math:`f(\\theta + a\\, d_1)` on a line or
  :math:`f(\\theta + a\\, d_1 + b\\, d_2)` on a plane, jitted and vmapped
  over grid points (``batch_size`` at a time to bound memory).

  Args:
    fun: ``fun(params)`` returning a scalar or a pytree of scalars (for
      example ``{'loss': ..., 'accuracy': ...}``).
    params: the centre, any pytree of arrays.
    directions: one or two direction pytrees (see `random_direction`).
    coords: one coordinate array per direction.
    batch_size: grid points per vmapped call; default all at once.

  Returns:
    ``fun``'s output pytree with leaves of shape ``(len(coords[0]),)`` or
    ``(len(coords[0]), len(coords[1]))``.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo.analysis import loss_surface
    >>> f = lambda p: jnp.sum(p ** 2)
    >>> d1, d2 = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    >>> loss_surface(f, jnp.zeros(2), [d1, d2],
    ...              [jnp.array([0.0, 1.0]), jnp.array([0.0, 2.0])])
    Array([[0., 4.],
           [1., 5.]], dtype=float32)
  """
  if len(directions) not in (1, 2) or len(coords) != len(directions):
    raise ValueError(
      '`directions` and `coords` must both have length 1 or 2, got '
      f'{len(directions)} and {len(coords)}.'
    )
  if batch_size is not None:
    v.check_int('batch_size', batch_size, minimum=1)
  mesh = jnp.meshgrid(*[jnp.asarray(c) for c in coords], indexing='ij')
  shape = mesh[0].shape
  points = jnp.stack([m.ravel() for m in mesh], axis=-1)

  @jax.jit
  def evaluate(params, directions, points):
    def at(point):
      moved = jax.tree.map(
        lambda p, *ds: p + sum(c * d for c, d in zip(point, ds, strict=True)),
        params,
        *directions,
      )
      return fun(moved)

    return jax.lax.map(at, points, batch_size=batch_size or len(points))

  values = evaluate(params, list(directions), points)
  return jax.tree.map(lambda x: x.reshape(shape), values)


class Plane(NamedTuple):
  """An orthonormal basis of the plane through three parameter vectors.

  Attributes:
    origin: the first point, the plane's origin.
    u: the unit vector towards the second point.
    v: the unit vector in the plane orthogonal to ``u``.
    coords: the three points' coordinates in ``(u, v)``, shape ``(3, 2)``.
  """

  origin: Any
  u: Any
  v: Any
  coords: jax.Array


def plane(w1: Any, w2: Any, w3: Any) -> Plane:
  """The plane through three solutions, with Garipov et al.'s basis.

  .. math::
    u = \\frac{w_2 - w_1}{\\|w_2 - w_1\\|}, \\qquad
    v = \\frac{w_3 - w_1 - \\langle w_3 - w_1, u\\rangle u}
    {\\|w_3 - w_1 - \\langle w_3 - w_1, u\\rangle u\\|},

  so that :math:`w_1 + a u + b v` with `loss_surface` draws the landscape
  through all three points at true (Euclidean) scale.

  Args:
    w1: the origin, any pytree of arrays.
    w2: a second point with the same structure.
    w3: a third point, not on the line through the first two.

  Returns:
    A `Plane`.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo.analysis import plane
    >>> p = plane(jnp.zeros(3), jnp.array([2.0, 0, 0]),
    ...           jnp.array([1.0, 3.0, 0]))
    >>> p.coords
    Array([[0., 0.],
           [2., 0.],
           [1., 3.]], dtype=float32)

  References:
    Garipov et al., `Loss Surfaces, Mode Connectivity, and Fast Ensembling of
    DNNs <https://arxiv.org/abs/1802.10026>`_, 2018
    (timgaripov/dnn-mode-connectivity, ``plane.py``).
  """
  a, unravel = ravel_pytree(w1)
  b, c = ravel_pytree(w2)[0], ravel_pytree(w3)[0]
  u = b - a
  u_norm = jnp.linalg.norm(u)
  u = u / u_norm
  w = c - a
  v_raw = w - jnp.dot(w, u) * u
  v_norm = jnp.linalg.norm(v_raw)
  # Below rounding level of the differences the third point is collinear.
  if float(v_norm) <= jnp.finfo(a.dtype).eps ** 0.5 * float(u_norm):
    raise ValueError('`w3` must not lie on the line through `w1` and `w2`.')
  vv = v_raw / v_norm
  coords = jnp.array([[0.0, 0.0], [u_norm, 0.0], [jnp.dot(w, u), v_norm]])
  return Plane(w1, unravel(u), unravel(vv), coords.astype(a.dtype))


class Interpolation(NamedTuple):
  """Values along the segment between two solutions.

  Attributes:
    alphas: the interpolation weights :math:`t \\in [0, 1]`, shape ``(T,)``.
    values: :math:`f((1 - t) w_a + t w_b)`, shape ``(T,)``.
    barrier: :math:`\\max_t f((1 - t) w_a + t w_b) - ((1 - t) f(w_a) + t
      f(w_b))`; zero or less means linearly mode-connected.
  """

  alphas: jax.Array
  values: jax.Array
  barrier: jax.Array


def interpolate(
  fun: Callable[[Any], jax.Array],
  params_a: Any,
  params_b: Any,
  *,
  num_points: int = 25,
) -> Interpolation:
  """Linear interpolation between two solutions and its barrier height.

  .. math::
    B = \\max_{t \\in [0, 1]} \\big[f((1-t)w_a + t w_b) -
    ((1-t) f(w_a) + t f(w_b))\\big],

  the linear-path barrier of Frankle et al. (2020). Yang et al. (2021)
  measure mode connectivity on a trained Bezier curve instead; the linear
  path is its upper bound and needs no training.

  Args:
    fun: ``fun(params) -> scalar``.
    params_a: the first solution.
    params_b: the second, with the same structure.
    num_points: points on the segment including both ends, >= 2.

  Returns:
    An `Interpolation`.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo.analysis import interpolate
    >>> f = lambda p: jnp.sum((p ** 2 - 1.0) ** 2)  # minima at +1 and -1
    >>> out = interpolate(f, jnp.array([-1.0]), jnp.array([1.0]),
    ...                   num_points=5)
    >>> float(out.barrier)
    1.0

  References:
    Frankle et al., `Linear Mode Connectivity and the Lottery Ticket
    Hypothesis <https://arxiv.org/abs/1912.05671>`_, 2020.

    Yang et al., `Taxonomizing local versus global structure in neural
    network loss landscapes <https://arxiv.org/abs/2107.11228>`_, 2021.
  """
  v.check_int('num_points', num_points, minimum=2)
  alphas = jnp.linspace(0.0, 1.0, num_points)
  direction = jax.tree.map(lambda a, b: b - a, params_a, params_b)
  values = loss_surface(fun, params_a, [direction], [alphas])
  line = (1 - alphas) * values[0] + alphas * values[-1]
  return Interpolation(alphas, values, jnp.max(values - line))


def cka(x: jax.Array, y: jax.Array) -> jax.Array:
  """Linear centered kernel alignment of two representations.

  .. math::
    \\operatorname{CKA}(X, Y) = \\frac{\\|Y_c^\\top X_c\\|_F^2}
    {\\|X_c^\\top X_c\\|_F \\, \\|Y_c^\\top Y_c\\|_F},

  with :math:`X_c, Y_c` the column-centred features of the same ``n``
  examples. It is 1 for representations equal up to rotation and isotropic
  scaling; Yang et al. (2021) use it between two trained models' outputs as
  their global similarity metric.

  Args:
    x: features of shape ``(n, p)`` (more axes are flattened).
    y: features of shape ``(n, q)`` for the same examples.

  Returns:
    A scalar in [0, 1].

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.analysis import cka
    >>> x = jax.random.normal(jax.random.key(0), (50, 4))
    >>> q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(1), (4, 4)))
    >>> round(float(cka(x, 3.0 * x @ q)), 4)
    1.0

  References:
    Kornblith et al., `Similarity of Neural Network Representations Revisited
    <https://arxiv.org/abs/1905.00414>`_, 2019.
  """
  if jnp.shape(x)[0] != jnp.shape(y)[0]:
    raise ValueError(
      '`x` and `y` must hold the same examples, got leading sizes '
      f'{jnp.shape(x)[0]} and {jnp.shape(y)[0]}.'
    )
  x = jnp.reshape(x, (x.shape[0], -1))
  y = jnp.reshape(y, (y.shape[0], -1))
  x = x - x.mean(0)
  y = y - y.mean(0)
  cross = jnp.sum((y.T @ x) ** 2)
  return cross / (jnp.linalg.norm(x.T @ x) * jnp.linalg.norm(y.T @ y))
