"""Plots of spectra and landscapes; matplotlib is imported on first call."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from optax_zoo.analysis._calibration import ReliabilityData
from optax_zoo.analysis._hessian import SpectralDensity

__all__ = [
  'plot_contour',
  'plot_line',
  'plot_spectral_density',
  'plot_surface',
  'reliability_plot',
  'seed_boxplot',
]


def _axes(ax):
  if ax is not None:
    return ax
  import matplotlib.pyplot as plt

  return plt.subplots(figsize=(5, 4))[1]


def plot_spectral_density(
  density: SpectralDensity, *, ax: Any = None, log: bool = True
) -> Any:
  """Plots a `SpectralDensity` (log scale by default, as PyHessian does).

  Args:
    density: from `optax_zoo.analysis.spectral_density`.
    ax: a matplotlib axes; default a new figure.
    log: use a logarithmic density axis, where the bulk near zero and the
      outliers are both visible.

  Returns:
    The axes.
  """
  ax = _axes(ax)
  values = np.asarray(density.density)
  ax.plot(np.asarray(density.grid), values)
  if log:
    ax.set_yscale('log')
    ax.set_ylim(max(values.max() * 1e-8, 1e-12), values.max() * 2)
  ax.set_xlabel('eigenvalue')
  ax.set_ylabel('density')
  return ax


def plot_line(
  coords: Any, values: Any, *, ax: Any = None, label: str | None = None
) -> Any:
  """Plots a 1-D landscape or interpolation path.

  Args:
    coords: the coordinates, shape ``(T,)``.
    values: the values, shape ``(T,)``.
    ax: a matplotlib axes; default a new figure.
    label: the line's legend label.

  Returns:
    The axes.
  """
  ax = _axes(ax)
  ax.plot(np.asarray(coords), np.asarray(values), label=label)
  ax.set_xlabel('step along the direction')
  return ax


def plot_contour(
  coords: tuple[Any, Any],
  values: Any,
  *,
  ax: Any = None,
  levels: int = 30,
  points: Any = None,
) -> Any:
  """Contour plot of a 2-D landscape, optionally marking points on it.

  Args:
    coords: the two coordinate arrays of the grid, shapes ``(A,)``, ``(B,)``.
    values: the surface, shape ``(A, B)`` (as `loss_surface` returns).
    ax: a matplotlib axes; default a new figure.
    levels: contour levels.
    points: ``(n, 2)`` coordinates to mark, e.g. `Plane.coords`.

  Returns:
    The axes.
  """
  ax = _axes(ax)
  a, b = (np.asarray(c) for c in coords)
  cs = ax.contour(a, b, np.asarray(values).T, levels=levels, cmap='viridis')
  ax.clabel(cs, inline=True, fontsize=7, fmt='%.2g')
  if points is not None:
    points = np.asarray(points)
    ax.scatter(points[:, 0], points[:, 1], c='red', marker='x', zorder=3)
  ax.set_aspect('equal', adjustable='box')
  return ax


def plot_surface(
  coords: tuple[Any, Any], values: Any, *, ax: Any = None
) -> Any:
  """3-D surface plot of a 2-D landscape.

  Args:
    coords: the two coordinate arrays of the grid.
    values: the surface, shape ``(A, B)``.
    ax: a 3-D matplotlib axes; default a new figure.

  Returns:
    The axes.
  """
  import matplotlib.pyplot as plt

  if ax is None:
    ax = plt.figure(figsize=(5, 4)).add_subplot(projection='3d')
  a, b = np.meshgrid(*(np.asarray(c) for c in coords), indexing='ij')
  ax.plot_surface(a, b, np.asarray(values), cmap='viridis', linewidth=0)
  return ax


def reliability_plot(
  data: ReliabilityData | dict[str, ReliabilityData], ax: Any = None
) -> Any:
  """Plots reliability diagrams: accuracy minus confidence per bin.

  As in the SWAG paper, the x axis is confidence and the y axis accuracy
  minus confidence (0 is perfect calibration, below 0 overconfident).

  Args:
    data: one `ReliabilityData` or a dict of them by label.
    ax: a matplotlib axes; default a new figure's.

  Returns:
    The axes.
  """
  ax = _axes(ax)
  series = data if isinstance(data, dict) else {'model': data}
  for label, d in series.items():
    keep = jnp.asarray(d.count) > 0
    conf = jnp.asarray(d.confidence)[keep]
    gap = jnp.asarray(d.accuracy)[keep] - conf
    ax.plot(conf, gap, marker='o', label=label)
  ax.axhline(0.0, color='k', lw=0.8, ls='--')
  ax.set_xlabel('confidence (max prob)')
  ax.set_ylabel('accuracy - confidence')
  ax.legend()
  return ax


def seed_boxplot(
  values: dict[str, Any],
  ax: Any = None,
  *,
  ylabel: str = 'test accuracy (%)',
  scale: float = 100.0,
) -> Any:
  """Box plots of per-seed results, one box per labelled run.

  Args:
    values: per-seed values (a sequence per label), e.g. final accuracies.
    ax: a matplotlib axes; default a new figure's.
    ylabel: the y axis label.
    scale: multiplies the values (100 turns fractions into percent).

  Returns:
    The axes.
  """
  ax = _axes(ax)
  names = list(values)
  ax.boxplot([scale * np.asarray(values[k], np.float64) for k in names])
  ax.set_xticks(range(1, len(names) + 1), names, rotation=15)
  ax.set_ylabel(ylabel)
  return ax
