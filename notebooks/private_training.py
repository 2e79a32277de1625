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
# # Differentially private training on MNIST-1D
#
# `optax_zoo.training.train_private` runs DP-SGD (Abadi et al., 2016) on a
# Flax NNX model with every part chosen so that they agree: Poisson batches
# padded to a fixed size with a mask (one compiled step), the sum of
# per-example gradients clipped to `clip_norm` (ghost clipping for dense and
# convolutional layers), Gaussian noise `noise_multiplier * clip_norm`
# divided by the *expected* batch size, chained before any optimizer, and
# the epsilon of dp-accounting's accountants for exactly that sampling.
#
# This notebook trains a small CNN privately at a target epsilon, prints the
# privacy report, and plots test accuracy against epsilon next to the
# non-private model.
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/optax-zoo/optax_zoo/blob/main/notebooks/private_training.ipynb)

# %%
# In Colab, install optax_zoo from its repository; elsewhere this does
# nothing (install it with the README's command instead).
import sys

if 'google.colab' in sys.modules:
  import subprocess

  repo = 'git+https://github.com/optax-zoo/optax_zoo'
  spec = f'optax-zoo[experiments,privacy] @ {repo}'
  pip = [sys.executable, '-m', 'pip', 'install', '-q']
  subprocess.run([*pip, spec], check=True)

# %%
import os

import jax.numpy as jnp
import matplotlib.pyplot as plt
import optax
from flax import nnx

import optax_zoo
from optax_zoo import training

# The test suite sets OPTAX_ZOO_SMALL=1 to run this notebook at a tiny size.
SMALL = os.environ.get('OPTAX_ZOO_SMALL') == '1'
STEPS = 40 if SMALL else 1500
BATCH = 64 if SMALL else 256  # the expected batch size q N
DELTA = 1e-5
CLIP = 1.0
# A coarse PLD grid when small (fast, slightly pessimistic); the library's
# default 1e-4 otherwise.
PLD = 1e-2 if SMALL else 1e-4
EPSILONS = (1.0, 3.0, 8.0)

data = training.digits() if SMALL else training.mnist1d()
x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)


def make_model(seed=0):
  if SMALL:
    return training.MLP(data.num_features, (32,), rngs=nnx.Rngs(seed))
  return training.CNN1D(rngs=nnx.Rngs(seed))


def make_tx():
  # Polyak averaging of the second half of the private iterates (SWA with
  # a constant step): post-processing, so it costs no privacy.
  sgd = optax.sgd(0.5 if SMALL else 0.25, momentum=None if SMALL else 0.9)
  return optax_zoo.swa(sgd, start_step=STEPS // 2)


# %% [markdown]
# ## One private run and its privacy report
#
# `target_epsilon` calibrates the noise multiplier with dp-accounting for the
# planned steps. The batches are Poisson with rate `q = BATCH / N`, padded to
# a few standard deviations above `q N`; a batch that would overflow is
# truncated at random, so the run is accounted as *truncated* Poisson (PLD;
# dp-accounting's RDP accountant cannot account truncation and says so in
# the report). The test set is scored on `eval_params`: here the running
# average of the private iterates.

# %%
result = training.train_private(
  make_model(),
  make_tx(),
  data,
  clip_norm=CLIP,
  target_epsilon=3.0,
  delta=DELTA,
  expected_batch_size=BATCH,
  steps=STEPS,
  eval_every=max(1, STEPS // 10),
  pld_discretization=PLD,
)
print(result.report)
print(f'test accuracy (averaged iterates): {result.history.final_accuracy:.3f}')

fig, ax = plt.subplots(1, 2, figsize=(9, 3))
ax[0].plot(result.history.steps, result.history.test_accuracy)
ax[0].set(xlabel='step', ylabel='test accuracy')
ax[1].plot(result.history.steps, result.epsilons)
ax[1].set(xlabel='step', ylabel=f'epsilon (delta={DELTA:g})')
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Accuracy against epsilon
#
# The same model and optimizer at a few target epsilons (each calibrates
# its own noise multiplier), scored on the last private iterate and on the
# average of the iterates, against the same optimizer trained without
# privacy on shuffled batches of the same size.

# %%
last_fn = training.make_eval_fn(result.graphdef)
last, averaged, sigmas = [], [], []
for eps in EPSILONS:
  r = training.train_private(
    make_model(),
    make_tx(),
    data,
    clip_norm=CLIP,
    target_epsilon=eps,
    delta=DELTA,
    expected_batch_size=BATCH,
    steps=STEPS,
    eval_every=STEPS,
    pld_discretization=PLD,
  )
  averaged.append(r.history.final_accuracy)
  last.append(float(last_fn(r.params, r.model_state, x_test, y_test)[1]))
  sigmas.append(r.noise_multiplier)
  print(
    f'epsilon {eps:g}: sigma {r.noise_multiplier:.3f}, '
    f'accuracy {last[-1]:.3f} (last) {averaged[-1]:.3f} (averaged)'
  )

plain = training.train(
  make_model(),
  make_tx(),
  data,
  steps=STEPS,
  batch_size=BATCH,
  eval_every=STEPS,
)
print(f'non-private: accuracy {plain.history.final_accuracy:.3f}')

plt.figure(figsize=(5, 3.5))
plt.plot(EPSILONS, last, 'o-', label='DP-SGD, last iterate')
plt.plot(EPSILONS, averaged, 's-', label='DP-SGD, averaged iterates')
plt.axhline(
  plain.history.final_accuracy, color='k', ls='--', label='non-private'
)
plt.xscale('log')
plt.xticks(EPSILONS, [f'{e:g}' for e in EPSILONS])
plt.xlabel(f'epsilon (delta={DELTA:g})')
plt.ylabel('test accuracy')
plt.legend()
plt.show()
