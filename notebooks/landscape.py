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
# # Curvature and loss landscapes in pure JAX
#
# `optax_zoo.analysis` measures a trained model the way PyHessian and
# loss-landscape do in PyTorch: the Hessian's top eigenvalues, trace and
# spectral density, filter-normalized 1-D and 2-D landscapes, the barrier
# between two solutions and the gradient noise scale. Every tool takes a
# function of the parameters and any pytree, here a Flax NNX model's
# `nnx.Param` state.
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/optax-zoo/optax_zoo/blob/main/notebooks/landscape.ipynb)

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

from optax_zoo import analysis, training
from optax_zoo.analysis import plotting

# The test suite sets OPTAX_ZOO_SMALL=1 to run this notebook at a tiny size.
SMALL = os.environ.get('OPTAX_ZOO_SMALL') == '1'
data = training.digits() if SMALL else training.mnist1d()
STEPS = 100 if SMALL else 3000
HIDDEN = (16,) if SMALL else (100, 100)

# %% [markdown]
# ## Train two models
#
# Two seeds of the same MLP, so we can also look at the path between them.

# %%
models = []
for seed in (0, 1):
  model = training.MLP(data.num_features, HIDDEN, rngs=nnx.Rngs(seed))
  history = training.train(
    model,
    optax.adam(1e-3 if not SMALL else 1e-2),
    data,
    steps=STEPS,
    seed=seed,
  ).history
  model.eval()
  models.append(model)
  print(f'seed {seed}: test accuracy {history.final_accuracy:.3f}')

graphdef, params, rest = nnx.split(models[0], nnx.Param, ...)
params_b = nnx.split(models[1], nnx.Param, ...)[1]
n = 512 if SMALL else 2000
x, y = jnp.asarray(data.x_train[:n]), jnp.asarray(data.y_train[:n])


def logits_fn(p, x):
  return nnx.merge(graphdef, p, rest)(x)


def loss_fn(p):
  return training.cross_entropy_loss(logits_fn(p, x), y)


def metrics_fn(p):
  logits = logits_fn(p, x)
  return {
    'loss': training.cross_entropy_loss(logits, y),
    'accuracy': jnp.mean(jnp.argmax(logits, -1) == y),
  }


num_params = jax.flatten_util.ravel_pytree(params)[0].size
print(num_params, 'parameters;', n, 'training examples in the Hessian')

# %% [markdown]
# ## Hessian spectrum
#
# Lanczos with full reorthogonalization gives the top eigenvalues; Hutchinson
# with Rademacher probes the trace with its standard error; stochastic
# Lanczos quadrature the whole density.

# %%
key = jax.random.key(0)
top = analysis.top_hessian_eigenvalues(loss_fn, params, key=key, k=3)
trace = analysis.hessian_trace(
  loss_fn, params, key=key, num_samples=20 if SMALL else 100
)
print('top eigenvalues', np.round(top.eigenvalues, 3))
print(f'products used: {top.num_matvecs}')
print(f'trace {float(trace.trace):.3f} +- {float(trace.stderr):.3f}')

density = analysis.spectral_density(
  loss_fn,
  params,
  key=key,
  num_probes=2 if SMALL else 5,
  lanczos_steps=30 if SMALL else 80,
)
ax = plotting.plot_spectral_density(density)
ax.set_title('Hessian eigenvalue density (SLQ)')
plt.show()

# %% [markdown]
# The generalized Gauss-Newton matrix drops the model's second derivatives;
# for cross-entropy it is positive semi-definite and its top eigenvalue is
# usually close to the Hessian's at a trained point.

# %%
ggn_top = analysis.top_hessian_eigenvalues(
  lambda p, batch: logits_fn(p, batch[0]),
  params,
  batches=[(x, y)],
  ggn_loss_fn=lambda z, batch: training.cross_entropy_loss(z, batch[1]),
  key=key,
)
print(f'GGN top eigenvalue {float(ggn_top.eigenvalues[0]):.3f}')

# %% [markdown]
# ## Filter-normalized landscapes
#
# Random directions are rescaled filter by filter to the weights' norms
# (biases zeroed), as in Li et al. (2018), then the loss and accuracy are
# evaluated on a grid, jitted and vmapped over grid points.

# %%
k1, k2 = jax.random.split(jax.random.key(1))
d1 = analysis.random_direction(k1, params)
d2 = analysis.random_direction(k2, params)
coords = jnp.linspace(-1.0, 1.0, 9 if SMALL else 41)
line = analysis.loss_surface(metrics_fn, params, [d1], [coords])
surface = analysis.loss_surface(
  metrics_fn, params, [d1, d2], [coords, coords], batch_size=64
)

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
plotting.plot_line(coords, line['loss'], ax=axes[0], label='loss')
plotting.plot_line(coords, line['accuracy'], ax=axes[0], label='accuracy')
axes[0].legend()
plotting.plot_contour((coords, coords), surface['loss'], ax=axes[1])
axes[1].set_title('training loss, filter-normalized plane')
plt.show()

# %% [markdown]
# ## Between two solutions
#
# The loss along the segment between the two seeds, its barrier, and the
# plane through the two solutions and their average (Garipov et al.'s
# orthonormal basis, at true scale). CKA compares the two models' logits.

# %%
path = analysis.interpolate(loss_fn, params, params_b, num_points=11)
print(f'barrier on the linear path: {float(path.barrier):.3f}')
midpoint = jax.tree.map(lambda a, b: 0.5 * (a + b), params, params_b)
midpoint = jax.tree.map(
  lambda m, d: m + 0.1 * d, midpoint, analysis.random_direction(k1, params)
)
plane = analysis.plane(params, params_b, midpoint)
lo = float(plane.coords.min()) - 0.5
hi = float(plane.coords.max()) + 0.5
grid = jnp.linspace(lo, hi, 9 if SMALL else 31)
plane_loss = analysis.loss_surface(
  loss_fn, plane.origin, [plane.u, plane.v], [grid, grid], batch_size=64
)
ax = plotting.plot_contour((grid, grid), plane_loss, points=plane.coords)
ax.set_title('loss in the plane of the two seeds and their perturbed mean')
plt.show()
print(
  'CKA of the logits:',
  float(analysis.cka(logits_fn(params, x), logits_fn(params_b, x))),
)

# %% [markdown]
# ## Gradient noise scale
#
# McCandlish et al.'s simple noise scale B_simple = tr(Sigma) / |G|^2 from
# one batch split in parts: the batch size where training stops gaining from
# larger batches.

# %%
ns = analysis.gradient_noise_scale(
  lambda p, batch: training.cross_entropy_loss(
    logits_fn(p, batch[0]), batch[1]
  ),
  params,
  (x, y),
  num_splits=16,
)
print(f'B_simple at the trained point: {float(ns.b_simple):.1f} examples')
