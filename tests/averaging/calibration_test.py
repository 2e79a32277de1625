"""Calibration metrics (optax_zoo.analysis)."""

import itertools

import jax
import numpy as np
import pytest

from optax_zoo.analysis import (
  expected_calibration_error,
  negative_log_likelihood,
  reliability_plot,
)


def _reference_ece(probs, labels, num_bins):
  """The calibration loop of swa_gaussian's utils, in NumPy."""
  conf, pred = probs.max(1), probs.argmax(1)
  edges = np.linspace(0, 1, num_bins + 1)
  ece = 0.0
  for lo, hi in itertools.pairwise(edges):
    inside = (conf > lo) & (conf <= hi)
    if inside.any():
      acc = (pred[inside] == labels[inside]).mean()
      ece += inside.mean() * abs(acc - conf[inside].mean())
  return ece


def test_ece_and_nll_match_numpy():
  key1, key2 = jax.random.split(jax.random.key(0))
  probs = np.asarray(jax.nn.softmax(3 * jax.random.normal(key1, (500, 10))))
  labels = np.asarray(jax.random.randint(key2, (500,), 0, 10))
  ece, data = expected_calibration_error(probs, labels, num_bins=15)
  assert float(ece) == pytest.approx(_reference_ece(probs, labels, 15), 1e-5)
  assert int(data.count.sum()) == 500
  nll = -np.mean(np.log(probs[np.arange(500), labels]))
  assert float(negative_log_likelihood(probs, labels)) == pytest.approx(
    nll, 1e-5
  )


def test_reliability_plot_draws_each_series():
  pytest.importorskip('matplotlib')
  import matplotlib

  matplotlib.use('Agg')
  probs = np.asarray(
    jax.nn.softmax(jax.random.normal(jax.random.key(1), (50, 3)))
  )
  labels = np.zeros(50, int)
  _, data = expected_calibration_error(probs, labels)
  ax = reliability_plot({'a': data, 'b': data})
  assert len(ax.get_lines()) == 3  # two series and the zero line
