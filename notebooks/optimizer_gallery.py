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
# # Optimizer gallery
#
# Every adaptive optimizer of optax_zoo on two classic 2-D test functions:
# the curved valley of Rosenbrock and the many local minima of Rastrigin.
# Each optimizer gets its own learning rate, the best of a log grid by final
# loss, so the paths compare methods, not one method's favourite rate. All
# rates of the grid run as one vmapped, jitted program per optimizer.
#
# The paths say something about the update rules (sign methods zig-zag,
# layer-wise normalized methods take steps of a fixed length, momentum
# overshoots), little about deep-learning performance: see
# `experiments/RESULTS.md` for that.
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/optax-zoo/optax_zoo/blob/main/notebooks/optimizer_gallery.ipynb)

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

import optax_zoo
from optax_zoo import training

# The test suite sets OPTAX_ZOO_SMALL=1 to run this notebook at a tiny size.
SMALL = os.environ.get('OPTAX_ZOO_SMALL') == '1'
STEPS = 40 if SMALL else 1000
GRID = jnp.logspace(-4, 0.5, 4 if SMALL else 19)
# K-FAC preconditions the kernels of dense and convolutional layers from
# their activations and output gradients: a point in the plane has no
# layers, so it is left out here (its example is in the README).
METHODS = [
  m for m in optax_zoo.methods('adaptive') if 'kfac_stats' not in m.extra_args
]
print(len(METHODS), 'optimizers:', ', '.join(m.name for m in METHODS))


# %% [markdown]
# ## The two functions
#
# Rosenbrock has its minimum 0 at (1, 1) at the end of a narrow curved
# valley; Rastrigin has its minimum 0 at the origin among a lattice of local
# minima.


# %%
def rosenbrock(p):
  x, y = p[0], p[1]
  return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def rastrigin(p):
  return 20 + jnp.sum(p**2 - 10 * jnp.cos(2 * jnp.pi * p))


# (function, start, minimum, plot window as ((x_min, x_max), (y_min, y_max)))
PROBLEMS = {
  'Rosenbrock': (
    rosenbrock,
    jnp.array([-1.5, 2.5]),
    (1.0, 1.0),
    ((-2.0, 2.0), (-1.0, 3.0)),
  ),
  'Rastrigin': (
    rastrigin,
    jnp.array([-2.3, 3.6]),
    (0.0, 0.0),
    ((-4.5, 4.5), (-4.5, 4.5)),
  ),
}


# %% [markdown]
# ## Paths with tuned learning rates
#
# Methods that need more than the gradient (KOALA takes the loss value and
# its second moment over the batch) receive it through optax's extra update
# arguments, as the training loop in `optax_zoo.training` does.


# %%
def path(info, loss_fn, x0, lr):
  tx = info.build(lr)

  def step(carry, _):
    x, state = carry
    grad = jax.grad(loss_fn)(x)
    # The package's one supplier of extra arguments; a deterministic
    # function is a batch of one example (its loss is a length-1 vector).
    extra = training.supply_extra_args(
      info.extra_args, lambda p, _: loss_fn(p)[None], x, jnp.zeros(1)
    )
    updates, state = tx.update(grad, state, x, **extra)
    x = optax.apply_updates(x, updates)
    return (x, state), x

  _, xs = jax.lax.scan(step, (x0, tx.init(x0)), None, length=STEPS)
  return jnp.concatenate([x0[None], xs])


def tuned_path(info, loss_fn, x0):
  """The path at the grid rate with the lowest final loss."""
  paths = jax.jit(jax.vmap(lambda lr: path(info, loss_fn, x0, lr)))(GRID)
  final = jax.vmap(loss_fn)(paths[:, -1])
  final = jnp.where(jnp.isfinite(final), final, jnp.inf)
  best = int(jnp.argmin(final))
  return float(GRID[best]), np.asarray(paths[best]), float(final[best])


results = {
  problem: {m.name: tuned_path(m, fn, x0) for m in METHODS}
  for problem, (fn, x0, *_) in PROBLEMS.items()
}

print(f'{"method":22s}' + ''.join(f'{p:>28s}' for p in PROBLEMS))
for m in METHODS:
  cells = ''.join(
    f'{results[p][m.name][2]:14.2e} (lr {results[p][m.name][0]:.1e})'
    for p in PROBLEMS
  )
  print(f'{m.name:22s}{cells}')


# %% [markdown]
# ## Side by side
#
# One panel per optimizer, the Rosenbrock path on the left and the Rastrigin
# path on the right of each pair, over log-scaled loss contours. The star is
# the minimum.


# %%
def contours(ax, fn, window):
  xs, ys = (np.linspace(lo, hi, 200) for lo, hi in window)
  grid = jnp.stack(np.meshgrid(xs, ys), -1)
  z = jax.vmap(jax.vmap(fn))(grid)
  ax.contourf(xs, ys, np.log1p(np.asarray(z)), levels=30, cmap='viridis')
  ax.set_xlim(xs[0], xs[-1])
  ax.set_ylim(ys[0], ys[-1])
  ax.set_xticks([])
  ax.set_yticks([])


cols = 4
rows = -(-len(METHODS) // cols)
fig, axes = plt.subplots(
  rows, 2 * cols, figsize=(3.6 * cols, 2.0 * rows), squeeze=False
)
for ax in axes.flat:
  ax.axis('off')
for i, m in enumerate(METHODS):
  for j, (problem, (fn, _, best, window)) in enumerate(PROBLEMS.items()):
    ax = axes[i // cols, 2 * (i % cols) + j]
    ax.axis('on')
    contours(ax, fn, window)
    lr, xs, final = results[problem][m.name]
    ax.plot(xs[:, 0], xs[:, 1], 'w.-', ms=1.5, lw=0.8)
    ax.plot(*best, 'r*', ms=7)
    label = f'{m.name}: ' if j == 0 else ''
    ax.set_title(f'{label}{problem[:4]}. lr {lr:.0e}', fontsize=7, loc='left')
plt.tight_layout()
plt.show()

# %% [markdown]
# On Rastrigin, a method that ends far from the origin is not broken: the
# function has a local minimum near every integer point, and which one a
# method settles in depends on its step sizes early on. Rosenbrock is the
# better test of steady progress along a badly conditioned valley.
