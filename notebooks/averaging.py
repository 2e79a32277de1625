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
# # Weight averaging and ensembles: SWA, SWAG and FGE on MNIST-1D
#
# Wrap any optimizer, train as usual, and evaluate the averaged weights with
# `optax_zoo.eval_params`, or the posterior ensemble. This notebook trains a
# small CNN on MNIST-1D with SWA, draws SWAG samples for a Bayesian model
# average and compares calibration in a reliability plot, collects an FGE
# ensemble, and trains a Bezier curve between two solutions.
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/optax-zoo/optax_zoo/blob/main/notebooks/averaging.ipynb)

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
from optax_zoo.analysis import (
  expected_calibration_error,
  negative_log_likelihood,
  reliability_plot,
)

# The test suite sets OPTAX_ZOO_SMALL=1 to run this notebook at a tiny size.
SMALL = os.environ.get('OPTAX_ZOO_SMALL') == '1'
STEPS = 60 if SMALL else 1500
EPOCH = 31  # steps per epoch at batch 128

data = training.digits() if SMALL else training.mnist1d()
x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)


def make_model(seed):
  if SMALL:
    return training.MLP(data.num_features, (32,), rngs=nnx.Rngs(seed))
  return training.CNN1D(rngs=nnx.Rngs(seed))


# %% [markdown]
# ## SWA in five lines
#
# `swa` wraps SGD; the training loop only ever sees plain parameters. After
# training, `eval_params(opt, model)` returns the running mean of the
# weights as an `nnx.State`. For a BatchNorm model use
# `optax_zoo.eval_model(opt, model, batches)` instead: a copy of the model
# with the averaged weights and BatchNorm statistics recomputed for them on
# a few training batches.


# %%
def fit(tx, seed=0):
  """Trains a model with `tx`; returns the model and optimizer state."""
  model = make_model(seed)
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @nnx.jit
  def step(model, opt, xb, yb):
    loss_fn = lambda m: training.cross_entropy_loss(m(xb), yb)
    opt.update(model, nnx.grad(loss_fn)(model))

  rng = np.random.default_rng(seed)
  for _ in range(STEPS):
    idx = rng.choice(len(data.y_train), 128, replace=False)
    step(model, opt, data.x_train[idx], data.y_train[idx])
  return model, opt


def probs_of(model, params):
  """Test-set probabilities of ``model``'s architecture with ``params``."""
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)
  return jax.nn.softmax(nnx.merge(graphdef, params, rest)(x_test))


swa_start = int(0.75 * STEPS)
schedule = optax_zoo.swa_schedule(0.05, 0.01, swa_start)
tx = optax_zoo.swag(
  optax.sgd(schedule, momentum=0.9),
  rank=10,
  start_step=swa_start,
  every_k=4 if SMALL else EPOCH // 2,
)
model, opt = fit(tx)
params = nnx.state(model, nnx.Param)
swa_params = optax_zoo.eval_params(opt, model)
probs = {'SGD': probs_of(model, params), 'SWA': probs_of(model, swa_params)}

# %% [markdown]
# ## SWAG: a Bayesian model average
#
# The same run kept SWAG's moments and the last deviations. Draw weights
# with `swag_sample` and average the predicted probabilities; `params`
# brings in the last snapshot (the weights after the final step, which the
# state collects only at the next update).

# %%
swag_state = jax.tree.map(lambda v: v[...], opt.opt_state)
probs['SWAG'] = optax_zoo.bayesian_model_average(
  lambda p: probs_of(model, p),
  swag_state,
  jax.random.key(0),
  num_samples=4 if SMALL else 30,
  params=params,
)
reliability = {}
for name, p in probs.items():
  ece, reliability[name] = expected_calibration_error(p, y_test)
  acc = float(jnp.mean(jnp.argmax(p, -1) == y_test))
  nll = float(negative_log_likelihood(p, y_test))
  print(f'{name:5s} accuracy {acc:.3f}  NLL {nll:.3f}  ECE {float(ece):.3f}')
reliability_plot(reliability)
plt.show()

# %% [markdown]
# ## FGE: an ensemble from one run
#
# A triangular cyclic rate after pre-training; `fge` stores the weights at
# each cycle's low point, and `fge_ensemble_predict` averages them.

# %%
pre, cycle = STEPS // 2, 8 if SMALL else 4 * EPOCH
fge_tx = optax_zoo.fge(
  optax.sgd(
    optax.join_schedules(
      [
        optax_zoo.swa_schedule(0.05, 0.02, pre),
        optax_zoo.fge_schedule(0.02, 5e-4, cycle),
      ],
      [pre],
    ),
    momentum=0.9,
  ),
  cycle_steps=cycle,
  num_snapshots=4,
  start_step=pre,
)
fge_model, fge_opt = fit(fge_tx, seed=1)
fge_state = jax.tree.map(lambda v: v[...], fge_opt.opt_state)
ensemble = optax_zoo.fge_ensemble_predict(
  lambda p: probs_of(fge_model, p), fge_state, nnx.state(fge_model, nnx.Param)
)
single = probs_of(fge_model, nnx.state(fge_model, nnx.Param))
print('snapshots:', int(fge_state.n_snapshots))
for name, p in (('last iterate', single), ('FGE ensemble', ensemble)):
  print(f'{name}: accuracy {float(jnp.mean(jnp.argmax(p, -1) == y_test)):.3f}')

# %% [markdown]
# ## A curve between two solutions
#
# Train the bend of a quadratic Bezier curve between the SWAG run's weights
# and the FGE run's, with a random `t` each step, then compare the test
# accuracy along the curve with the straight line.

# %%
graphdef, _, rest = nnx.split(model, nnx.Param, ...)
w1, w2 = params, nnx.state(fge_model, nnx.Param)
x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)


def logits(p, x):
  return nnx.merge(graphdef, p, rest)(x)


curve_loss = optax_zoo.curve_loss_fn(
  lambda p, i: training.cross_entropy_loss(logits(p, x_train[i]), y_train[i]),
  w1,
  w2,
)
bend = jax.tree.map(lambda a, b: (a + b) / 2, w1, w2)
bend_tx = optax.sgd(0.02, momentum=0.9)
bend_state = bend_tx.init(bend)


@jax.jit
def bend_step(bend, state, key, i):
  grads = jax.grad(curve_loss)(bend, key, i)
  updates, state = bend_tx.update(grads, state, bend)
  return optax.apply_updates(bend, updates), state


rng = np.random.default_rng(0)
for k in range(30 if SMALL else 600):
  idx = rng.choice(len(data.y_train), 128, replace=False)
  bend, bend_state = bend_step(bend, bend_state, jax.random.key(k), idx)

accuracy = lambda p: jnp.mean(jnp.argmax(logits(p, x_test), -1) == y_test)
ts = jnp.linspace(0, 1, 11 if SMALL else 21)
on_curve = optax_zoo.evaluate_curve(accuracy, w1, w2, bend, ts=ts)
on_line = optax_zoo.evaluate_curve(accuracy, w1, w2, ts=ts)
plt.plot(ts, on_curve, label='Bezier curve')
plt.plot(ts, on_line, label='straight line')
plt.xlabel('t')
plt.ylabel('test accuracy')
plt.legend()
plt.show()
