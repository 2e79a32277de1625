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
# # Sparse training from scratch: RigL, SET and static masks on MNIST-1D
#
# `optax_zoo.rigl` wraps any optimizer and trains a network that is sparse
# from the first step (Evci et al. 2020): a boolean mask per weight lives in
# the optimizer state, and every `update_every` steps the weakest active
# weights are dropped and as many connections grown where the dense gradient
# is largest. This notebook spreads a sparsity budget over layers (uniform
# against ERK), trains RigL in an `nnx.Optimizer` loop, watches its masks
# evolve, and plots accuracy against sparsity for RigL, SET and a static
# random mask.
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/optax-zoo/optax_zoo/blob/main/notebooks/sparse_training.ipynb)

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

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

import optax_zoo
from optax_zoo import sparsity, training

# The test suite sets OPTAX_ZOO_SMALL=1 to run this notebook at a tiny size.
SMALL = os.environ.get('OPTAX_ZOO_SMALL') == '1'
STEPS = 60 if SMALL else 2000
UPDATE_EVERY = 10 if SMALL else 100

data = training.digits() if SMALL else training.mnist1d()


def make_model(seed):
  if SMALL:
    return training.MLP(data.num_features, (32, 32), rngs=nnx.Rngs(seed))
  return training.CNN1D(rngs=nnx.Rngs(seed))


def named_leaves(tree):
  """{'conv1/kernel': leaf, ...} for a parameter or mask tree."""
  named = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    keys = [getattr(k, 'key', getattr(k, 'name', k)) for k in path]
    named['/'.join(str(k) for k in keys if k != 'value')] = leaf
  return named


# %% [markdown]
# ## Where the zeros go: uniform against ERK
#
# `sparsity_distribution` spreads an overall sparsity over the kernels
# (leaves with two or more dimensions; biases stay dense). Uniform gives
# every layer the same density; Erdos-Renyi-Kernel (ERK) makes a layer's
# density proportional to the sum of its dimensions over their product, so
# small layers stay denser, and rescales so the total matches.

# %%
params = nnx.state(make_model(0), nnx.Param)
kernels = {
  name: p.shape for name, p in named_leaves(params).items() if p.ndim >= 2
}
fig, ax = plt.subplots(figsize=(6, 3))
width = 0.4
for i, distribution in enumerate(('uniform', 'erk')):
  masks = sparsity.init_masks(
    jax.random.key(0), params, 0.9, distribution=distribution
  )
  named = named_leaves(masks)
  densities = [float(np.mean(named[name])) for name in kernels]
  x = np.arange(len(kernels)) + i * width
  ax.bar(x, densities, width, label=distribution)
ax.set_xticks(np.arange(len(kernels)) + width / 2, list(kernels), rotation=20)
ax.set_ylabel('density')
ax.set_title('per-layer density at 90% sparsity')
ax.legend()
plt.show()

# %% [markdown]
# ## RigL in an `nnx.Optimizer` loop
#
# The masks are part of the optimizer state, so a plain Flax NNX loop trains
# a sparse model: `nnx.Optimizer` hands the wrapper the parameters with each
# gradient, and the returned updates keep pruned weights exactly zero. Every
# `UPDATE_EVERY` steps the step is a mask update (no optimizer step). We
# record the masks along the way.

# %%
model = make_model(0)
tx = optax_zoo.rigl(
  optax.sgd(0.1, momentum=0.9),
  sparsity=0.9,
  total_steps=STEPS,
  update_every=UPDATE_EVERY,
  key=0,
)
optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)


@nnx.jit
def train_step(model, optimizer, x, y):
  def loss_fn(model):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)
  return loss


def current_masks(optimizer):
  state = nnx.state(optimizer.opt_state)
  return jax.tree.map(np.asarray, nnx.to_pure_dict(state)['masks'])


