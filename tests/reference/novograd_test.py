"""novograd against NVIDIA OpenSeq2Seq's NovoGrad and pytorch-optimizer's.

Mapping: OpenSeq2Seq ``NovoGrad(learning_rate, beta1, beta2, epsilon,
weight_decay, grad_averaging=False)`` puts ``epsilon`` inside the square root:
``novograd(learning_rate, b1=beta1, b2=beta2, eps=0, eps_root=epsilon,
weight_decay=weight_decay)``. pytorch-optimizer's ``NovoGrad(lr, betas, eps,
weight_decay, weight_decouple=False, grad_averaging=False)`` puts ``eps``
outside: ``eps=eps, eps_root=0``.
"""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_zoo
from tests.reference import parity


def _constant(x):
  return lambda step: x


class OpenSeq2SeqNovoGrad:
  """NumPy transcription of ``NovoGrad.apply_gradients`` in NVIDIA/OpenSeq2Seq
  ``open_seq2seq/optimizers/novograd.py`` (``grad_averaging=False``),
  followed by TF's ``MomentumOptimizer`` (``accum = beta1 * accum + grad;
  var -= lr * accum``). ``lr`` and ``weight_decay`` are functions of the
  0-based step, to also run schedules."""

  def __init__(self, params, lr, beta1, beta2, epsilon, weight_decay):
    self.params = {k: v.copy() for k, v in params.items()}
    self.lr, self.wd = lr, weight_decay
    self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
    self.ema = {k: np.float32(0.0) for k in params}
    self.accum = {k: np.zeros_like(v) for k, v in params.items()}
    self.step_count = 0

  def step(self, grads):
    lr = float(self.lr(self.step_count))
    wd = float(self.wd(self.step_count))
    for k, grad in grads.items():
      g_2 = np.sum(np.square(grad, dtype=np.float32))
      if self.ema[k] == 0.0:
        self.ema[k] = g_2
      else:
        self.ema[k] = self.ema[k] * self.beta2 + g_2 * (1.0 - self.beta2)
      g = grad * (1.0 / np.sqrt(self.ema[k] + self.epsilon))
      if wd > 0.0:
        g = g + wd * self.params[k]
      self.accum[k] = (self.beta1 * self.accum[k] + g).astype(np.float32)
      self.params[k] = (self.params[k] - lr * self.accum[k]).astype(np.float32)
    self.step_count += 1
    return {k: v.copy() for k, v in self.params.items()}


_DECAY = optax.linear_schedule(1e-2, 1e-3, transition_steps=100)
_LR = optax.cosine_decay_schedule(1e-2, decay_steps=150)


# Measured worst relative deviations (150 steps): reference defaults
# 2.4e-7; optax defaults with weight decay 1.2e-7; lr and weight-decay
# schedules 1.6e-7.
@pytest.mark.parametrize(
  'config',
  [
    {'b1': 0.95, 'b2': 0.98, 'epsilon': 1e-8, 'wd': 0.0, 'lr': 1e-2},
    {'b1': 0.9, 'b2': 0.25, 'epsilon': 1e-6, 'wd': 1e-2, 'lr': 1e-2},
    {'b1': 0.95, 'b2': 0.98, 'epsilon': 1e-8, 'wd': _DECAY, 'lr': _LR},
  ],
  ids=['reference_defaults', 'optax_defaults_wd', 'schedules'],
)
def test_matches_openseq2seq(config):
  params = parity.initial_params()
  lr, wd = config['lr'], config['wd']
  ref = OpenSeq2SeqNovoGrad(
    params,
    lr if callable(lr) else _constant(lr),
    config['b1'],
    config['b2'],
    config['epsilon'],
    wd if callable(wd) else _constant(wd),
  )
  tx = optax_zoo.novograd(
    lr,
    b1=config['b1'],
    b2=config['b2'],
    eps=0.0,
    eps_root=config['epsilon'],
    weight_decay=wd,
  )
  worst = parity.run_parity(
    tx, ref, params, parity.noisy_quadratic_grads(), steps=150
  )
  parity.assert_parity(worst)
  parity.assert_within_registered('novograd', worst)


