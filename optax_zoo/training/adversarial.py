r"""Adversarial training: L-infinity PGD and FGSM, curricula, robust accuracy.

The attacks follow Wong, Rice & Kolter (2020)'s code
(``locuslab/fast_adversarial``: ``CIFAR10/train_fgsm.py``, ``train_pgd.py``
and ``utils.py``): a perturbation :math:`\delta` of the input starts at
zero or uniform in :math:`[-\epsilon, \epsilon]`, each step moves it by
:math:`\alpha\,\operatorname{sign}(\nabla_\delta \ell)` and clips it back to
the :math:`\epsilon`-ball (and, where the data has bounds, the input back
into them). FGSM with a random start is one such step of size
:math:`1.25\epsilon`. The code was read, not copied.

`adversarial_training` turns an attack into a ``batch_transform`` of the
training loop (`optax_zoo.training.train`), so the step trains on the
attacked batch with any optimizer; `h_sat` and `p_sat` are Sitawarin et
al. (2021)'s smooth adversarial training curricula, as this module reads
them (see each). `robust_accuracy` and `make_robust_eval_fn` score a model
under PGD; `pgd_check` is the catastrophic-overfitting check of
``train_fgsm.py`` as an ``on_eval`` hook, and `catastrophic_overfitting`
finds where it fired.

Everything is jittable and vmappable (seeds trained together by
`train_seeds` attack together); the attacks take ``logits_fn(x) -> logits``
so they work with any model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from optax_zoo._src import validation as v
from optax_zoo.training.loop import LossFn, StepContext, cross_entropy_loss

__all__ = [
  'adversarial_training',
  'catastrophic_overfitting',
  'fgsm_attack',
  'h_sat',
  'make_robust_eval_fn',
  'p_sat',
  'pgd_attack',
  'pgd_check',
  'robust_accuracy',
]

LogitsFn = Callable[[jax.Array], jax.Array]
Bounds = tuple[float, float] | None


def _check_eps(eps: Any) -> None:
  if not callable(eps):
    v.check_non_negative('eps', eps)


def _check_bounds(bounds: Bounds) -> None:
  if bounds is None:
    return
  try:
    lo, hi = bounds
    ok = float(lo) < float(hi)
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ValueError(
      f'`bounds` must be None or (low, high) with low < high, got {bounds!r}.'
    )


def _clip_to_bounds(x, delta, bounds):
  if bounds is None:
    return delta
  lo, hi = bounds
  return jnp.clip(x + delta, lo, hi) - x


def _per_example(loss_fn: LossFn):
  return jax.vmap(lambda lg, lb: loss_fn(lg[None], lb[None]))


def pgd_attack(
  logits_fn: LogitsFn,
  x: jax.Array,
  y: jax.Array,
  key: jax.Array,
  *,
  eps: jax.typing.ArrayLike,
  steps: int,
  step_size: jax.typing.ArrayLike,
  random_start: bool = True,
  restarts: int = 1,
  bounds: Bounds = None,
  stop_when_misclassified: bool = False,
  loss_fn: LossFn | None = None,
) -> jax.Array:
  r"""An L-infinity projected-gradient attack on a batch.

  From :math:`\delta_0 = 0` or, with ``random_start``, :math:`\delta_0 \sim
  \mathcal U[-\epsilon, \epsilon]^d` (clipped so :math:`x + \delta_0` stays
  in ``bounds``), ``steps`` times

  .. math::
    \delta_{k+1} = \Pi_{\mathcal B}\Big(\operatorname{clip}_{[-\epsilon,
    \epsilon]}\big(\delta_k + \alpha\,\operatorname{sign}
    \nabla_\delta \ell(x + \delta_k, y)\big)\Big),

  :math:`\Pi_{\mathcal B}` keeping :math:`x + \delta` in ``bounds``. The
  gradient is of the batch loss, whose sign per entry is each example's
  own (the mean's :math:`1/|B|` does not change a sign). With ``restarts >
  1`` each example keeps the restart with the largest loss, and with
  ``stop_when_misclassified`` an example stops moving once it is
  misclassified: both as ``attack_pgd`` in the authors' ``utils.py``, their
  evaluation attack. With zero steps and no random start it returns ``x``.

  Args:
    logits_fn: ``logits_fn(x) -> logits`` for a batch.
    x: the inputs, batch first.
    y: integer labels.
    key: a PRNG key (used by the random start).
    eps: :math:`\epsilon \ge 0`, the L-infinity radius (may be traced).
    steps: the number of steps, an integer >= 0.
    step_size: :math:`\alpha > 0`, absolute (may be traced).
    random_start: start uniformly in the ball instead of at ``x``.
    restarts: independent random starts, >= 1.
    bounds: ``(low, high)`` the inputs must stay in, or None (unbounded,
      as MNIST-1D's features).
    stop_when_misclassified: freeze an example once the model misclassifies
      it (the authors' evaluation attack).
    loss_fn: ``loss_fn(logits, labels) -> scalar`` batch mean to ascend;
      default cross-entropy.

  Returns:
    ``x + delta``, the attacked inputs, same shape and dtype as ``x``. The
    attack runs in float32 and rounds ``x + delta`` to ``x``'s dtype at the
    end, so in bfloat16 ``|x_adv - x|`` can exceed ``eps`` by half a unit in
    the last place of ``x`` (0.002 just below 1).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.training import pgd_attack
    >>> w = jnp.array([[1.0, -1.0], [2.0, 0.5]])
    >>> x, y = jnp.array([[0.5, 0.5]]), jnp.array([0])
    >>> x_adv = pgd_attack(lambda x: x @ w, x, y, jax.random.key(0),
    ...   eps=0.1, steps=3, step_size=0.05, random_start=False)
    >>> jnp.abs(x_adv - x).max() <= 0.1 + 1e-7
    Array(True, dtype=bool)
  """
  _check_eps(eps)
  v.check_int('steps', steps, minimum=0)
  v.check_positive('step_size', step_size)
  v.check_int('restarts', restarts, minimum=1)
  _check_bounds(bounds)
  loss_fn = loss_fn or cross_entropy_loss
  per_example = _per_example(loss_fn)
  dtype = x.dtype
  x = x.astype(jnp.float32)
  eps = jnp.asarray(eps, jnp.float32)
  alpha = jnp.asarray(step_size, jnp.float32)
  grad_fn = jax.grad(lambda d: loss_fn(logits_fn((x + d).astype(dtype)), y))

  def one_start(key):
    if random_start:
      delta = jax.random.uniform(key, x.shape, jnp.float32, -1.0, 1.0) * eps
      delta = _clip_to_bounds(x, delta, bounds)
    else:
      delta = jnp.zeros_like(x)

    def step(delta, _):
      g = grad_fn(delta)
      new = jnp.clip(delta + alpha * jnp.sign(g), -eps, eps)
      new = _clip_to_bounds(x, new, bounds)
      if stop_when_misclassified:
        logits = logits_fn((x + delta).astype(dtype))
        active = jnp.argmax(logits, -1) == y
        new = jnp.where(active.reshape((-1,) + (1,) * (x.ndim - 1)), new, delta)
      return new, None

    delta, _ = jax.lax.scan(step, delta, None, length=steps)
    return delta

  if restarts == 1:
    delta = one_start(key)
  else:

    def best(carry, key):
      best_delta, best_loss = carry
      delta = one_start(key)
      losses = per_example(logits_fn((x + delta).astype(dtype)), y)
      take = (losses >= best_loss).reshape((-1,) + (1,) * (x.ndim - 1))
      return (
        jnp.where(take, delta, best_delta),
        jnp.maximum(losses, best_loss),
      ), None

    init = (jnp.zeros_like(x), jnp.zeros(x.shape[0], jnp.float32))
    (delta, _), _ = jax.lax.scan(best, init, jax.random.split(key, restarts))
  return (x + delta).astype(dtype)


def fgsm_attack(
  logits_fn: LogitsFn,
  x: jax.Array,
  y: jax.Array,
  key: jax.Array,
  *,
  eps: jax.typing.ArrayLike,
  step_size: jax.typing.ArrayLike | None = None,
  random_start: bool = True,
  bounds: Bounds = None,
  loss_fn: LossFn | None = None,
) -> jax.Array:
  r"""FGSM, with Wong et al. (2020)'s random start by default.

  One `pgd_attack` step from a uniform start in the ball, of size
  :math:`\alpha = 1.25\epsilon` (``train_fgsm.py``'s ``--alpha 10`` at
  ``--epsilon 8``). ``random_start=False`` with ``step_size=eps`` is the
  classic FGSM of Goodfellow et al. (2015), the one that overfits
  catastrophically.

  Args:
    logits_fn: ``logits_fn(x) -> logits``.
    x: the inputs, batch first.
    y: integer labels.
    key: a PRNG key.
    eps: :math:`\epsilon \ge 0`.
    step_size: :math:`\alpha > 0`; default :math:`1.25\epsilon` with a
      random start, :math:`\epsilon` without.
    random_start: start uniformly in the ball.
    bounds: ``(low, high)`` for the inputs, or None.
    loss_fn: the batch loss to ascend; default cross-entropy.

  Returns:
    The attacked inputs; ``|x_adv - x| <= eps`` entrywise.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from optax_zoo.training import fgsm_attack
    >>> x, y = jnp.zeros((4, 3)), jnp.zeros(4, jnp.int32)
    >>> x_adv = fgsm_attack(lambda x: x[:, :2], x, y, jax.random.key(0),
    ...   eps=0.5)
    >>> bool(jnp.abs(x_adv).max() <= 0.5)
    True
  """
  _check_eps(eps)
  if step_size is None:
    step_size = (1.25 if random_start else 1.0) * jnp.asarray(eps)
  else:
    v.check_positive('step_size', step_size)
  return pgd_attack(
    logits_fn,
    x,
    y,
    key,
    eps=eps,
    steps=1,
    step_size=jnp.maximum(step_size, jnp.finfo(jnp.float32).tiny),
    random_start=random_start,
    bounds=bounds,
    loss_fn=loss_fn,
  )


_ATTACKS = ('fgsm', 'pgd')


def _eps_at(eps, step):
  return jnp.asarray(eps(step) if callable(eps) else eps, jnp.float32)


def _attack(
  ctx, x, y, eps, *, attack, steps, rel_step_size, random_start, bounds
):
  alpha = jnp.maximum(rel_step_size * eps, jnp.finfo(jnp.float32).tiny)
  return pgd_attack(
    ctx.logits_fn,
    x,
    y,
    ctx.key,
    eps=eps,
    steps=steps,
    step_size=alpha,
    random_start=random_start,
    bounds=bounds,
    loss_fn=ctx.loss_fn,
  )


def _attack_config(attack, steps, rel_step_size):
  v.check_choice('attack', attack, _ATTACKS)
  if attack == 'fgsm':
    if steps not in (None, 1):
      raise ValueError(f'`steps` must be None or 1 for FGSM, got {steps!r}.')
    steps = 1
    rel_step_size = 1.25 if rel_step_size is None else rel_step_size
  else:
    steps = 7 if steps is None else steps
    v.check_int('steps', steps, minimum=0)
    rel_step_size = 0.25 if rel_step_size is None else rel_step_size
  v.check_positive('rel_step_size', rel_step_size)
  return steps, rel_step_size


def adversarial_training(
  eps: float | optax.Schedule,
  *,
  attack: str = 'fgsm',
  steps: int | None = None,
  rel_step_size: float | None = None,
  random_start: bool = True,
  bounds: Bounds = None,
):
  r"""Trains on attacked batches: a ``batch_transform`` for the loop.

  Each step replaces its batch by `pgd_attack`'s perturbation of it at the
  step's parameters (Madry et al. 2018's min-max training; the model is
  attacked in train mode, as the authors' code does, with its BatchNorm
  statistics read only) and takes the optimizer's step on that batch
  alone, as ``train_fgsm.py`` and ``train_pgd.py``.

  - ``attack='fgsm'``: one step of :math:`1.25\epsilon` from a random
    start (Wong et al. 2020), the cost of about two plain steps.
  - ``attack='pgd'``: ``steps`` (default 7) steps of
    ``rel_step_size`` :math:`\cdot\,\epsilon` (default :math:`0.25
    \epsilon`: ``train_pgd.py``'s ``--alpha 2 --epsilon 8``).

  Args:
    eps: :math:`\epsilon \ge 0`, or a schedule ``eps(step)`` (a curriculum;
      see `h_sat`).
    attack: ``'fgsm'`` or ``'pgd'``.
    steps: PGD steps (FGSM: 1).
    rel_step_size: the step size as a multiple of the step's
      :math:`\epsilon` (default 1.25 for FGSM, 0.25 for PGD).
    random_start: start uniformly in the ball (``False`` for zero-init
      FGSM, which overfits catastrophically).
    bounds: ``(low, high)`` for the inputs, or None.

  Returns:
    ``batch_transform(ctx, x, y) -> (x_adv, y)``.

  Example:
    >>> import optax
    >>> from flax import nnx
    >>> from optax_zoo.training import (
    ...   MLP, adversarial_training, digits, robust_accuracy, train)
    >>> data = digits()
    >>> model = MLP(64, (32,), rngs=nnx.Rngs(0))
    >>> result = train(model, optax.adam(1e-2), data, steps=100,
    ...   batch_transform=adversarial_training(
    ...     0.1, attack='fgsm', bounds=(0.0, 1.0)))  # digits lie in [0, 1]
    >>> clean, robust = robust_accuracy(model, data.x_test, data.y_test,
    ...   eps=0.1, bounds=(0.0, 1.0))
    >>> bool(robust <= clean)
    True
  """
  _check_eps(eps)
  steps, rel_step_size = _attack_config(attack, steps, rel_step_size)
  _check_bounds(bounds)

  def transform(ctx: StepContext, x, y):
    e = _eps_at(eps, ctx.step)
    x_adv = _attack(
      ctx,
      x,
      y,
      e,
      attack=attack,
      steps=steps,
      rel_step_size=rel_step_size,
      random_start=random_start,
      bounds=bounds,
    )
    return x_adv, y

  return transform


def _ramp(ramp_steps, start_step):
  v.check_int('ramp_steps', ramp_steps, minimum=1)
  v.check_int('start_step', start_step, minimum=0)

  def fraction(step):
    t = (jnp.asarray(step, jnp.float32) - start_step) / ramp_steps
    return jnp.clip(t, 0.0, 1.0)

  return fraction


def h_sat(
  eps: float,
  *,
  ramp_steps: int,
  start_step: int = 0,
  attack: str = 'pgd',
  steps: int | None = None,
  rel_step_size: float | None = None,
  random_start: bool = True,
  bounds: Bounds = None,
):
  r"""H-SAT: adversarial training with the radius ramped up, easy to hard.

  Sitawarin, Chakraborty & Wagner (2021) measure a curriculum's difficulty
  by the largest eigenvalue of the adversarial loss's Hessian and find it
  grows with the perturbation's radius; H-SAT orders training by it by
  growing the radius:

  .. math::
    \epsilon_t = \epsilon\,\min\Big(1, \max\Big(0,
    \frac{t - t_0}{T}\Big)\Big),

  clean training until ``start_step`` :math:`t_0`, the full radius after
  :math:`t_0 + T`. Choices the abstract leaves open, ours: the ramp is
  linear, per step (not per epoch), and the difficulty metric is used to
  justify the ordering (the experiment measures :math:`\lambda_{\max}` of
  the trained model's adversarial loss against :math:`\epsilon` with
  `optax_zoo.analysis`) rather than computed during training, which would
  cost a Hessian eigenvalue per step.

  Args:
    eps: the target radius :math:`\epsilon \ge 0`.
    ramp_steps: :math:`T \ge 1`.
    start_step: :math:`t_0 \ge 0`.
    attack, steps, rel_step_size, random_start, bounds: as
      `adversarial_training` (default PGD).

  Returns:
    ``batch_transform(ctx, x, y) -> (x_adv, y)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_zoo.training import h_sat
    >>> transform = h_sat(0.3, ramp_steps=10)  # eps 0 -> 0.3 over 10 steps

  References:
    Sitawarin, Chakraborty & Wagner, *SAT: Improving adversarial training
    via curriculum-based loss smoothing*, AISec 2021 (arXiv:2003.09347).
  """
  v.check_non_negative('eps', eps)
  fraction = _ramp(ramp_steps, start_step)
  return adversarial_training(
    lambda step: eps * fraction(step),
    attack=attack,
    steps=steps,
    rel_step_size=rel_step_size,
    random_start=random_start,
    bounds=bounds,
  )


def p_sat(
  eps: float,
  *,
  ramp_steps: int,
  start_step: int = 0,
  attack: str = 'pgd',
  steps: int | None = None,
  rel_step_size: float | None = None,
  random_start: bool = True,
  bounds: Bounds = None,
):
  r"""P-SAT: adversarial examples admitted easy to hard by their softmax.

  Sitawarin et al. (2021)'s second difficulty metric is the softmax
  probability. This reading: an attacked example :math:`x_i + \delta_i`
  (at the full radius) is easy when the model still gives its label a high
  probability, and the curriculum admits examples from easy to hard. With
  :math:`q_t = 1 - \min(1, \max(0, (t - t_0)/T))`, example :math:`i`
  trains on

  .. math::
    \tilde x_i = \begin{cases} x_i + \delta_i & p_\theta(y_i \mid x_i +
    \delta_i) \ge q_t \\ x_i & \text{otherwise,} \end{cases}

  so training starts clean (:math:`q = 1`), each example's perturbation is
  monotone in the schedule (0 until admitted, then :math:`\delta_i`), and
  after :math:`t_0 + T` every example is attacked at the full radius (plain
  adversarial training). Choices the abstract leaves open, ours: the metric
  enters as an admission threshold on the true class's probability at the
  attacked point; the threshold falls linearly per step. It costs one more
  forward pass per step than `adversarial_training`.

  Args:
    eps: the radius :math:`\epsilon \ge 0`.
    ramp_steps: :math:`T \ge 1`.
    start_step: :math:`t_0 \ge 0`.
    attack, steps, rel_step_size, random_start, bounds: as
      `adversarial_training` (default PGD).

  Returns:
    ``batch_transform(ctx, x, y) -> (x_tilde, y)``.

  Example:
    >>> from optax_zoo.training import p_sat
    >>> transform = p_sat(0.3, ramp_steps=10)

  References:
    Sitawarin, Chakraborty & Wagner, *SAT: Improving adversarial training
    via curriculum-based loss smoothing*, AISec 2021 (arXiv:2003.09347).
  """
  v.check_non_negative('eps', eps)
  fraction = _ramp(ramp_steps, start_step)
  steps, rel_step_size = _attack_config(attack, steps, rel_step_size)
  _check_bounds(bounds)

  def transform(ctx: StepContext, x, y):
    e = jnp.asarray(eps, jnp.float32)
    x_adv = _attack(
      ctx,
      x,
      y,
      e,
      attack=attack,
      steps=steps,
      rel_step_size=rel_step_size,
      random_start=random_start,
      bounds=bounds,
    )
    prob = jax.nn.softmax(ctx.logits_fn(x_adv).astype(jnp.float32), -1)
    p_true = jnp.take_along_axis(prob, y[:, None], -1)[:, 0]
    threshold = 1.0 - fraction(ctx.step)
    admit = (p_true >= threshold).reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(admit, x_adv, x), y

  return transform


def make_robust_eval_fn(
  graphdef: nnx.GraphDef,
  *,
  eps: float,
  steps: int = 20,
  step_size: float | None = None,
  restarts: int = 1,
  bounds: Bounds = None,
  vmap: bool = False,
) -> Callable[..., tuple[jax.Array, jax.Array, jax.Array]]:
  r"""A jitted ``eval_fn(params, rest, x, y, key) -> (clean, robust, loss)``.

  Clean accuracy, robust accuracy under `pgd_attack` (random start,
  ``restarts``, stopping at misclassification: the authors'
  ``evaluate_pgd``, which uses 50 steps and 10 restarts; an example is
  robust when it is right at ``x`` and at the attacked point), and the
  attacked cross-entropy, with the model in eval mode.

  Args:
    graphdef: the eval-mode graph definition (``TrainState.graphdef``).
    eps: the radius.
    steps: PGD steps, >= 0.
    step_size: default :math:`2.5\epsilon/\text{steps}` (Madry et al.).
    restarts: random restarts, >= 1.
    bounds: input bounds or None.
    vmap: map over a leading seed axis of ``params``, ``rest`` and ``key``.

  Returns:
    The jitted function.
  """
  v.check_non_negative('eps', eps)
  v.check_int('steps', steps, minimum=0)
  if step_size is None:
    step_size = max(2.5 * eps / max(steps, 1), np.finfo(np.float32).tiny)

  def evaluate(params, rest, x, y, key):
    def logits_fn(xs):
      return nnx.merge(graphdef, params, rest)(xs)

    x_adv = pgd_attack(
      logits_fn,
      x,
      y,
      key,
      eps=eps,
      steps=steps,
      step_size=step_size,
      restarts=restarts,
      bounds=bounds,
      stop_when_misclassified=True,
    )
    right = jnp.argmax(logits_fn(x), -1) == y
    logits = logits_fn(x_adv)
    robust = jnp.mean(right & (jnp.argmax(logits, -1) == y))
    return jnp.mean(right), robust, cross_entropy_loss(logits, y)

  if vmap:
    evaluate = jax.vmap(evaluate, in_axes=(0, 0, None, None, 0))
  return jax.jit(evaluate)


def robust_accuracy(
  model: nnx.Module,
  x: jax.Array,
  y: jax.Array,
  *,
  eps: float,
  steps: int = 20,
  step_size: float | None = None,
  restarts: int = 1,
  bounds: Bounds = None,
  key: jax.Array | None = None,
) -> tuple[float, float]:
  """Clean and PGD-robust accuracy of ``model`` (put in eval mode) on x, y.

  See `make_robust_eval_fn` for the attack; ``key`` defaults to ``key(0)``.
  An example counts as robust when the model is right both at ``x`` and at
  the attacked point (both are in the ball), so robust accuracy is at most
  clean accuracy.

  Returns:
    ``(clean_accuracy, robust_accuracy)`` as floats.
  """
  twin = nnx.merge(*nnx.split(model), copy=True)
  twin.eval()
  graphdef, params, rest = nnx.split(twin, nnx.Param, ...)
  eval_fn = make_robust_eval_fn(
    graphdef,
    eps=eps,
    steps=steps,
    step_size=step_size,
    restarts=restarts,
    bounds=bounds,
  )
  key = jax.random.key(0) if key is None else key
  clean, robust, _ = eval_fn(params, rest, jnp.asarray(x), jnp.asarray(y), key)
  return float(clean), float(robust)


def pgd_check(
  x: jax.Array,
  y: jax.Array,
  *,
  eps: float,
  steps: int = 5,
  step_size: float | None = None,
  bounds: Bounds = None,
  key: jax.Array | None = None,
  seeds: int | None = None,
):
  """The catastrophic-overfitting check, as an ``on_eval`` hook.

  ``train_fgsm.py --early-stop`` attacks one held-out batch with PGD-5 at
  every epoch's end and stops when its robust accuracy falls by more than
  0.2; this hook measures that accuracy at every evaluation point of
  `optax_zoo.training.train` / `train_seeds` into
  ``history.measurements['pgd_accuracy']``, and
  `catastrophic_overfitting` finds the fall. (The loop does not stop
  early: the run is kept whole, so the experiment shows the collapse.)

  Args:
    x, y: the held-out batch.
    eps, steps, step_size, bounds: the attack, as `make_robust_eval_fn`.
    key: the attack's key (default ``key(0)``).
    seeds: the number of seeds for a `train_seeds` run (its states are
      seed-stacked), None for `train`.

  Returns:
    ``on_eval(state) -> {'pgd_accuracy': ...}`` (per seed when stacked).
  """
  if seeds is not None:
    v.check_int('seeds', seeds, minimum=1)
  x, y = jnp.asarray(x), jnp.asarray(y)
  key = jax.random.key(0) if key is None else key
  cache = {}

  def hook(state):
    if 'fn' not in cache:
      cache['fn'] = make_robust_eval_fn(
        state.graphdef,
        eps=eps,
        steps=steps,
        step_size=step_size,
        bounds=bounds,
        vmap=seeds is not None,
      )
    keys = key if seeds is None else jax.random.split(key, seeds)
    _, robust, _ = cache['fn'](
      state.eval_params, state.eval_model_state, x, y, keys
    )
    return {'pgd_accuracy': np.asarray(robust)}

  return hook


def catastrophic_overfitting(
  robust_accuracy: np.ndarray, *, drop: float = 0.2
) -> int | None:
  """The first evaluation where robust accuracy fell by more than ``drop``.

  ``train_fgsm.py``'s test: ``robust_acc - prev_robust_acc < -0.2``.

  Args:
    robust_accuracy: robust accuracies at successive evaluations, shape
      ``(E,)`` (one seed).
    drop: the fall that counts, > 0.

  Returns:
    The index of the evaluation after the fall, or None.
  """
  v.check_positive('drop', drop)
  a = np.asarray(robust_accuracy, np.float64)
  if a.ndim != 1:
    raise ValueError(
      f'`robust_accuracy` must be one seed, shape (E,), got {a.shape}.'
    )
  (hits,) = np.nonzero(np.diff(a) < -drop)
  return int(hits[0]) + 1 if hits.size else None
