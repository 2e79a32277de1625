"""A tiny MLP classification problem shared by the analysis tests."""

import jax
import jax.numpy as jnp
import numpy as np
import optax


def mlp_logits(params, x):
  h = jnp.tanh(x @ params['w1'] + params['b1'])
  return h @ params['w2'] + params['b2']


def mlp_loss(params, batch):
  x, y = batch
  logits = mlp_logits(params, x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_problem(dtype, num_examples=24, sizes=(4, 5, 3), seed=0):
  """Parameters (43 of them by default) and data, as NumPy in `dtype`."""
  rng = np.random.default_rng(seed)
  d_in, d_hidden, d_out = sizes
  params = {
    'w1': rng.normal(size=(d_in, d_hidden)) / np.sqrt(d_in),
    'b1': 0.1 * rng.normal(size=d_hidden),
    'w2': rng.normal(size=(d_hidden, d_out)) / np.sqrt(d_hidden),
    'b2': 0.1 * rng.normal(size=d_out),
  }
  x = rng.normal(size=(num_examples, d_in))
  y = rng.integers(0, d_out, size=num_examples)
  params = {k: np.asarray(p, dtype) for k, p in params.items()}
  return params, (np.asarray(x, dtype), y.astype(np.int32))


def dense_hessian(fun, params):
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  return jax.hessian(lambda f: fun(unravel(f)))(flat)
