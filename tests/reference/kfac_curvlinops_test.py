"""K-FAC factors and damped preconditioned gradients against curvlinops.

curvlinops-for-pytorch 3.0.1's ``KFACLinearOperator`` (empirical Fisher,
'expand', weight and bias joint) gives the reference Kronecker factors of a
torch copy of the same network on the same batch, and
``KFACInverseLinearOperator`` the damped inverse applied to the gradient: its
heuristic (pi) damping is our ``inverse='pi'``, its exact damping our
``'eigen'``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optax_zoo

torch = pytest.importorskip('torch')
curvlinops = pytest.importorskip('curvlinops')


class _Net(nnx.Module):
  def __init__(self, conv: bool, rngs):
    self.conv = nnx.Conv(2, 3, (3, 3), padding=1, rngs=rngs) if conv else None
    d = 5 * 5 * 3 if conv else 6
    self.hidden = nnx.Linear(d, 5, rngs=rngs)
    self.out = nnx.Linear(5, 3, rngs=rngs)

  def __call__(self, x):
    if self.conv is not None:
      x = jnp.tanh(self.conv(x)).reshape(x.shape[0], -1)
    return self.out(jnp.tanh(self.hidden(x)))


class _TorchNet(torch.nn.Module):
  def __init__(self, net: _Net):
    super().__init__()
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)
    self.conv = None
    if net.conv is not None:
      self.conv = torch.nn.Conv2d(2, 3, 3, padding=1).double()
      with torch.no_grad():
        self.conv.weight.copy_(t(net.conv.kernel[...]).permute(3, 2, 0, 1))
        self.conv.bias.copy_(t(net.conv.bias[...]))
    self.hidden = torch.nn.Linear(*net.hidden.kernel.shape).double()
    self.out = torch.nn.Linear(*net.out.kernel.shape).double()
    for tl, fl in ((self.hidden, net.hidden), (self.out, net.out)):
      with torch.no_grad():
        tl.weight.copy_(t(fl.kernel[...]).T)
        tl.bias.copy_(t(fl.bias[...]))

  def forward(self, x):  # x: NHWC or (B, d), as the flax model
    if self.conv is not None:
      h = torch.tanh(self.conv(x.permute(0, 3, 1, 2)))
      x = h.permute(0, 2, 3, 1).flatten(1)  # flax's (h, w, c) order
    return self.out(torch.tanh(self.hidden(x)))


def _case(conv: bool):
  net = _Net(conv, nnx.Rngs(0))
  shape = (8, 5, 5, 2) if conv else (8, 6)
  x = jax.random.normal(jax.random.key(1), shape)
  y = jnp.arange(8) % 3
  return net, x, y


def _ce(model, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def _torch_kfac(net, x, y):
  tnet = _TorchNet(net)
  params = [p for p in tnet.parameters() if p.requires_grad]
  data = [
    (
      torch.tensor(np.asarray(x), dtype=torch.float64),
      torch.tensor(np.asarray(y), dtype=torch.long),
    )
  ]
  kfac = curvlinops.KFACLinearOperator(
    tnet,
    torch.nn.CrossEntropyLoss(),
    params,
    data,
    fisher_type='empirical',
    kfac_approx='expand',
    separate_weight_and_bias=False,
    check_deterministic=False,
    progressbar=False,
  )
  kfac.compute_kronecker_factors()
  loss = torch.nn.CrossEntropyLoss()(tnet(data[0][0]), data[0][1])
  grads = torch.autograd.grad(loss, params)
  return tnet, kfac, list(grads)


@pytest.mark.parametrize('conv', [False, True], ids=['mlp', 'cnn'])
def test_factors_match_curvlinops(conv):
  net, x, y = _case(conv)
  _, kfac, _ = _torch_kfac(net, x, y)
  _, _, stats = optax_zoo.kfac_value_and_grad(_ce)(net, x, y)
  ours = optax_zoo.kfac_factors(stats)
  names = ['hidden', 'out'] + (['conv'] if conv else [])
  worst = 0.0
  for name in names:
    ref_a = kfac._input_covariances[name].numpy()
    ref_g = kfac._gradient_covariances[name].numpy()
    for got, ref in zip(ours[name], (ref_a, ref_g), strict=True):
      np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-7)
      worst = max(worst, float(np.max(np.abs(got - ref)) / np.max(np.abs(ref))))
  assert worst < 2e-5


def _flax_layout(name, tensor, conv_layer):
  a = tensor.detach().numpy()
  if name.endswith('bias'):
    return a
  if conv_layer:
    return a.transpose(2, 3, 1, 0)
  return a.T


@pytest.mark.parametrize('inverse', ['pi', 'eigen'])
@pytest.mark.parametrize('conv', [False, True], ids=['mlp', 'cnn'])
def test_preconditioned_gradient_matches_curvlinops_inverse(conv, inverse):
  damping = 1e-2
  net, x, y = _case(conv)
  tnet, kfac, tgrads = _torch_kfac(net, x, y)
  inv = curvlinops.KFACInverseLinearOperator(
    kfac,
    damping=damping,
    use_heuristic_damping=inverse == 'pi',
    use_exact_damping=inverse == 'eigen',
  )
  ref = inv @ tgrads
  _, grads, stats = optax_zoo.kfac_value_and_grad(_ce)(net, x, y)
  params = nnx.state(net, nnx.Param)
  tx = optax_zoo.scale_by_kfac(damping=damping, inverse=inverse)
  out, _ = tx.update(grads, tx.init(params), params, kfac_stats=stats)
  names = [n for n, _ in tnet.named_parameters()]
  for name, r in zip(names, ref, strict=True):
    layer, kind = name.split('.')
    got = out[layer]['kernel' if kind == 'weight' else kind][...]
    want = _flax_layout(name, r, layer == 'conv')
    scale = np.max(np.abs(want))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
