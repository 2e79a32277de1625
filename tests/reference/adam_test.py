"""adam and adamax against torch.optim."""

import pytest

import optax_zoo
from tests.reference import parity


@pytest.mark.parametrize('name', ['adam', 'adamax'])
def test_matches_torch(name):
  torch = pytest.importorskip('torch')
  make = {'adam': torch.optim.Adam, 'adamax': torch.optim.Adamax}[name]
  params = parity.initial_params()
  worst = parity.run_parity(
    optax_zoo.create(name, learning_rate=1e-2),
    parity.TorchReference(params, lambda p: make(p, lr=1e-2)),
    params,
    parity.noisy_quadratic_grads(),
    steps=150,
  )
  parity.assert_parity(worst)
