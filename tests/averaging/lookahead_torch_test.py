"""lookahead against pytorch-optimizer's Lookahead."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from tests.reference import parity


@pytest.mark.parametrize('inner', ['sgd', 'adam'])
def test_lookahead_matches_pytorch_optimizer(inner):
  torch = pytest.importorskip('torch')
  pytorch_optimizer = pytest.importorskip('pytorch_optimizer')
  # pytorch-optimizer's defaults: k=5, alpha=0.5, pullback_momentum='none'
  # (the inner state is left alone at a sync, as ours without reset_state).
  k, alpha, steps = 5, 0.5, 120
  x0 = np.linspace(-1.0, 1.0, 8).astype(np.float32)
  grads = np.asarray(
    jax.random.normal(jax.random.key(0), (steps, 8)), np.float32
  )

  if inner == 'sgd':
    ours_inner = optax.sgd(0.05, momentum=0.9)
    make_torch = lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)
  else:
    ours_inner = optax.adam(1e-2)
    make_torch = lambda p: torch.optim.Adam(p, lr=1e-2)

  tx = optax_zoo.lookahead(ours_inner, sync_period=k, alpha=alpha)
  params, state = jnp.asarray(x0), tx.init(jnp.asarray(x0))
  update = jax.jit(tx.update)
  w = torch.nn.Parameter(torch.from_numpy(x0.copy()))
  opt = pytorch_optimizer.Lookahead(make_torch([w]), k=k, alpha=alpha)
  worst = 0.0
  for g in grads:
    # The loss's gradient is the parameter plus fixed noise, so the two
    # trajectories see the same gradient function.
    u, state = update(params + g, state, params)
    params = optax.apply_updates(params, u)
    opt.zero_grad()
    w.grad = w.detach() + torch.from_numpy(g.copy())
    opt.step()
    worst = max(worst, np.max(np.abs(np.asarray(params) - w.detach().numpy())))
  assert worst < 1e-5, worst
  parity.assert_within_registered('lookahead', worst, 'pytorch-optimizer')
