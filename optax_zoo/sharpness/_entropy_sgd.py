"""Entropy-SGD (Chaudhari et al., 2017): SGD on the local entropy."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_zoo._src import validation as v

__all__ = ['EntropySGDState', 'entropy_sgd']


class EntropySGDState(NamedTuple):
  """State of `entropy_sgd`.

  Attributes:
    count: outer steps taken, int32 (the ``t`` of the scoping
      ``gamma (1 + scoping)^t``).
    rng_key: the raw data (uint32, `jax.random.key_data`) of the PRNG key of
      the Langevin noise, split at every step (raw so that the state
      serializes and counts its bytes like any array).
    inner_state: the outer (``inner``) optimizer's state.
  """

  count: jax.Array
  rng_key: jax.Array
  inner_state: optax.OptState


def _work_dtype(dtype: Any) -> Any:
  """The dtype of the Langevin iterates: at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


def _langevin_noise(key: jax.Array, step: Any, params: Any) -> Any:
  """The standard normal draws of Langevin step ``step`` (one per entry).

  Step ``i`` of an outer step with key ``k`` draws, for the ``j``-th leaf of
  ``params``, ``normal(split(fold_in(k, i), n_leaves)[j])`` in float32 (or
  wider); the parity tests use this function to feed the same draws to the
  reference transcription.
  """
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.fold_in(key, step), len(leaves))
  draws = [
    jax.random.normal(k, jnp.shape(p), _work_dtype(jnp.result_type(p)))
    for k, p in zip(keys, leaves, strict=True)
  ]
  return jax.tree.unflatten(treedef, draws)


def _as_key(key: Any) -> jax.Array:
  if isinstance(key, bool):
    raise ValueError(f'`key` must be an int seed or a PRNG key, got {key!r}.')
  if isinstance(key, int):
    return jax.random.key(key)
  if isinstance(key, jax.Array):
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
      return key
    if key.dtype == jnp.uint32 and key.shape == (2,):
      return jax.random.wrap_key_data(key)
  raise ValueError(f'`key` must be an int seed or a PRNG key, got {key!r}.')


