"""`repvgg_a1`: timm's RepVGG-A1 (Ding et al. 2021) in its training-time multi-branch form.

As timm's `repvgg_a1` builds it (ByobNet, before `reparameterize()`): every block sums a 3x3
conv-BN branch (`conv_kxk.conv`, `conv_kxk.bn`), a 1x1 conv-BN branch (`conv_1x1`) and, where the
block keeps its shape, a BN-only identity branch (`identity`), then applies ReLU. The stem is one
such block (3 -> 64, stride 2); four stages of 2/4/14/1 blocks and widths 64/128/256/1280 follow,
each opening with a stride-2 block; global average pool and `head.fc`. Stochastic depth (timm's
experimental addition, `drop_path_rate`, default 0) acts on the blocks with an identity branch.
Fusing the branches into one 3x3 conv for inference is not implemented: train-time form only.

`cifar=True`: the stem and the first stage use stride 1, for 32x32 inputs (final feature map 4x4).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import layers
from jaxlab.models.pooling import ClassifierHead
from jaxlab.models.registry import register


class ConvNorm(nnx.Module):
  """conv (no bias) then BatchNorm: timm's ConvNormAct without the activation."""

  def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, *,
               dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.conv = layers.conv(in_channels, out_channels, kernel, strides=stride,
                            padding=kernel // 2, **kw)
    self.bn = layers.batch_norm(out_channels, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.bn(self.conv(x))


class RepVggBlock(nnx.Module):
  """ReLU(conv3x3-BN(x) + conv1x1-BN(x) [+ BN(x) when the shape is kept])."""

  def __init__(self, in_channels: int, out_channels: int, stride: int, drop_path_rate: float, *,
               dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    keeps_shape = stride == 1 and in_channels == out_channels
    self.identity = layers.batch_norm(out_channels, **kw) if keeps_shape else None
    self.conv_kxk = ConvNorm(in_channels, out_channels, 3, stride, **kw)
    self.conv_1x1 = ConvNorm(in_channels, out_channels, 1, stride, **kw)
    self.drop_path = layers.DropPath(drop_path_rate if keeps_shape else 0.0, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.conv_1x1(x) + self.conv_kxk(x)
    if self.identity is not None:
      y = self.drop_path(y) + self.identity(x)
    return nnx.relu(y)


class RepVGG(nnx.Module):
  pretrained_classifier = "head.fc"

  def __init__(self, depths: Sequence[int], widths: Sequence[int], stem_width: int, *,
               num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike, param_dtype: DTypeLike,
               in_channels: int, cifar: bool, drop_path_rate: float):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.stem = RepVggBlock(in_channels, stem_width, 1 if cifar else 2, 0.0, **kw)
    rates = iter(np.linspace(0.0, drop_path_rate, sum(depths)).tolist())
    channels, stages = stem_width, []
    for stage, (depth, width) in enumerate(zip(depths, widths)):
      blocks = []
      for index in range(depth):
        stride = 2 if index == 0 and not (cifar and stage == 0) else 1
        blocks.append(RepVggBlock(channels, width, stride, next(rates), **kw))
        channels = width
      stages.append(nnx.List(blocks))
    self.stages = nnx.List(stages)
    self.head = ClassifierHead(channels, num_classes, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.stem(x)
    for stage in self.stages:
      for block in stage:
        x = block(x)
    return self.head(x)


@register("repvgg_a1")
def repvgg_a1(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
              param_dtype: DTypeLike = jnp.float32, in_channels: int = 3, cifar: bool = False,
              drop_path_rate: float = 0.0) -> RepVGG:
  """RepVGG-A1: width multipliers (1, 1, 1, 2.5) on (64, 128, 256, 512); stem 64."""
  return RepVGG((2, 4, 14, 1), (64, 128, 256, 1280), 64, num_classes=num_classes, rngs=rngs,
                dtype=dtype, param_dtype=param_dtype, in_channels=in_channels, cifar=cifar,
                drop_path_rate=drop_path_rate)