def test_defaults_are_the_reference_code_defaults():
  params = parity.initial_params()
  ref = OpenSeq2SeqNovoGrad(
    params, _constant(1e-2), 0.95, 0.98, 1e-8, _constant(0.0)
  )
  worst = parity.run_parity(
    optax_zoo.novograd(1e-2),
    ref,
    params,
    parity.noisy_quadratic_grads(),
    steps=150,
  )
  parity.assert_parity(worst)
  parity.assert_within_registered('novograd', worst)


# Measured: reference defaults 3.1e-7; optax defaults with weight decay
# 1.7e-7.
@pytest.mark.parametrize(
  'kwargs',
  [
    {'b1': 0.95, 'b2': 0.98, 'eps': 1e-8},
    {'b1': 0.9, 'b2': 0.25, 'eps': 1e-6, 'weight_decay': 1e-2},
  ],
  ids=['reference_defaults', 'optax_defaults_wd'],
)
def test_matches_pytorch_optimizer(kwargs):
  pytest.importorskip('torch')
  pto = pytest.importorskip('pytorch_optimizer')
  params = parity.initial_params()
  ref = parity.TorchReference(
    params,
    lambda p: pto.NovoGrad(
      p,
      lr=1e-2,
      betas=(kwargs['b1'], kwargs['b2']),
      eps=kwargs['eps'],
      weight_decay=kwargs.get('weight_decay', 0.0),
      weight_decouple=False,
      grad_averaging=False,
    ),
  )
  worst = parity.run_parity(
    optax_zoo.novograd(1e-2, **kwargs),
    ref,
    params,
    parity.noisy_quadratic_grads(),
    steps=150,
  )
  parity.assert_parity(worst)
  parity.assert_within_registered('novograd', worst)


def test_constant_decay_matches_optax_novograd():
  params = parity.initial_params()
  kwargs = {'b1': 0.95, 'b2': 0.98, 'eps': 1e-7, 'weight_decay': 1e-2}
  ours = optax_zoo.novograd(1e-2, **kwargs)
  theirs = optax.novograd(1e-2, **kwargs)
  p_ours = p_theirs = {k: jnp.asarray(v) for k, v in params.items()}
  s_ours, s_theirs = ours.init(p_ours), theirs.init(p_theirs)
  grads = parity.noisy_quadratic_grads()
  for t in range(50):
    u, s_ours = ours.update(grads(t, p_ours), s_ours, p_ours)
    p_ours = optax.apply_updates(p_ours, u)
    u, s_theirs = theirs.update(grads(t, p_theirs), s_theirs, p_theirs)
    p_theirs = optax.apply_updates(p_theirs, u)
  for k in params:
    np.testing.assert_allclose(p_ours[k], p_theirs[k], rtol=1e-6, atol=1e-7)


def test_mu_dtype_sets_the_first_moment_dtype():
  tx = optax_zoo.scale_by_novograd(mu_dtype=jnp.bfloat16)
  params = {'w': jnp.ones((3, 2))}
  updates, state = tx.update(params, tx.init(params), params)
  assert state.mu['w'].dtype == jnp.bfloat16
  assert state.nu['w'].dtype == jnp.float32
  assert updates['w'].dtype == jnp.float32


def test_bad_weight_decay_schedule_raises():
  with pytest.raises(ValueError, match='weight_decay'):
    optax_zoo.novograd(1e-2, weight_decay=lambda step: -1e-3)


def test_needs_params():
  tx = optax_zoo.scale_by_novograd()
  with pytest.raises(ValueError, match='params'):
    tx.update(jnp.ones(2), tx.init(jnp.ones(2)))
