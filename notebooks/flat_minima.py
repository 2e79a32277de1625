# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Flat minima: SAM, Entropy-SGD and training on the sphere
#
# `optax_zoo.sharpness` has the optimizers that look for flat minima, each a
# pure optax transform: SAM and its variants (ASAM, GSAM, m-sharpness),
# Entropy-SGD and Replicated-SGD, and SGD on the sphere at a fixed effective
# learning rate. This notebook trains them on MNIST-1D, measures the
# flatness of what they find with `optax_zoo.analysis`, and shows the three
# regimes of training a scale-invariant network on the sphere.
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/optax-zoo/optax_zoo/blob/main/notebooks/flat_minima.ipynb)

# %%
# In Colab, install optax_zoo from its repository; elsewhere this does
# nothing (install it with the README's command instead).
import sys

if 'google.colab' in sys.modules:
  import subprocess

  repo = 'git+https://github.com/optax-zoo/optax_zoo'
  spec = f'optax-zoo[experiments] @ {repo}'
  pip = [sys.executable, '-m', 'pip', 'install', '-q']
  subprocess.run([*pip, spec], check=True)

# %%
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

import optax_zoo
from optax_zoo import analysis, training

# The test suite sets OPTAX_ZOO_SMALL=1 to run this notebook at a tiny size.
SMALL = os.environ.get('OPTAX_ZOO_SMALL') == '1'
data = training.digits() if SMALL else training.mnist1d()
SEEDS = [0, 1] if SMALL else [0, 1, 2, 3, 4]
STEPS = 60 if SMALL else 3000
HIDDEN = (32,) if SMALL else (100, 100)
BATCH = 128
x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
print(
  f'{data.name}: {len(data.y_train)} training and {len(data.y_test)} test '
  f'examples of {data.num_features} features'
)
t_start = time.perf_counter()

# %% [markdown]
# ## SAM: one update per training step
#
# SAM (Foret et al., 2021) takes the gradient at the worst point of a small
# ball around the weights, found by one ascent step,
#
# $$\epsilon = \rho\, g / \|g\|, \qquad
#   g^{SAM} = \nabla L_B(w + \epsilon),$$
#
# and hands it to an inner optimizer (here SGD with momentum). So one SAM
# step costs two forward-backward passes on the same batch. In optax_zoo it
# is still one `update` per training step: the clean gradient `g` is the
# gradient you pass, and the second one comes from the extra update argument
# `grad_fn(params, index=0, num_splits=1)`, a function that returns the
# gradient of the *same batch's* loss at *other* parameters (on part `index`
# of `num_splits` equal parts of the batch, which m-sharpness uses below).
#
# Written by hand for a Flax NNX model with BatchNorm: `grad_fn` merges the
# model's graph with the parameters it is given and a copy of the rest of
# the model state. BatchNorm's running statistics are updated once per
# step, by the clean forward pass; the pass at the ascent point reads them
# (in train mode it normalizes with its batch statistics) and its updates
# land in a throw-away copy, as google-research/sam does.


# %%
class BatchNormMLP(nnx.Module):
  """A one-hidden-layer MLP with BatchNorm."""

  def __init__(self, in_features, hidden, *, rngs):
    self.linear = nnx.Linear(in_features, hidden, rngs=rngs)
    self.norm = nnx.BatchNorm(hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, 10, rngs=rngs)

  def __call__(self, x):
    return self.head(nnx.relu(self.norm(self.linear(x))))


def make_grad_fn(model, xb, yb):
  """``grad_fn(params, index, num_splits)``: the batch gradient elsewhere."""
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)

  def grad_fn(params, index=0, num_splits=1):
    size = xb.shape[0] // num_splits
    x = jax.lax.dynamic_slice_in_dim(xb, index * size, size)
    y = jax.lax.dynamic_slice_in_dim(yb, index * size, size)

    def loss(p):
      twin = nnx.merge(graphdef, p, rest, copy=True)  # state read, not kept
      return training.cross_entropy_loss(twin(x), y)

    return jax.grad(loss)(params)

  return grad_fn


@nnx.jit
def train_step(model, optimizer, xb, yb):
  def loss_fn(model):
    return training.cross_entropy_loss(model(xb), yb)

  # The clean pass: the gradient, and BatchNorm's running statistics.
  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads, grad_fn=make_grad_fn(model, xb, yb))
  return loss


