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
# # optax_zoo quickstart
#
# optax_zoo gives you the optimization methods of deep-learning papers as
# plain optax `GradientTransformation`s. This notebook shows the registry,
# chaining a method with optax, training a Flax NNX model through
# `nnx.Optimizer`, and a short MNIST-1D comparison with a plot.
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/optax-zoo/optax_zoo/blob/main/notebooks/quickstart.ipynb)

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
from optax_zoo import training

# The test suite sets OPTAX_ZOO_SMALL=1 to run this notebook at a tiny size.
SMALL = os.environ.get('OPTAX_ZOO_SMALL') == '1'

# %% [markdown]
# ## The registry
#
# Every method has a `MethodInfo` record: its paper, reference code, state
# memory and known deviations. Build one by name with `optax_zoo.create`.

# %%
for info in optax_zoo.methods():
  print(
    f'{info.name:10s} {info.category:10s} {info.paper.cite():40s} '
    f'state={info.state_copies:g} copies'
  )

tx = optax_zoo.create('adam', learning_rate=1e-3)
print(optax_zoo.get('adan').deviations)

# %% [markdown]
# Bad hyperparameters raise when the optimizer is built, and an unknown name
# suggests the closest ones:

# %%
for build in (
  lambda: optax_zoo.adam(1e-3, b1=1.5),
  lambda: optax_zoo.create('adamm'),
):
  try:
    build()
  except ValueError as e:
    print('ValueError:', e)

# %% [markdown]
# ## Chaining with optax
#
# optax_zoo methods are ordinary transforms: clip, then run Adam inside
# lookahead. `optax_zoo.eval_params` finds the weights the chain wants
# evaluated (lookahead's slow weights) without the loop knowing about it.


# %%
def rosenbrock(p):
  return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2


tx = optax.chain(
  optax.clip_by_global_norm(1.0),
  optax_zoo.lookahead(optax_zoo.adam(3e-2), sync_period=5, alpha=0.5),
)
params = jnp.zeros(2)
state = tx.init(params)


@jax.jit
def step(params, state):
  updates, state = tx.update(jax.grad(rosenbrock)(params), state, params)
  return optax.apply_updates(params, updates), state


for _ in range(200 if SMALL else 2000):
  params, state = step(params, state)
print('fast weights', params)
print('slow weights', optax_zoo.eval_params(state, params))

# %% [markdown]
# ## Flax NNX: `nnx.Optimizer`
#
# Any optax_zoo method plugs into `nnx.Optimizer`. Here an MLP learns sklearn's
# digits with RAdam.

# %%
data = training.digits()
model = training.MLP(data.num_features, (64,), rngs=nnx.Rngs(0))
optimizer = nnx.Optimizer(model, optax_zoo.radam(3e-3), wrt=nnx.Param)


@nnx.jit
def train_step(model, optimizer, x, y):
  def loss_fn(model):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)
  return loss


rng = np.random.default_rng(0)
for _ in range(50 if SMALL else 500):
  idx = rng.choice(len(data.y_train), 64, replace=False)
  loss = train_step(model, optimizer, data.x_train[idx], data.y_train[idx])
accuracy = (model(data.x_test).argmax(-1) == data.y_test).mean()
print(f'final batch loss {loss:.3f}, test accuracy {accuracy:.3f}')

# %% [markdown]
# ## A short MNIST-1D comparison
#
# `training.train_seeds` trains several seeds of one configuration as one
# vmapped, jitted program and returns what it trained (weights, evaluated
# weights, optimizer state, one history per seed). We compare three
# optimizers on the MNIST-1D CNN (Greydanus, 2020) and plot test accuracy
# against steps.

# %%
mnist = training.mnist1d()
steps = 60 if SMALL else 3000
seeds = [0, 1] if SMALL else [0, 1, 2]
results = {}
for name in ('adam', 'sgd', 'lookahead'):
  info = optax_zoo.get(name)
  histories = training.train_seeds(
    lambda rngs: training.CNN1D(rngs=rngs),
    info.build(),
    mnist,
    seeds=seeds,
    steps=steps,
    eval_every=max(1, steps // 15),
  ).histories
  results[name] = histories
  finals = [h.final_accuracy for h in histories]
  print(f'{name:10s} final test accuracy {np.mean(finals):.3f}')

# %%
fig, ax = plt.subplots(figsize=(6, 4))
for name, histories in results.items():
  acc = np.stack([h.test_accuracy for h in histories])
  steps_axis = histories[0].steps
  ax.plot(steps_axis, acc.mean(0), label=name)
  ax.fill_between(steps_axis, acc.min(0), acc.max(0), alpha=0.2)
ax.set_xlabel('step')
ax.set_ylabel('test accuracy')
ax.set_title(f'MNIST-1D CNN, {len(seeds)} seeds')
ax.legend()
plt.show()
