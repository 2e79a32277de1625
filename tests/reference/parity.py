"""Step-by-step parity of an optax transform with a reference optimizer.

A reference is anything with ``step(grads) -> params``: a live PyTorch
optimizer (`TorchReference`) or a NumPy transcription of the paper's algorithm
box or the authors' code. Both sides start from the same parameters and see
the same gradients, given as a function of the step and the current
parameters, so that both follow their own trajectory.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_zoo

Params = dict[str, np.ndarray]
GradFn = Callable[[int, Params], Params]


def initial_params(seed: int = 0) -> Params:
  """Float32 parameters: a matrix, a vector and a scalar-like leaf."""
  rng = np.random.default_rng(seed)
  return {
    'w': rng.normal(size=(6, 5)).astype(np.float32),
    'b': rng.normal(size=(5,)).astype(np.float32),
    's': rng.normal(size=(1,)).astype(np.float32),
  }


def noisy_quadratic_grads(seed: int = 1, scale: float = 1.0) -> GradFn:
  """The gradient of ``0.5 * |p - c|^2`` plus fixed Gaussian noise per step.

  The centre ``c`` has entries of magnitude 1 to 2, so the parameters stay of
  order one and a relative comparison measures the methods, not the float32
  rounding of numbers near zero.
  """
  rng = np.random.default_rng(seed)
  noise: dict[int, Params] = {}
  centre: Params = {}

  def grad_fn(step: int, params: Params) -> Params:
    if not centre:
      for k, v in sorted(params.items()):
        sign = np.where(rng.random(v.shape) < 0.5, -1.0, 1.0)
        centre[k] = sign * rng.uniform(1.0, 2.0, v.shape)
    if step not in noise:
      noise[step] = {
        k: scale * rng.normal(size=v.shape) for k, v in sorted(params.items())
      }
    return {
      k: (params[k] - centre[k] + noise[step][k]).astype(np.float32)
      for k in params
    }

  return grad_fn


def tiny_noise_grads(seed: int = 3, scale: float = 1e-8) -> GradFn:
  """Gaussian gradients of size ``scale`` that do not depend on the params.

  With gradients as small as ``eps``, where an adaptive method adds ``eps``
  to its denominator changes the step by order one. Start from zero
  parameters (`zeros_like`) so that the relative deviation measures steps.
  """
  rng = np.random.default_rng(seed)
  noise: dict[int, Params] = {}

  def grad_fn(step: int, params: Params) -> Params:
    if step not in noise:
      noise[step] = {
        k: (scale * rng.normal(size=v.shape)).astype(np.float32)
        for k, v in sorted(params.items())
      }
    return noise[step]

  return grad_fn


def zeros_like(params: Params) -> Params:
  return {k: np.zeros_like(v) for k, v in params.items()}


class TorchReference:
  """A PyTorch optimizer over one `torch.nn.Parameter` per leaf."""

  def __init__(self, params: Params, make_optimizer: Callable[[list], Any]):
    import torch

    self._torch = torch
    self._names = sorted(params)
    self._params = [
      torch.nn.Parameter(torch.from_numpy(params[k].copy()))
      for k in self._names
    ]
    self.optimizer = make_optimizer(self._params)

  def step(self, grads: Params, **step_kwargs: Any) -> Params:
    for name, p in zip(self._names, self._params, strict=True):
      p.grad = self._torch.from_numpy(np.asarray(grads[name]).copy())
    self.optimizer.step(**step_kwargs)
    return {
      k: p.detach().numpy().copy()
      for k, p in zip(self._names, self._params, strict=True)
    }


def run_parity(
  tx: optax.GradientTransformation,
  reference: Any,
  params: Params,
  grad_fn: GradFn,
  *,
  steps: int = 100,
  extra_args_fn: Callable[[int, Params], dict[str, Any]] | None = None,
  reference_kwargs_fn: Callable[[int, Params], dict[str, Any]] | None = None,
) -> float:
  """Runs both for ``steps`` steps; returns the worst relative deviation.

  The deviation of a step is `relative_deviation` of the parameters.

  Args:
    tx: our transform.
    reference: has ``step(grads, **kwargs) -> params``.
    params: the initial parameters (float32 NumPy leaves).
    grad_fn: ``(step, params) -> grads``, evaluated on each side's params.
    steps: number of steps.
    extra_args_fn: extra keyword arguments of ``tx.update`` per step.
    reference_kwargs_fn: keyword arguments of ``reference.step`` per step.

  Returns:
    The largest per-step deviation.
  """
  ours = jax.tree.map(jnp.asarray, params)
  state = tx.init(ours)
  update = jax.jit(tx.update)
  theirs = {k: v.copy() for k, v in params.items()}
  worst = 0.0
  for t in range(steps):
    ours_np = jax.tree.map(np.asarray, ours)
    g = grad_fn(t, ours_np)
    extra = extra_args_fn(t, ours_np) if extra_args_fn else {}
    updates, state = update(jax.tree.map(jnp.asarray, g), state, ours, **extra)
    ours = optax.apply_updates(ours, updates)
    ref_kwargs = reference_kwargs_fn(t, theirs) if reference_kwargs_fn else {}
    theirs = reference.step(grad_fn(t, theirs), **ref_kwargs)
    if not all(
      np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves((ours, theirs))
    ):
      raise AssertionError(f'step {t}: non-finite parameters')
    worst = max(worst, relative_deviation(ours, theirs))
  return worst


def relative_deviation(ours: Any, theirs: Any) -> float:
  """``max |ours - theirs| / max |theirs|`` over all entries of two trees.

  The infinity-norm relative error of the whole tree, so that an entry
  crossing zero does not blow it up; the figure the registry records.
  """
  a, b = (
    np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in leaves])
    for leaves in (jax.tree.leaves(ours), jax.tree.leaves(theirs))
  )
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def assert_parity(worst: float, rtol: float = 1e-5) -> None:
  assert worst <= rtol, f'worst relative deviation {worst:.3g} > {rtol:.0e}'


# One figure of a registry `parity` string: a number, then an optional
# parenthesized label (which may itself hold commas), then a comma or the end.
_FIGURE = re.compile(
  r'\s*(?P<value>[0-9][0-9.]*(?:e[-+]?[0-9]+)?)'
  r'(?:\s*\((?P<label>[^)]*)\))?\s*(?:,|$)'
)


def registered_figures(name: str) -> dict[str | None, str]:
  """The figures of `name`'s registry ``parity`` string, by label.

  ``'0 (optax.adamw), 6.8e-6 (torch AdamW)'`` gives ``{'optax.adamw': '0',
  'torch AdamW': '6.8e-6'}``; an unlabelled figure is under None.
  """
  text = optax_zoo.get(name).parity
  figures, pos = {}, 0
  while pos < len(text):
    match = _FIGURE.match(text, pos)
    if match is None or match.end() == pos:
      raise ValueError(f'{name}: cannot parse parity {text!r} at {pos}')
    figures[match['label']] = match['value']
    pos = match.end()
  if not figures:
    raise ValueError(f'{name} registers no parity figure')
  return figures


def assert_within_registered(
  name: str, measured: float, label: str | None = None
) -> None:
  """Asserts that a measured deviation is within the one the registry shows.

  The registry's ``parity`` strings feed the README's table; this keeps the
  table honest as the code changes.

  Args:
    name: the registry name.
    measured: the deviation a parity test measured (`run_parity`).
    label: which figure, where the method registers several (the text in
      parentheses, e.g. ``'torch AdamW'``); None for a single figure.
  """
  figures = registered_figures(name)
  if label is None and len(figures) == 1:
    label = next(iter(figures))
  if label not in figures:
    raise AssertionError(
      f'{name}: no registered parity figure labelled {label!r} in '
      f'{optax_zoo.get(name).parity!r}'
    )
  registered = figures[label]
  what = name if label is None else f'{name} ({label})'
  print(f'{what}: measured {measured:.3g}, registered {registered}')
  assert measured <= float(registered), (
    f'{what}: measured parity deviation {measured:.3g} exceeds the '
    f'registered {registered}'
  )


__all__: Sequence[str] = (
  'TorchReference',
  'assert_parity',
  'assert_within_registered',
  'initial_params',
  'noisy_quadratic_grads',
  'registered_figures',
  'relative_deviation',
  'run_parity',
  'tiny_noise_grads',
  'zeros_like',
)
