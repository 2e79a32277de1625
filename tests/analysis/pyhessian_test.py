"""Top eigenvalue and trace against PyHessian on the same MLP and data.

Runs when torch and pyhessian are installed (``pip install torch==2.13.0
pyhessian==0.1``); skipped otherwise.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax_zoo import analysis
from tests.analysis.problems import dense_hessian, make_problem, mlp_loss

torch = pytest.importorskip('torch')
pyhessian = pytest.importorskip('pyhessian')


def _torch_mlp(params):
  w1, b1, w2, b2 = (torch.tensor(params[k]) for k in ('w1', 'b1', 'w2', 'b2'))
  model = torch.nn.Sequential(
    torch.nn.Linear(*w1.shape), torch.nn.Tanh(), torch.nn.Linear(*w2.shape)
  )
  with torch.no_grad():
    # PyTorch stores dense weights as (out, in), Flax and we as (in, out).
    model[0].weight.copy_(w1.T)
    model[0].bias.copy_(b1)
    model[2].weight.copy_(w2.T)
    model[2].bias.copy_(b2)
  return model


@pytest.mark.filterwarnings('ignore:Using backward')
def test_top_eigenvalue_and_trace_agree_with_pyhessian():
  params, (x, y) = make_problem(np.float32, num_examples=64, sizes=(6, 8, 4))
  torch.manual_seed(0)
  ref = pyhessian.hessian(
    _torch_mlp(params),
    torch.nn.CrossEntropyLoss(),
    data=(torch.tensor(x), torch.tensor(y, dtype=torch.long)),
    cuda=False,
  )
  ref_top = ref.eigenvalues(maxIter=100, tol=1e-3, top_n=1)[0][0]
  ref_samples = np.asarray(ref.trace(maxIter=100, tol=1e-3))

  fun = functools.partial(mlp_loss, batch=(jnp.asarray(x), jnp.asarray(y)))
  params = jax.tree.map(jnp.asarray, params)
  key = jax.random.key(0)
  top = analysis.top_hessian_eigenvalues(fun, params, key=key, tol=1e-3)
  trace = analysis.hessian_trace(fun, params, key=key, num_samples=200)
  dense = np.linalg.eigvalsh(np.asarray(dense_hessian(fun, params), float))

  # Both stop at a relative tolerance of 1e-3 on successive estimates, which
  # bounds the error only loosely: compare at 1e-2.
  for value in (ref_top, float(top.eigenvalues[0])):
    np.testing.assert_allclose(value, dense[-1], rtol=1e-2)
  np.testing.assert_allclose(top.eigenvalues[0], ref_top, rtol=1e-2)
  # Two independent Hutchinson estimates: within 4 combined standard errors.
  ref_stderr = ref_samples.std(ddof=1) / np.sqrt(len(ref_samples))
  spread = 4 * np.hypot(float(trace.stderr), ref_stderr)
  assert abs(float(trace.trace) - ref_samples.mean()) < spread
  assert abs(float(trace.trace) - dense.sum()) < 4 * float(trace.stderr)
