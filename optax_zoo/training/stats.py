"""Seed statistics for experiments: means with Student t intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
  """The mean and the half-width of its 95% Student t interval.

  Example:
    >>> from optax_zoo.training.stats import mean_ci
    >>> mean, half = mean_ci([0.90, 0.92, 0.94])
    >>> round(mean, 2), round(half, 3)
    (0.92, 0.05)
  """
  x = np.asarray(values, np.float64)
  if x.ndim != 1 or x.size < 1:
    raise ValueError(f'`values` must be a non-empty 1-D sequence, got {x!r}.')
  if x.size < 2:
    return float(x.mean()), math.nan
  from scipy import stats

  sem = x.std(ddof=1) / math.sqrt(x.size)
  return float(x.mean()), float(stats.t.ppf(0.975, x.size - 1) * sem)


def paired_ci(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
  """`mean_ci` of the per-seed differences ``a - b`` (same seeds, same order).

  Example:
    >>> from optax_zoo.training.stats import paired_ci
    >>> diff, half = paired_ci([0.91, 0.93, 0.95], [0.90, 0.92, 0.94])
    >>> round(diff, 3), round(half, 3)
    (0.01, 0.0)
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(
      f'`a` and `b` must have the same shape, got {a.shape} and {b.shape}.'
    )
  return mean_ci(a - b)
