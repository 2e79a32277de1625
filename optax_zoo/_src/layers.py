"""Capture of the inputs and output gradients of `nnx.Linear`/`nnx.Conv`.

Ghost clipping (``optax_zoo.privacy``) and K-FAC (``optax_zoo.adaptive``)
both need, for every linear layer, its input rows (for a convolution the
im2col patches) and the gradient of the loss with respect to its output,
from one forward and backward pass of an unmodified Flax NNX model. This
module holds that capture once.

How: the model is merged from its split state inside the traced function,
which gives fresh Python objects; on that private copy each supported
layer's class is swapped for a subclass whose ``__call__`` records the
layer's input and adds a zero *probe* to its output. The gradient of the
loss with respect to a probe is that layer's output gradient. The user's
model object and its class are never touched (no global monkeypatching, so
it is safe under ``jax.jit`` and with other threads), and nothing needs the
model's code to cooperate (Flax 0.12.8 has no ``nnx.intercept_methods``;
``Module.perturb`` needs the model to call it). Flax's
``canonicalize_padding`` and JAX's ``lax.conv_general_dilated_patches``
(im2col) are used as they are.
"""

from __future__ import annotations

import contextlib
import functools
import threading

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.linear import canonicalize_padding

SUPPORTED = (nnx.Linear, nnx.Conv)
PARAM_NAMES = ('kernel', 'bias')
_TAPE = threading.local()


def layer_problem(module: nnx.Module) -> str | None:
  """Why the capture cannot handle this layer, or None."""
  base = next((t for t in SUPPORTED if isinstance(module, t)), None)
  if base is None:
    return 'not an nnx.Linear or nnx.Conv'
  if type(module).__call__ is not base.__call__:
    return f'{type(module).__name__} overrides {base.__name__}.__call__'
  if base is nnx.Conv:
    if module.feature_group_count != 1:
      return 'feature_group_count != 1'
    if module.mask is not None:
      return 'a kernel mask'
    padding = canonicalize_padding(module.padding, len(module.kernel_size))
    if padding in ('CIRCULAR', 'REFLECT', 'CAUSAL'):
      return f'padding {padding!r}'
  return None


def unsupported_layers(model: nnx.Module) -> list[str]:
  """The layers holding parameters that the capture cannot handle.

  Each entry reads ``'path (Type): reason'``; an empty list means every
  parameter is the kernel or bias of a supported ``nnx.Linear`` or
  ``nnx.Conv`` (one feature group, no kernel mask, zero or 'SAME'/'VALID'
  padding).
  """
  modules = dict(nnx.iter_modules(model))
  problems = {}
  for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    owner_path = tuple(path[:-1])
    owner = modules.get(owner_path)
    name = '.'.join(map(str, owner_path)) or '<root>'
    if owner is None:
      problem, kind = 'parameter outside a module', '?'
    else:
      problem, kind = layer_problem(owner), type(owner).__name__
      if problem is None and path[-1] not in PARAM_NAMES:
        problem = f'unknown parameter {path[-1]!r}'
    if problem is not None:
      problems[name] = f'{name} ({kind}): {problem}'
  return sorted(problems.values())


def _tapped_call(self, inputs, *args, **kwargs):
  base = next(t for t in SUPPORTED if isinstance(self, t))
  out = base.__call__(self, inputs, *args, **kwargs)
  tape = getattr(_TAPE, 'current', None)
  if tape is None:
    return out
  return tape.record(self, inputs, out)


@functools.cache
def _tapped_class(cls: type) -> type:
  return type(f'_Tapped{cls.__name__}', (cls,), {'__call__': _tapped_call})


class Tape:
  """Records inputs and adds probes, per (layer path, call number).

  ``paths`` maps ``id(module)`` to the layer's path; ``probes`` maps a path
  to one array per call (added to that call's output), or is None to only
  record. ``inputs`` and ``shapes`` (of the outputs) fill per path, one
  entry per call. Layers whose path is not in ``paths`` pass through.
  """

  def __init__(self, paths: dict[int, str], probes: dict | None):
    self.paths = paths
    self.probes = probes
    self.inputs: dict[str, list] = {}
    self.shapes: dict[str, list] = {}

  def record(self, module, inputs, out):
    path = self.paths.get(id(module))
    if path is None:
      return out
    calls = self.inputs.setdefault(path, [])
    self.shapes.setdefault(path, []).append(
      jax.ShapeDtypeStruct(out.shape, out.dtype)
    )
    n = len(calls)
    calls.append(inputs)
    if self.probes is None:
      return out
    return out + self.probes[path][n].astype(out.dtype)