rng = np.random.default_rng(0)
snapshots = {0: current_masks(optimizer)}
for step in range(1, STEPS + 1):
  idx = rng.choice(len(data.y_train), 128, replace=False)
  loss = train_step(model, optimizer, data.x_train[idx], data.y_train[idx])
  if step % (STEPS // 4) == 0:
    snapshots[step] = current_masks(optimizer)
accuracy = (model(data.x_test).argmax(-1) == data.y_test).mean()
weights = nnx.state(model, nnx.Param)
nonzero = sum(int(jnp.sum(w != 0)) for w in jax.tree.leaves(weights))
total = sum(w.size for w in jax.tree.leaves(weights))
print(f'test accuracy {accuracy:.3f}, {nonzero} of {total} weights nonzero')

# %% [markdown]
# ## Masks evolving
#
# The last layer's mask at the start and after every quarter of training
# (one row per class, one column per input feature), and for every kernel
# the fraction of its initial connections still active. The number of
# active weights never changes; which ones are active does: fast at first,
# then less as the cosine-decayed drop fraction shrinks, and not at all
# after `end_fraction` (75%) of training. Growth follows the dense
# gradient, so connections gather on the input features that carry signal
# (whole columns fill in) and leave the dead ones.

# %%
flat = {step: named_leaves(m) for step, m in snapshots.items()}
last = [name for name in flat[0] if name in kernels][-1]
fig, axes = plt.subplots(len(flat), 1, figsize=(8, 1.1 * len(flat)))
for ax, (step, masks) in zip(axes, flat.items(), strict=True):
  # One row per output unit, one column per input feature.
  ax.imshow(masks[last].T, cmap='Greys', aspect='auto', interpolation='nearest')
  ax.set_ylabel(f'step {step}', rotation=0, ha='right', va='center')
  ax.set_xticks([])
  ax.set_yticks([])
axes[0].set_title(f'mask of {last} (black: active)')
plt.show()

fig, ax = plt.subplots(figsize=(5, 3))
for name in kernels:
  kept = [
    float(np.sum(masks[name] & flat[0][name]) / np.sum(flat[0][name]))
    for masks in flat.values()
  ]
  ax.plot(list(flat), kept, marker='o', label=name)
ax.set_xlabel('step')
ax.set_ylabel('initial connections still active')
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Accuracy against sparsity
#
# RigL, SET (random growth) and a static random mask, each with ERK, at
# three sparsities, against the dense model, all with SGD momentum at the
# learning-rate grid's optimum of each method (`optax_zoo.get(name)`).
# Each seed draws its own mask (`key=seed`). The full experiment, with ten
# seeds, uniform masks, a small-dense baseline and FLOPs, is
# `python -m experiments.sparsity.rigl`.

# %%
sparsities = (0.8,) if SMALL else (0.5, 0.8, 0.9, 0.95)
seeds = (0,) if SMALL else (0, 1, 2)


def final_accuracy(tx, seed):
  return training.train(
    make_model(seed), tx, data, steps=STEPS, seed=seed, eval_every=STEPS
  ).history.final_accuracy


dense_lr = optax_zoo.get('sgd').learning_rate
dense = [
  final_accuracy(optax.sgd(dense_lr, momentum=0.9), seed) for seed in seeds
]
curves = {}
for name in ('rigl', 'set_sparse', 'static_sparse'):
  info = optax_zoo.get(name)
  inner = optax.sgd(info.learning_rate, momentum=0.9)
  kwargs = (
    {}
    if name == 'static_sparse'
    else {
      'total_steps': STEPS,
      'update_every': UPDATE_EVERY,
    }
  )
  curves[name] = [
    [
      final_accuracy(info.factory(inner, sparsity=s, key=seed, **kwargs), seed)
      for seed in seeds
    ]
    for s in sparsities
  ]
  print(name, [f'{np.mean(a):.3f}' for a in curves[name]])

# %%
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.axhline(np.mean(dense), color='k', linestyle='--', label='dense')
for name, accs in curves.items():
  accs = np.asarray(accs)
  ax.errorbar(
    sparsities,
    accs.mean(1),
    yerr=accs.std(1) if len(seeds) > 1 else None,
    marker='o',
    capsize=3,
    label=name,
  )
ax.set_xlabel('sparsity')
ax.set_ylabel('final test accuracy')
ax.set_title(f'{data.name}, {len(seeds)} seed(s), ERK')
ax.legend()
plt.show()
