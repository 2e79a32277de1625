"""adam, adamax and sgd against torch.optim."""

import pytest

import optax_zoo
from tests.reference import parity


# Measured worst relative deviations over 150 steps: adam 5.0e-6 (float32
# bias correction, computed in float64 by torch), adamax 1.6e-7, sgd 1.3e-7.
@pytest.mark.parametrize(
  ('name', 'kwargs'),
  [
    ('adam', {}),
    ('adamax', {}),
    ('sgd', {'momentum': 0.9}),
    ('sgd', {'momentum': 0.9, 'nesterov': True}),
  ],
)
def test_matches_torch(name, kwargs):
  torch = pytest.importorskip('torch')
  make = {
    'adam': torch.optim.Adam,
    'adamax': torch.optim.Adamax,
    'sgd': torch.optim.SGD,
  }[name]
  params = parity.initial_params()
  worst = parity.run_parity(
    optax_zoo.create(name, learning_rate=1e-2, **kwargs),
    parity.TorchReference(params, lambda p: make(p, lr=1e-2, **kwargs)),
    params,
    parity.noisy_quadratic_grads(),
    steps=150,
  )
  parity.assert_parity(worst)
  parity.assert_within_registered(name, worst)
