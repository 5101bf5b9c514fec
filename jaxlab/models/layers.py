"""Flax NNX layers with logical sharding axes on every parameter.

Backbones build their convolutions, norms and heads through these functions, so that every
`nnx.Param` carries `out_sharding` metadata (see `logical_axes`), and the conventions the backbones
share (bias-free convs before BatchNorm, PyTorch-equivalent BatchNorm constants) live in one place.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import logical_axes

# PyTorch's BatchNorm2d defaults (its momentum 0.1 is flax's 0.9), so ported recipes behave alike.
BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-5


def conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    strides: int = 1,
    padding: int | str | Sequence[tuple[int, int]] = "SAME",
    use_bias: bool = False,
    groups: int = 1,
    kernel_init: nnx.Initializer | None = None,
    dtype: DTypeLike,
    param_dtype: DTypeLike,
    rngs: nnx.Rngs,
) -> nnx.Conv:
  """A 2D convolution over NHWC inputs; bias-free by default because a BatchNorm follows.

  `groups` as in PyTorch (in_channels for a depthwise conv); `kernel_init` defaults to He normal.
  """
  return nnx.Conv(
      in_channels,
      out_channels,
      kernel_size=(kernel_size, kernel_size),
      strides=strides,
      padding=padding,
      use_bias=use_bias,
      feature_group_count=groups,
      dtype=dtype,
      param_dtype=param_dtype,
      # He init by default: these convolutions feed ReLUs.
      kernel_init=nnx.with_partitioning(kernel_init or nnx.initializers.he_normal(),
                                        logical_axes.CONV_KERNEL),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (logical_axes.CONV_OUT,)),
      rngs=rngs,
  )


def batch_norm(
    num_features: int,
    *,
    channel_axis: str = logical_axes.CONV_OUT,
    dtype: DTypeLike,
    param_dtype: DTypeLike,
    rngs: nnx.Rngs,
) -> nnx.BatchNorm:
  """BatchNorm whose scale and bias are sharded like the channels they normalize."""
  return nnx.BatchNorm(
      num_features,
      momentum=BATCH_NORM_MOMENTUM,
      epsilon=BATCH_NORM_EPSILON,
      dtype=dtype,
      param_dtype=param_dtype,
      scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), (channel_axis,)),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (channel_axis,)),
      rngs=rngs,
  )


def classifier_head(
    in_features: int,
    num_classes: int,
    *,
    dtype: DTypeLike,
    param_dtype: DTypeLike,
    rngs: nnx.Rngs,
) -> nnx.Linear:
  """The final dense layer mapping pooled features to class logits."""
  return nnx.Linear(
      in_features,
      num_classes,
      dtype=dtype,
      param_dtype=param_dtype,
      kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(), logical_axes.HEAD_KERNEL),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (logical_axes.CLASSES,)),
      rngs=rngs,
  )


class DropPath(nnx.Module):
  """Stochastic depth: drops a whole residual branch per example with probability `rate`.

  Survivors are scaled by 1/(1-rate) (timm's `drop_path` with scale_by_keep), so eval needs no
  rescaling. Masks come from the module's "dropout" rng stream, which the trainer reseeds every step.
  Identity in eval mode (`model.eval()`) or when rate is 0.
  """

  def __init__(self, rate: float, *, rngs: nnx.Rngs):
    if not 0.0 <= rate < 1.0:
      raise ValueError(f"drop path rate must be in [0, 1), got {rate}")
    self.rate = rate
    self.deterministic = False
    self.rngs = rngs.dropout.fork() if rate > 0 else None

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.rngs(), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class LayerScale(nnx.Module):
  """Per-channel learnable scale of a residual branch (CaiT/ConvNeXt), over the last axis."""

  def __init__(self, dim: int, init_value: float = 1e-5, *, axis_name: str | None = None,
               param_dtype: DTypeLike, dtype: DTypeLike | None = None):
    del dtype  # kept for a uniform constructor; the scale multiplies in the input's dtype
    self.gamma = nnx.Param(
        nnx.with_partitioning(nnx.initializers.constant(init_value), (axis_name,))(
            jax.random.key(0), (dim,), param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    return x * self.gamma[...].astype(x.dtype)