def entropy_sgd(
  inner: optax.GradientTransformation,
  *,
  langevin_steps: int = 20,
  gamma: jax.typing.ArrayLike = 0.03,
  scoping: jax.typing.ArrayLike = 1e-3,
  langevin_lr: jax.typing.ArrayLike = 0.1,
  noise: jax.typing.ArrayLike = 1e-4,
  mu_decay: jax.typing.ArrayLike = 0.75,
  langevin_momentum: jax.typing.ArrayLike = 0.9,
  langevin_nesterov: bool = True,
  langevin_weight_decay: jax.typing.ArrayLike = 0.0,
  minibatches: int | None = None,
  key: Any = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""Entropy-SGD (Chaudhari et al., 2017): descent on the local entropy.

  Each outer step runs ``L = langevin_steps`` steps of stochastic gradient
  Langevin dynamics from the current weights :math:`x`, coupled back to
  :math:`x` with strength :math:`\gamma_t`, and averages their iterates
  into :math:`\mu`; ``inner`` (the outer optimizer) then steps on the
  local-entropy gradient :math:`x - \mu`. With :math:`x'_0 = \mu_0 = x`,
  momentum buffer :math:`m_0 = 0` and :math:`\xi_i \sim N(0, I)`, for
  :math:`i = 1..L`:

  .. math::
    d_i &= \nabla f_{B_i}(x'_{i-1}) + \lambda x'_{i-1},\quad
    m_i = \beta m_{i-1} + d_i,\quad
    \hat d_i = d_i + \beta m_i \ \ (\text{plain: } \hat d_i = m_i), \\
    x'_i &= x'_{i-1} - \eta' \Big(\hat d_i - \gamma_t (x - x'_{i-1})
      + \frac{\epsilon}{\sqrt{\eta' / 2}} \xi_i\Big),\quad
    \mu_i = \alpha \mu_{i-1} + (1 - \alpha) x'_i, \\
    \gamma_t &= \gamma (1 + \text{scoping})^t,\qquad
    x \leftarrow x + \text{inner}(x - \mu_L).

  The Langevin gradients come from ``grad_fn``
  (``optax_zoo._src.extra_args``): step :math:`i` takes
  ``grad_fn(x', i % M, M)`` with :math:`M` = ``minibatches``, the gradient
  on part ``i % M`` of the step's batch cut into :math:`M` equal consecutive
  parts. The default
  ``minibatches=None`` means :math:`M = L`: every Langevin step draws its
  own minibatch, as the reference's closure does, so **train with batch
  size** ``L * m`` for minibatches of ``m`` examples (the training loop's
  batch holds the ``L`` minibatches of one step). ``minibatches=1`` runs
  every Langevin step on the whole batch (full-batch problems, tests); any
  :math:`M` dividing :math:`L` cycles through the parts. A batch that
  :math:`M` does not divide raises a `ValueError` when the step is traced,
  never silently.

  The ``grads`` given to ``update`` (the gradient at :math:`x` that every
  training loop computes) do not enter the update, as in the reference,
  where that first ``closure()`` call only returns the loss for logging.
  Their non-finite entries are passed on (``update + 0 * grads``), so a NaN
  loss is not hidden. One step costs :math:`L` minibatch gradients in the
  Langevin loop plus the loop's own gradient at :math:`x` (which jit drops
  when the loss value is all the loop keeps). The Langevin loop is one
  `jax.lax.fori_loop`, its iterates kept in float32 or wider.

  Args:
    inner: the outer optimizer, applied to :math:`x - \mu`; the reference
      uses Nesterov momentum 0.9 (``optax_zoo.sgd(lr, momentum=0.9,
      nesterov=True)``). For the reference's weight decay on the outer
      step, put it inside: ``inner = optax.chain(optax.add_decayed_weights(
      wd), optax_zoo.sgd(...))``. A transform chained before
      ``entropy_sgd`` only changes the gradient at :math:`x`, which the step
      does not use, so it is silently lost.
    langevin_steps: :math:`L`, Langevin steps per outer step, an int >= 1.
    gamma: the scope :math:`\gamma > 0`, the coupling of the Langevin
      iterates to :math:`x` (the reference's ``g0``; its training script
      defaults to 1e-4, its README's CIFAR-10 run uses 0.03).
    scoping: :math:`\ge 0`, the growth of the scope per outer step
      (``g1``); 0 keeps :math:`\gamma` fixed. The scope grows without
      bound, as in the paper and the Lua original: the Langevin loop is
      stable while :math:`\gamma_t \eta' < 2`, which the defaults (0.03,
      1e-3, 0.1) cross after about 6,500 outer steps; for longer runs lower
      ``scoping`` or ``langevin_lr``.
    langevin_lr: :math:`\eta' > 0`, the Langevin step size (0.1 hard-coded
      in the reference).
    noise: :math:`\epsilon \ge 0`, the Langevin noise scale (``eps``); the
      noise added to :math:`x'` per step has standard deviation
      :math:`\epsilon \sqrt{2 \eta'}`.
    mu_decay: :math:`\alpha \in [0, 1)`, the decay of the running mean
      :math:`\mu` (``beta1 = 0.75`` hard-coded in the reference).
    langevin_momentum: :math:`\beta \in [0, 1)`, momentum of the Langevin
      steps, its buffer reset at every outer step (the reference reuses the
      outer momentum, 0.9 in its training script).
    langevin_nesterov: Nesterov form of the Langevin momentum (the
      reference's ``nesterov=True``).
    langevin_weight_decay: :math:`\lambda \ge 0`, L2 added to the Langevin
      gradients before the momentum (the reference's ``weight_decay``,
      which it also applies to the outer step: see ``inner``).
    minibatches: :math:`M`, the parts the step's batch is cut into (see
      above), an int >= 1 dividing ``langevin_steps``; None for ``L``.
    key: an int seed or a PRNG key for the Langevin noise; the state holds
      the key and splits it at every outer step.

  Returns:
    An `optax.GradientTransformationExtraArgs` whose ``update`` needs
    ``params`` and ``grad_fn``; other extra arguments are passed to
    ``inner``.

  Raises:
    ValueError: for an argument out of range (named in the message).

  Example:
    A step of a training loop: the batch holds ``L`` minibatches, and
    `optax_zoo.training.supply_extra_args` builds ``grad_fn`` from the
    per-example loss and the batch (`optax_zoo.training.make_train_fn` does
    the same every step).

    >>> import jax, jax.numpy as jnp, optax, optax_zoo
    >>> from optax_zoo.training import supply_extra_args
    >>> x = jax.random.normal(jax.random.key(1), (4 * 8, 3))  # L * m
    >>> batch = (x, x @ jnp.array([1.0, -2.0, 0.5]))
    >>> loss_fn = lambda w, b: (b[0] @ w - b[1]) ** 2  # per-example losses
    >>> tx = optax_zoo.entropy_sgd(
    ...   optax_zoo.sgd(0.3, momentum=0.9, nesterov=True),
    ...   langevin_steps=4, key=0)
    >>> w = jnp.zeros(3)
    >>> state = tx.init(w)
    >>> for _ in range(100):
    ...   grads = jax.grad(lambda w: loss_fn(w, batch).mean())(w)
    ...   extra = supply_extra_args(['grad_fn'], loss_fn, w, batch)
    ...   updates, state = tx.update(grads, state, w, **extra)
    ...   w = optax.apply_updates(w, updates)
    >>> bool(jnp.allclose(w, jnp.array([1.0, -2.0, 0.5]), atol=1e-3))
    True

  References:
    Chaudhari et al., `Entropy-SGD: Biasing Gradient Descent Into Wide
    Valleys <https://arxiv.org/abs/1611.01838>`_, ICLR 2017 (Algorithm 1);
    ucla-vision/entropy-sgd, ``python/optim.py`` (the PyTorch port) and
    ``entropyoptim.lua`` (the original).

  Deviations:
    * Scoping: the PyTorch port never increments its step counter, so its
      ``g0 (1 + g1)^t`` stays ``g0``; we scope :math:`\gamma (1 +
      \text{scoping})^t` as the Lua original and the paper do, with
      :math:`t` the number of outer steps taken before this one (the Lua
      original counts from 1, one factor :math:`1 + \text{scoping}` ahead).
      With ``scoping=0`` the update equals the port's step for step (checked
      against a NumPy transcription to 1e-5 relative): same Langevin update,
      noise scale, running mean and outer gradient :math:`x - \mu`.
    * The port allocates its outer momentum buffer lazily as a copy of the
      first gradient at :math:`x_0`, so its first outer steps carry an extra
      :math:`\beta^t \nabla f(x_0)` (a side effect, absent from the Lua
      original and the paper); ``inner`` starts from its own ``init``
      (zeros).
    * The Lua original adds the weight decay after the momentum; we follow
      the port (before).
    * The paper's Algorithm 1 scales the outer step by :math:`\gamma`
      (:math:`x \leftarrow x - \eta \gamma (x - \mu)`); the port and the
      Lua code do not, and neither do we (fold it into ``inner``'s rate).
    * Randomness comes from the state's key (``jax.random``), not a global
      generator: the noise values differ from the port's, their law does
      not.
  """
  v.check_transform('inner', inner)
  v.check_int('langevin_steps', langevin_steps, minimum=1)
  v.check_positive('gamma', gamma)
  v.check_non_negative('scoping', scoping)
  v.check_positive('langevin_lr', langevin_lr)
  v.check_non_negative('noise', noise)
  v.check_in_range('mu_decay', mu_decay, 0.0, 1.0)
  v.check_in_range('langevin_momentum', langevin_momentum, 0.0, 1.0)
  v.check_non_negative('langevin_weight_decay', langevin_weight_decay)
  if not isinstance(langevin_nesterov, bool):
    raise ValueError(
      f'`langevin_nesterov` must be a bool, got {langevin_nesterov!r}.'
    )
  num_steps = int(langevin_steps)
  if minibatches is None:
    num_parts = num_steps
  else:
    v.check_int('minibatches', minibatches, minimum=1)
    num_parts = int(minibatches)
    if num_steps % num_parts:
      raise ValueError(
        f'`minibatches` must divide `langevin_steps` = {num_steps}, got '
        f'{minibatches}.'
      )
  base_key = _as_key(key)
  key_impl = jax.random.key_impl(base_key)
  key_data = jax.random.key_data(base_key)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params: Any) -> EntropySGDState:
    return EntropySGDState(
      count=jnp.zeros([], jnp.int32),
      # A real copy: a donated state must not share a buffer with the
      # closure.
      rng_key=jnp.array(key_data, copy=True),
      inner_state=inner.init(params),
    )

  def part_grad(grad_fn, x, i):
    try:
      return grad_fn(x, i % num_parts, num_parts)
    except ValueError as err:
      raise ValueError(
        f'entropy_sgd takes its {num_steps} Langevin gradients on '
        f'`minibatches` = {num_parts} equal parts of the batch: the batch '
        f'size must be a multiple of {num_parts} (pass `minibatches=1` to '
        f'use the whole batch at every Langevin step). {err}'
      ) from err

  def update_fn(updates, state, params=None, *, grad_fn=None, **extra):
    if params is None:
      raise ValueError('entropy_sgd needs `params` in update().')
    if grad_fn is None:
      raise ValueError(
        'entropy_sgd needs `grad_fn` in update() (see '
        '`optax_zoo._src.extra_args`).'
      )
    next_key, step_key = jax.random.split(
      jax.random.wrap_key_data(state.rng_key, impl=key_impl)
    )
    g = gamma * (1.0 + scoping) ** state.count.astype(jnp.float32)
    x = jax.tree.map(lambda p: p.astype(_work_dtype(p.dtype)), params)
    noise_scale = noise / jnp.sqrt(0.5 * langevin_lr)

    def body(i, carry):
      xp, mu, mom = carry
      grads = part_grad(
        grad_fn,
        jax.tree.map(lambda a, p: a.astype(p.dtype), xp, params),
        i,
      )
      eta = _langevin_noise(step_key, i, params)

      def leaf(x0, xi, m, gi, e):
        d = gi.astype(xi.dtype) + langevin_weight_decay * xi
        m = langevin_momentum * m + d
        d = d + langevin_momentum * m if langevin_nesterov else m
        d = d - g * (x0 - xi) + noise_scale * e
        return (xi - langevin_lr * d).astype(xi.dtype), m.astype(m.dtype)

      out = jax.tree.map(leaf, x, xp, mom, grads, eta)
      xp = jax.tree.map(lambda _, o: o[0], x, out)
      mom = jax.tree.map(lambda _, o: o[1], x, out)
      mu = jax.tree.map(
        lambda a, b: (mu_decay * a + (1 - mu_decay) * b).astype(a.dtype),
        mu,
        xp,
      )
      return xp, mu, mom

    zeros = jax.tree.map(jnp.zeros_like, x)
    _, mu, _ = jax.lax.fori_loop(0, num_steps, body, (x, x, zeros))
    outer = jax.tree.map(
      lambda a, m, p, u: (a - m).astype(p.dtype) + 0 * u.astype(p.dtype),
      x,
      mu,
      params,
      updates,
    )
    new_updates, inner_state = inner.update(
      outer, state.inner_state, params, **extra
    )
    return new_updates, EntropySGDState(
      count=optax.safe_increment(state.count),
      rng_key=jax.random.key_data(next_key),
      inner_state=inner_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