model = BatchNormMLP(data.num_features, HIDDEN[-1], rngs=nnx.Rngs(0))
tx = optax_zoo.sam(optax.sgd(0.05, momentum=0.9), rho=0.05)
optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
rng = np.random.default_rng(0)
for _ in range(STEPS):
  idx = rng.choice(len(data.y_train), BATCH, replace=False)
  loss = train_step(model, optimizer, data.x_train[idx], data.y_train[idx])
model.eval()
accuracy = jnp.mean(jnp.argmax(model(x_test), -1) == y_test)
print(
  f'{STEPS} SAM steps: last batch loss {float(loss):.3f}, test accuracy '
  f'{float(accuracy):.3f} (eval mode: BatchNorm on its running statistics)'
)

# %% [markdown]
# ## SGD, SAM and ASAM over seeds
#
# `optax_zoo.training.train` and `train_seeds` supply `grad_fn` (and every
# other extra argument) at each step, so SAM trains like any optimizer.
# `train_seeds` trains all seeds as one vmapped program. ASAM (Kwon et al.,
# 2021) perturbs in a ball scaled by `|w|`, so its `rho` is larger.


# %%
def model_fn(rngs):
  return training.MLP(data.num_features, HIDDEN, rngs=rngs)


schedule = optax.cosine_decay_schedule(0.1, STEPS)
sgd = optax_zoo.sgd(schedule, momentum=0.9)
RHO = 0.05
methods = {
  'SGD': sgd,
  'SAM': optax_zoo.sam(sgd, rho=RHO),
  'ASAM': optax_zoo.asam(sgd, rho=0.5, eta=0.01),
}
results = {}
for name, tx in methods.items():
  results[name] = training.train_seeds(
    model_fn, tx, data, seeds=SEEDS, steps=STEPS, batch_size=BATCH
  )
  acc = np.asarray(results[name].history.final_accuracy)
  ms_per_step = results[name].history.median_step_time * 1e3
  print(
    f'{name:4s} test accuracy {acc.mean():.3f} +- {acc.std():.3f} over '
    f'{len(SEEDS)} seeds, {ms_per_step:.2f} ms per step (all seeds)'
  )

# %% [markdown]
# ### How flat are the minima?
#
# `analysis.sam_sharpness` is SAM's own measure, the loss increase at the
# worst point of the `rho`-ball (one ascent step by default);
# `analysis.average_sharpness` the increase under Gaussian weight noise of
# scale `sigma`. Both are measured on the same training examples for every
# seed's final weights; the seeds are vmapped.

# %%
n_flat = 256 if SMALL else 1024
flat_batches = (
  jnp.asarray(data.x_train[:n_flat]).reshape(-1, BATCH, data.num_features),
  jnp.asarray(data.y_train[:n_flat]).reshape(-1, BATCH),
)
graphdef = results['SGD'].graphdef


def batch_loss(params, batch):
  return training.cross_entropy_loss(
    nnx.merge(graphdef, params)(batch[0]), batch[1]
  )


@jax.jit
@jax.vmap
def flatness(params):
  worst = analysis.sam_sharpness(batch_loss, params, flat_batches, rho=RHO)
  noisy = analysis.average_sharpness(
    batch_loss,
    params,
    flat_batches,
    sigma=0.01,
    key=jax.random.key(0),
    num_samples=8 if SMALL else 32,
  )
  return worst.base_loss, worst.value, noisy.value


for name, result in results.items():
  loss, worst, noisy = map(np.asarray, flatness(result.params))
  print(
    f'{name:4s} train loss {loss.mean():.4f}  SAM sharpness '
    f'{worst.mean():.2e}  average sharpness {noisy.mean():.2e}'
  )

# %% [markdown]
# ### m-sharpness
#
# The SAM paper finds that perturbing small groups of `m` examples each with
# their own ascent step generalizes better than one perturbation for the
# batch. On several devices that is the per-device batch (`axis_name`); on
# one device `num_splits=k` cuts the batch of `B` examples into `k` parts of
# `m = B / k`: two gradients of `m` examples per part, `2 B` examples'
# worth of gradients in all as plain SAM, but the parts run one after
# another, so the wall time per step grows as `m` shrinks.

