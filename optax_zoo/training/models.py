"""Small Flax NNX classifiers for MNIST-1D-size problems.

All models take features of shape ``(batch, length)`` and return logits of
shape ``(batch, num_classes)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from optax_zoo._src.validation import check_in_range

__all__ = [
  'CNN1D',
  'MLP',
  'ResNet1D',
  'ScaleInvariantCNN',
  'scale_invariant_mask',
]


class MLP(nnx.Module):
  """A ReLU multilayer perceptron, with optional dropout after hidden layers.

  Dropout is active in train mode (``model.train()``, as the training loop
  sets) and off in eval mode; its random stream lives in the model's state,
  so each training step draws a fresh mask.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from optax_zoo.training import MLP
    >>> MLP(40, rngs=nnx.Rngs(0))(jnp.zeros((2, 40))).shape
    (2, 10)
  """

  def __init__(
    self,
    in_features: int,
    hidden: Sequence[int] = (100, 100),
    num_classes: int = 10,
    *,
    dropout: float = 0.0,
    rngs: nnx.Rngs,
  ):
    check_in_range('dropout', dropout, 0.0, 1.0)
    sizes = (in_features, *hidden)
    self.hidden = nnx.List(
      [nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)]
    )
    self.head = nnx.Linear(sizes[-1], num_classes, rngs=rngs)
    # Created last so the weights match those of the same MLP without dropout.
    self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None

  def __call__(self, x: jax.Array) -> jax.Array:
    for layer in self.hidden:
      x = nnx.relu(layer(x))
      if self.dropout is not None:
        x = self.dropout(x)
    return self.head(x)


def _conv1d_as_matmul(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: Sequence[tuple[int, int]],
  **unused_kwargs,
) -> jax.Array:
  """The 1-D NWC convolutions of these models as strided slices and a matmul.

  A drop-in for `lax.conv_general_dilated` in `nnx.Conv` (no dilation, one
  feature group). XLA:CPU runs `lax.conv` inside a `lax.scan`, as the
  training loop does, about five times slower than outside it, while a dot is
  as fast in both; for these small models that is most of the step time.
  """
  del unused_kwargs
  (stride,) = window_strides
  (pad,) = padding
  kernel = rhs.shape[0]
  x = jnp.pad(lhs, ((0, 0), pad, (0, 0)))
  stop = x.shape[1] - kernel + 1
  taps = [x[:, k : stop + k : stride] for k in range(kernel)]
  return jnp.einsum('blkc,kco->blo', jnp.stack(taps, axis=2), rhs)


def _conv(c_in: int, c_out: int, kernel: int, stride: int, *, rngs):
  return nnx.Conv(
    c_in,
    c_out,
    (kernel,),
    (stride,),
    padding=((1, 1),),
    conv_general_dilated=_conv1d_as_matmul,
    rngs=rngs,
  )


class WSConv1D(nnx.Module):
  r"""A 1-D convolution with scaled weight standardization and a gain.

  The kernel is standardized over its fan-in before every call (Qiao et al.
  2019; scaled as in Brock et al. 2021 and De et al. 2022's private
  Wide-ResNets):

  .. math::
    \hat W_{:, :, o} = g_o \frac{W_{:, :, o} - \mu_o}{\sqrt{\max(N
    \sigma_o^2, \epsilon)}},

  with :math:`\mu_o, \sigma_o^2` the mean and variance of output channel
  :math:`o`'s :math:`N` = kernel size x input channels weights, a gain
  :math:`g` (ones at init) and a bias (zeros). As jax-privacy's
  ``WSConv2D`` (``eps`` 1e-4), in 1-D with padding 1 and NWC layout.
  Not an ``nnx.Conv``: its gradient is not an outer product of the
  layer's input and output gradients, so ghost clipping leaves it to the
  vmap path (`optax_zoo.unsupported_layers` names it).
  """

  def __init__(
    self,
    c_in: int,
    c_out: int,
    kernel: int,
    stride: int,
    *,
    eps: float = 1e-4,
    rngs: nnx.Rngs,
  ):
    init = jax.nn.initializers.variance_scaling(1.0, 'fan_in', 'normal')
    self.kernel = nnx.Param(init(rngs.params(), (kernel, c_in, c_out)))
    self.gain = nnx.Param(jnp.ones((c_out,)))
    self.bias = nnx.Param(jnp.zeros((c_out,)))
    self.stride = stride
    self.eps = eps

  def standardized_kernel(self) -> jax.Array:
    w = self.kernel[...]
    mean = jnp.mean(w, axis=(0, 1), keepdims=True)
    var = jnp.var(w, axis=(0, 1), keepdims=True)
    fan_in = w.shape[0] * w.shape[1]
    scale = jax.lax.rsqrt(jnp.maximum(var * fan_in, self.eps)) * self.gain[...]
    return (w - mean) * scale

  def __call__(self, x: jax.Array) -> jax.Array:
    y = _conv1d_as_matmul(
      x, self.standardized_kernel(), (self.stride,), ((1, 1),)
    )
    return y + self.bias[...]


def _conv_length(length: int, kernel: int, stride: int) -> int:
  return (length + 2 - kernel) // stride + 1


class CNN1D(nnx.Module):
  """The MNIST-1D convolutional baseline of Greydanus & Kobak (2020).

  As ``ConvBase`` in the paper's code: three convolutions with ``channels``
  channels (kernel 5 then 3 and 3, stride 2, padding 1) with ReLU, then a
  linear layer on the flattened features. The paper reports ~94% test
  accuracy on MNIST-1D with Adam. Initialization is Flax's (LeCun normal),
  not PyTorch's.

  De et al. (2022)'s private variant: ``weight_standardization=True``
  (`WSConv1D` convolutions) and ``norm_groups=G`` (an ``nnx.GroupNorm``
  with G groups after each convolution, before the ReLU; it normalizes
  within one example, so it is allowed in private training, unlike
  BatchNorm). Both change the architecture, not just the initialization.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from optax_zoo.training import CNN1D
    >>> CNN1D(rngs=nnx.Rngs(0))(jnp.zeros((2, 40))).shape
    (2, 10)
  """

  def __init__(
    self,
    num_classes: int = 10,
    *,
    channels: int = 25,
    in_length: int = 40,
    weight_standardization: bool = False,
    norm_groups: int | None = None,
    rngs: nnx.Rngs,
  ):
    if not isinstance(weight_standardization, bool):
      raise ValueError(
        '`weight_standardization` must be a bool, got '
        f'{weight_standardization!r}.'
      )
    if norm_groups is not None and (
      not isinstance(norm_groups, int)
      or norm_groups < 1
      or channels % norm_groups
    ):
      raise ValueError(
        '`norm_groups` must be None or a positive divisor of `channels`='
        f'{channels}, got {norm_groups!r}.'
      )
    conv = WSConv1D if weight_standardization else _conv
    self.conv1 = conv(1, channels, 5, 2, rngs=rngs)
    self.conv2 = conv(channels, channels, 3, 2, rngs=rngs)
    self.conv3 = conv(channels, channels, 3, 2, rngs=rngs)
    self.norms = (
      None
      if norm_groups is None
      else nnx.List(
        [
          nnx.GroupNorm(channels, num_groups=norm_groups, rngs=rngs)
          for _ in range(3)
        ]
      )
    )
    length = in_length
    for kernel in (5, 3, 3):
      length = _conv_length(length, kernel, 2)
    self.head = nnx.Linear(channels * length, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = x[..., None]
    for i, conv in enumerate((self.conv1, self.conv2, self.conv3)):
      h = conv(h)
      if self.norms is not None:
        h = self.norms[i](h)
      h = nnx.relu(h)
    return self.head(h.reshape(h.shape[0], -1))


class _Block(nnx.Module):
  def __init__(self, channels: int, *, skip: bool, rngs: nnx.Rngs):
    self.conv1 = _conv(channels, channels, 3, 1, rngs=rngs)
    self.bn1 = _batch_norm(channels, rngs=rngs)
    self.conv2 = _conv(channels, channels, 3, 1, rngs=rngs)
    self.bn2 = _batch_norm(channels, rngs=rngs)
    self.skip = skip

  def __call__(self, x: jax.Array) -> jax.Array:
    h = nnx.relu(self.bn1(self.conv1(x)))
    h = self.bn2(self.conv2(h))
    return nnx.relu(h + x if self.skip else h)


def _batch_norm(channels: int, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
  # PyTorch's running-average momentum: Flax's default 0.99 leaves the eval
  # statistics far behind the weights in runs of a few hundred steps.
  return nnx.BatchNorm(channels, momentum=0.9, rngs=rngs)


class ResNet1D(nnx.Module):
  """A small residual 1-D CNN with batch normalization.

  A convolution stem (kernel 5, stride 2) with BatchNorm and ReLU, then
  ``num_blocks`` basic residual blocks (conv-BN-ReLU-conv-BN, add the input,
  ReLU) at constant width, global average pooling and a linear head. With
  ``skip=False`` the blocks drop the identity path and nothing else changes,
  so both variants have the same parameters.

  BatchNorm uses batch statistics after ``model.train()`` (the default) and
  running averages after ``model.eval()``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from optax_zoo.training import ResNet1D
    >>> model = ResNet1D(rngs=nnx.Rngs(0))
    >>> model.eval()
    >>> model(jnp.zeros((2, 40))).shape
    (2, 10)
  """

  def __init__(
    self,
    num_classes: int = 10,
    *,
    channels: int = 32,
    num_blocks: int = 2,
    skip: bool = True,
    rngs: nnx.Rngs,
  ):
    self.stem = _conv(1, channels, 5, 2, rngs=rngs)
    self.stem_bn = _batch_norm(channels, rngs=rngs)
    self.blocks = nnx.List(
      [_Block(channels, skip=skip, rngs=rngs) for _ in range(num_blocks)]
    )
    self.head = nnx.Linear(channels, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = nnx.relu(self.stem_bn(self.stem(x[..., None])))
    for block in self.blocks:
      h = block(h)
    return self.head(h.mean(axis=1))


def _max_pool2(h: jax.Array) -> jax.Array:
  """Max over windows of 2 along the length, stride 2 (an odd end dropped)."""
  n, length, c = h.shape
  half = length // 2
  return h[:, : 2 * half].reshape(n, half, 2, c).max(axis=2)


class ScaleInvariantCNN(nnx.Module):
  """A 1-D CNN whose loss depends only on the directions of its kernels.

  The MNIST-1D counterpart of the ``ConvNetSI`` of Kodryan et al. (2022,
  tipt0p/three_regimes_on_the_sphere, ``nets/convnet_si.py``): blocks of a
  convolution without bias (kernel 3, padding 1), BatchNorm without affine
  parameters and ReLU; the first block keeps the width ``channels``, each
  of the ``depth`` blocks after it doubles the width and max-pools by 2
  (length 40 -> 20 -> 10 -> 5 at depth 3), then a global max pool and a
  linear head. Its kernel is rescaled at init to the Frobenius norm
  ``head_norm`` (their ``--init_scale 10``), and it is meant to stay frozen.

  With the head fixed, the training-mode loss (BatchNorm on batch
  statistics) is invariant to scaling each convolution kernel, indeed each
  of its output filters, up to BatchNorm's epsilon; `scale_invariant_mask`
  selects those kernels. To train on the sphere with a frozen head::

    tx = optax_zoo.sphere_sgd(
      effective_lr=1e-2, mask=scale_invariant_mask, learning_rate=0.0)

  (``learning_rate=0.0`` is the reference's ``--noninvlr 0``: the leaves
  outside the mask, the head, do not move). With another optimizer, freeze
  the head with a partition, e.g. ``optax.multi_transform({True: tx, False:
  optax.set_to_zero()}, scale_invariant_mask)``.

  Deviations from ``ConvNetSI``: 1-D convolutions on ``(batch, 40)``
  inputs, one block fewer for the short signal (its first block has no
  pooling either), Flax's initialization (LeCun normal) and BatchNorm
  momentum 0.9 (PyTorch's running-average rate).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from optax_zoo.training import ScaleInvariantCNN, scale_invariant_mask
    >>> model = ScaleInvariantCNN(rngs=nnx.Rngs(0))
    >>> model(jnp.ones((2, 40))).shape
    (2, 10)
    >>> mask = scale_invariant_mask(nnx.state(model, nnx.Param))
    >>> sum(jax.tree.leaves(mask)), len(jax.tree.leaves(mask))
    (4, 6)
  """

  def __init__(
    self,
    num_classes: int = 10,
    *,
    channels: int = 8,
    depth: int = 3,
    head_norm: float | None = 10.0,
    rngs: nnx.Rngs,
  ):
    widths = [channels * 2**i for i in range(depth + 1)]
    self.convs = nnx.List(
      [
        nnx.Conv(
          a,
          b,
          (3,),
          padding=((1, 1),),
          use_bias=False,
          conv_general_dilated=_conv1d_as_matmul,
          rngs=rngs,
        )
        for a, b in zip([1, *widths[:-1]], widths, strict=True)
      ]
    )
    self.norms = nnx.List(
      [
        nnx.BatchNorm(
          w, use_bias=False, use_scale=False, momentum=0.9, rngs=rngs
        )
        for w in widths
      ]
    )
    self.head = nnx.Linear(widths[-1], num_classes, rngs=rngs)
    if head_norm is not None:
      kernel = self.head.kernel
      kernel[...] = kernel[...] * (head_norm / jnp.linalg.norm(kernel[...]))

  def __call__(self, x: jax.Array) -> jax.Array:
    h = x[..., None]
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
      h = nnx.relu(norm(conv(h)))
      if i:
        h = _max_pool2(h)
    return self.head(h.max(axis=1))


def scale_invariant_mask(params):
  """The scale-invariant leaves of `ScaleInvariantCNN` parameters.

  True for every ``kernel`` outside the ``head``: the convolutions that feed
  a BatchNorm without affine parameters. Works on the `nnx.State` of
  ``nnx.Param`` (what `optax_zoo.training` and `nnx.Optimizer` hand an
  optimizer) or any tree with those names in its paths, and gives the mask
  of `optax_zoo.sphere_sgd`.

  Args:
    params: the model's parameters.

  Returns:
    A tree of Python bools with the structure of ``params``.
  """

  def names(path):
    return [str(getattr(k, 'key', getattr(k, 'name', k))) for k in path]

  return jax.tree_util.tree_map_with_path(
    lambda path, _: 'kernel' in names(path) and 'head' not in names(path),
    params,
  )