@contextlib.contextmanager
def taping(tape: Tape):
  """Makes ``tape`` record the tapped layers called inside the block."""
  prev = getattr(_TAPE, 'current', None)
  _TAPE.current = tape
  try:
    yield tape
  finally:
    _TAPE.current = prev


def tapped_copy(graphdef, *states, skip=()):
  """A merged copy whose supported layers record; and their paths.

  Returns ``(model, paths)``: ``paths`` maps ``id(layer)`` to its path
  (``'.'``-joined), for every supported layer whose path is not in
  ``skip``.
  """
  model = nnx.merge(graphdef, *states)
  paths = {}
  for path, module in nnx.iter_modules(model):
    name = '.'.join(map(str, path))
    if isinstance(module, SUPPORTED) and name not in skip:
      object.__setattr__(module, '__class__', _tapped_class(type(module)))
      paths[id(module)] = name
  return model, paths


def layer_modules(model: nnx.Module) -> dict[str, nnx.Module]:
  """The supported layers of ``model`` by ``'.'``-joined path."""
  return {
    '.'.join(map(str, p)): m
    for p, m in nnx.iter_modules(model)
    if isinstance(m, SUPPORTED)
  }


def flat_rows(x, trailing):
  """(B, ..., trailing) -> (B, T, trailing)."""
  return x.reshape(x.shape[0], -1, trailing)


def conv_patches(module, x):
  """im2col of a stack (B, ...) of one layer's inputs: (B, T, C * prod(k)).

  The feature axis is ordered input channel first, then the kernel's
  spatial offsets (row-major), which is the order of
  ``kernel.transpose(d, 0, ..., d - 1, d + 1)`` flattened (`conv_kernel_rows`).
  """
  k = module.kernel_size
  nd = len(k)

  def bcast(value):
    value = 1 if value is None else value
    return (value,) * nd if isinstance(value, int) else tuple(value)

  b = x.shape[0]
  lhs = x.reshape(-1, *x.shape[x.ndim - nd - 1 :])
  spatial = 'DHW'[-nd:] if nd <= 3 else None
  if spatial is None:
    raise ValueError('only 1-D to 3-D convolutions are supported.')
  spec = ('N' + spatial + 'C', spatial + 'IO', 'N' + spatial + 'C')
  patches = jax.lax.conv_general_dilated_patches(
    lhs,
    filter_shape=k,
    window_strides=bcast(module.strides),
    padding=canonicalize_padding(module.padding, nd),
    lhs_dilation=bcast(module.input_dilation),
    rhs_dilation=bcast(module.kernel_dilation),
    dimension_numbers=spec,
    precision=jax.lax.Precision.HIGHEST,
  )
  return patches.reshape(b, -1, patches.shape[-1])


def conv_kernel_rows(kernel: jax.Array) -> jax.Array:
  """A Flax kernel ``(k..., in, out)`` as ``(in * prod(k), out)`` rows.

  The row order is that of `conv_patches`' feature axis, so that the layer
  is ``patches @ conv_kernel_rows(kernel)``; a 2-D (dense) kernel is
  returned as it is.
  """
  if kernel.ndim == 2:
    return kernel
  nd = kernel.ndim - 2
  perm = (nd, *range(nd), nd + 1)
  return jnp.transpose(kernel, perm).reshape(-1, kernel.shape[-1])


def conv_kernel_from_rows(rows: jax.Array, shape: tuple[int, ...]):
  """The inverse of `conv_kernel_rows` for a kernel of ``shape``."""
  if len(shape) == 2:
    return rows.reshape(shape)
  nd = len(shape) - 2
  moved = rows.reshape(shape[nd], *shape[:nd], shape[-1])
  perm = (*range(1, nd + 1), 0, nd + 1)
  return jnp.transpose(moved, perm)


def layer_rows(module, calls):
  """Each call's input as rows ``(B, T, d_in)`` (patches for a Conv)."""
  if isinstance(module, nnx.Conv):
    return [conv_patches(module, x) for x in calls]
  return [flat_rows(x, x.shape[-1]) for x in calls]