# %%
SPLITS = (1, 16) if SMALL else (1, 4, 16, 64)
m_accuracy = {}
for k in SPLITS:
  if k == 1:
    result = results['SAM']
  else:
    tx = optax_zoo.sam(sgd, rho=RHO, num_splits=k)
    result = training.train_seeds(
      model_fn, tx, data, seeds=SEEDS, steps=STEPS, batch_size=BATCH
    )
  m_accuracy[BATCH // k] = np.asarray(result.history.final_accuracy)
  print(
    f'm = {BATCH // k:3d}: test accuracy {m_accuracy[BATCH // k].mean():.3f}'
    f', {result.history.median_step_time * 1e3:.2f} ms per step'
  )

ms = sorted(m_accuracy)
sgd_acc = np.asarray(results['SGD'].history.final_accuracy)
plt.errorbar(
  ms,
  [m_accuracy[m].mean() for m in ms],
  [m_accuracy[m].std() for m in ms],
  marker='o',
  capsize=3,
  label='SAM',
)
plt.axhline(sgd_acc.mean(), color='gray', linestyle='--', label='SGD')
plt.xscale('log', base=2)
plt.xlabel('m, examples per perturbation')
plt.ylabel('test accuracy')
plt.title(f'm-sharpness, batch {BATCH}, rho {RHO}')
plt.legend()
plt.show()

# %% [markdown]
# ## Entropy-SGD at equal gradient evaluations
#
# Entropy-SGD (Chaudhari et al., 2017) descends the local entropy: each
# outer step runs `L` steps of Langevin dynamics from the weights, each on
# its own minibatch, and moves the weights towards the Langevin iterates'
# running mean. One outer step costs `L` minibatch gradients, which it takes
# from `grad_fn` on `L` equal parts of the batch: so the training loop's
# batch holds the `L` minibatches (`batch_size = L * m`). We count `L`
# gradient evaluations per outer step, as the paper does. The wall-clock
# price is higher, and printed below: the loop also takes its usual
# gradient at the weights on the whole `L * m` batch (Entropy-SGD uses it
# only to pass on a NaN), and every Langevin step draws Gaussian noise for
# every weight.
#
# At an equal budget of `G` minibatch gradients of `m` examples, SGD takes
# `G` steps and Entropy-SGD `G / L` outer steps. Both use Nesterov momentum
# and a cosine-decayed rate (Entropy-SGD's outer optimizer is SGD on
# `x - mu`).

# %%
L, M = 5, 32
GRADS = 300 if SMALL else 8000
POINTS = 10
runs = {
  'SGD': (
    optax_zoo.sgd(
      optax.cosine_decay_schedule(0.1, GRADS), momentum=0.9, nesterov=True
    ),
    1,
  ),
  'Entropy-SGD': (
    optax_zoo.entropy_sgd(
      optax_zoo.sgd(
        optax.cosine_decay_schedule(0.3, GRADS // L),
        momentum=0.9,
        nesterov=True,
      ),
      langevin_steps=L,
      gamma=0.03,
      scoping=1e-3,
    ),
    L,
  ),
}
plt.figure()
for name, (tx, per_step) in runs.items():
  steps = GRADS // per_step
  result = training.train_seeds(
    model_fn,
    tx,
    data,
    seeds=SEEDS,
    steps=steps,
    batch_size=M * per_step,
    eval_every=steps // POINTS,
  )
  h = result.history
  acc = np.asarray(h.test_accuracy)
  print(
    f'{name:11s} {steps} steps x {per_step} gradients of {M} examples: '
    f'test accuracy {acc[:, -1].mean():.3f} +- {acc[:, -1].std():.3f}, '
    f'{h.median_step_time * 1e3:.2f} ms per step'
  )
  plt.plot(h.steps * per_step, acc.mean(0), marker='o', label=name)
plt.xlabel(f'minibatch gradients ({M} examples each)')
plt.ylabel('test accuracy')
plt.title(f'equal gradient evaluations, mean of {len(SEEDS)} seeds')
plt.legend()
plt.show()

# %% [markdown]
# ## Three regimes on the sphere
#
# In a scale-invariant network (convolutions without bias followed by
# BatchNorm without affine parameters, frozen head) only the directions of
# the kernels matter, and plain SGD's effective learning rate drifts as
# their norm changes. `sphere_sgd` fixes it: the kernels, as one vector,
# take an SGD step and are projected back onto the sphere of their initial
# radius. Kodryan et al. (2022) find three regimes as the effective learning
# rate (ELR) grows: convergence (the loss keeps falling), a chaotic
# equilibrium (it settles at a level that grows with the ELR and
# fluctuates) and divergence (nothing is learned).
# `training.scale_invariant_mask` picks the kernels; `learning_rate=0.0`
# freezes the head. The three ELRs below lie in the three regimes of the
# grid of `experiments/sharpness/sphere.py` on MNIST-1D (at the small size
# the run is too short to tell them apart).
#
# One program trains every ELR at once: `training.make_train_fn` with
# `vmap=True` maps over a leading axis of the parameters, model state,
# optimizer state and batch indices, and `optax.inject_hyperparams` puts the
# ELR into the optimizer state, so each row of the axis gets its own. All
# rows start from the same weights and see the same batches.

# %%
ELRS = (1e-3, 0.016, 0.1)
SPHERE_STEPS = 100 if SMALL else 2000
model = training.ScaleInvariantCNN(channels=4 if SMALL else 8, rngs=nnx.Rngs(0))
graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # train mode
tx = optax.inject_hyperparams(optax_zoo.sphere_sgd, static_args=('mask',))(
  effective_lr=ELRS[0], mask=training.scale_invariant_mask, learning_rate=0.0
)
stack = lambda tree: jax.tree.map(lambda a: jnp.stack([a] * len(ELRS)), tree)
params, rest = stack(params), stack(rest)
opt_state = jax.vmap(tx.init)(params)
opt_state.hyperparams['effective_lr'] = jnp.asarray(ELRS)
order = np.random.default_rng(0).integers(
  len(data.y_train), size=(SPHERE_STEPS, BATCH)
)
train_fn = training.make_train_fn(graphdef, tx, vmap=True)
params, rest, opt_state, losses = train_fn(
  params,
  rest,
  opt_state,
  jnp.asarray(data.x_train),
  jnp.asarray(data.y_train),
  jnp.asarray(np.stack([order] * len(ELRS)), jnp.int32),
)
losses = np.asarray(losses)
window = SPHERE_STEPS // 20
smooth = np.stack(
  [np.convolve(row, np.ones(window) / window, mode='valid') for row in losses]
)
tenth = SPHERE_STEPS // 10
plt.figure()
for elr, row, curve in zip(ELRS, losses, smooth, strict=True):
  print(
    f'ELR {elr:g}: mean batch loss {row[:tenth].mean():.4f} over the first '
    f'10% of the steps, {row[-tenth:].mean():.4f} over the last 10% '
    f'(std {row[-tenth:].std():.4f})'
  )
  (line,) = plt.plot(
    np.arange(window, SPHERE_STEPS + 1), curve, label=f'ELR {elr:g}'
  )
  plt.plot(
    np.arange(1, SPHERE_STEPS + 1), row, color=line.get_color(), alpha=0.2
  )
plt.axhline(np.log(10), color='gray', linestyle='--', label='chance, ln 10')
plt.yscale('log')
plt.xlabel('step')
plt.ylabel(f'training batch loss (faint), mean of {window} steps')
plt.title('ScaleInvariantCNN, sphere SGD: three regimes')
plt.legend()
plt.show()
print(f'notebook time: {time.perf_counter() - t_start:.0f} s')

# %% [markdown]
# ## The full experiments
#
# The experiments behind these methods, with more seeds, tuned learning
# rates, label noise and every number in a table, live in
# `experiments/sharpness/`: `sam.py` (SGD, Adam, SAM, ASAM and GSAM with
# label noise, m-sharpness and the cost per step), `entropy_replicated.py`
# (Entropy-SGD and Replicated-SGD against SGD at equal gradient evaluations,
# with three flatness measures and their correlation with test accuracy)
# and `sphere.py` (the three regimes over a grid of ELRs). Their results and
# verdicts are in `experiments/RESULTS.md`.
