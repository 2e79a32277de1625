"""Registry entries of `optax_zoo.privacy`, collected by the registry."""

from __future__ import annotations

from optax_zoo._src.method_info import MethodInfo, paper
from optax_zoo.privacy import _aggregate


def _dp_sgd_kwargs(learning_rate):
  # Noise 0 and expected batch size 1: the common tests feed plain gradients
  # as the clipped sum, so this is SGD with momentum and must converge; the
  # noise itself is tested in tests/privacy/aggregate_test.py.
  return {
    'learning_rate': learning_rate,
    'clip_norm': 1.0,
    'noise_multiplier': 0.0,
    'expected_batch_size': 1,
    'key': 0,
    'momentum': 0.9,
  }


_AGG_ENTRIES: tuple[MethodInfo, ...] = (
  MethodInfo(
    name='dp_sgd',
    category='privacy',
    factory=_aggregate.dp_sgd,
    paper=paper(
      'Deep Learning with Differential Privacy',
      'Abadi et al.',
      2016,
      '1607.00133',
    ),
    reference=(
      'jax_privacy.noise_addition.gaussian_privatizer (the noise); '
      'optax.contrib.dpsgd (divides by the realized batch size)'
    ),
    state_copies=1,
    learning_rate=0.1,
    example_kwargs=_dp_sgd_kwargs,
    invalid_kwargs=(
      {'learning_rate': -1.0},
      {'clip_norm': 0.0},
      {'noise_multiplier': -1.0},
      {'expected_batch_size': 0},
      {'momentum': 1.5},
    ),
    static_args=('key',),
    deviations=(
      'updates are the sum of clipped per-example gradients, divided by '
      'the expected (not realized) batch size after the noise; the '
      'registered rate is the lr grid optimum of the non-private example '
      '(noise 0, expected batch size 1: SGD with momentum)'
    ),
  ),
)

ENTRIES = _AGG_ENTRIES
