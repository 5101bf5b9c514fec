"""`resnet18`, `resnet34`, `resnet50`, `resnet101`: timm's ResNets (torchvision layout), in flax.nnx.

The architecture of timm's `resnet*` (and its `.a1_in1k` weights): 7x7 stride-2 stem conv, 3x3
stride-2 max-pool, four stages of BasicBlocks (18/34) or Bottlenecks (50/101) with the stride on the
Bottleneck's 3x3 conv ("ResNet v1.5"), 1x1 conv + BN projections where the shape changes, global
average pool, linear `fc`. Attribute names follow timm's module paths (`layer1[0].conv1`,
`layer2[0].downsample`), so timm checkpoints load by name (`models.create(..., pretrained=PATH)`).
As in timm, each block's last BatchNorm starts with a zero scale (the block starts as identity),
and stochastic depth (`drop_path_rate`, default 0 like timm) rises linearly over the blocks.

`cifar=True`: a 3x3 stride-1 stem conv and no max-pool, for 32x32 inputs (the usual CIFAR ResNet,
final feature map 4x4); everything else, including the parameter names, is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import layers
from jaxlab.models.registry import register

STAGE_WIDTHS = (64, 128, 256, 512)


def _zero_scale(norm: nnx.BatchNorm) -> None:
  """timm's zero_init_last: the residual branch starts at zero."""
  norm.scale.set_value(jnp.zeros_like(norm.scale.get_value()))


def _downsample(in_channels: int, out_channels: int, strides: int, kw: dict) -> nnx.Sequential | None:
  """The 1x1 conv + BN projection of the shortcut where the block changes shape."""
  if strides == 1 and in_channels == out_channels:
    return None
  return nnx.Sequential(
      layers.conv(in_channels, out_channels, 1, strides=strides, padding=0, **kw),
      layers.batch_norm(out_channels, **kw))


class BasicBlock(nnx.Module):
  """Two 3x3 conv-BN layers plus a shortcut, ReLU after the sum (ResNet-18/34)."""
  expansion = 1

  def __init__(self, in_channels: int, width: int, strides: int, drop_path_rate: float, *,
               dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.conv1 = layers.conv(in_channels, width, 3, strides=strides, padding=1, **kw)
    self.bn1 = layers.batch_norm(width, **kw)
    self.conv2 = layers.conv(width, width, 3, padding=1, **kw)
    self.bn2 = layers.batch_norm(width, **kw)
    _zero_scale(self.bn2)
    self.downsample = _downsample(in_channels, width, strides, kw)
    self.drop_path = layers.DropPath(drop_path_rate, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    shortcut = x if self.downsample is None else self.downsample(x)
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return nnx.relu(self.drop_path(y) + shortcut)


class Bottleneck(nnx.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand by 4, each with BN; ReLU after the sum (ResNet-50+)."""
  expansion = 4

  def __init__(self, in_channels: int, width: int, strides: int, drop_path_rate: float, *,
               dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    out_channels = width * self.expansion
    self.conv1 = layers.conv(in_channels, width, 1, padding=0, **kw)
    self.bn1 = layers.batch_norm(width, **kw)
    self.conv2 = layers.conv(width, width, 3, strides=strides, padding=1, **kw)
    self.bn2 = layers.batch_norm(width, **kw)
    self.conv3 = layers.conv(width, out_channels, 1, padding=0, **kw)
    self.bn3 = layers.batch_norm(out_channels, **kw)
    _zero_scale(self.bn3)
    self.downsample = _downsample(in_channels, out_channels, strides, kw)
    self.drop_path = layers.DropPath(drop_path_rate, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    shortcut = x if self.downsample is None else self.downsample(x)
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = nnx.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return nnx.relu(self.drop_path(y) + shortcut)


class ResNet(nnx.Module):
  pretrained_classifier = "fc"

  def __init__(self, block: type[BasicBlock | Bottleneck], blocks_per_stage: Sequence[int], *,
               num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike, param_dtype: DTypeLike,
               in_channels: int, cifar: bool, drop_path_rate: float):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.cifar = cifar
    if cifar:
      self.conv1 = layers.conv(in_channels, STAGE_WIDTHS[0], 3, padding=1, **kw)
    else:
      self.conv1 = layers.conv(in_channels, STAGE_WIDTHS[0], 7, strides=2, padding=3, **kw)
    self.bn1 = layers.batch_norm(STAGE_WIDTHS[0], **kw)
    rates = iter(np.linspace(0.0, drop_path_rate, sum(blocks_per_stage)).tolist())
    channels = STAGE_WIDTHS[0]
    for stage, (num_blocks, width) in enumerate(zip(blocks_per_stage, STAGE_WIDTHS)):
      blocks = []
      for index in range(num_blocks):
        strides = 2 if stage > 0 and index == 0 else 1
        blocks.append(block(channels, width, strides, next(rates), **kw))
        channels = width * block.expansion
      setattr(self, f"layer{stage + 1}", nnx.List(blocks))
    self.fc = layers.classifier_head(channels, num_classes, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(self.bn1(self.conv1(x)))
    if not self.cifar:
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
      for block in stage:
        x = block(x)
    x = jnp.mean(x, axis=(1, 2))
    # Losses and metrics want float32 logits whatever the compute dtype.
    return self.fc(x).astype(jnp.float32)


def _resnet(name: str, block: type[BasicBlock | Bottleneck], blocks_per_stage: Sequence[int]):
  def factory(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
              param_dtype: DTypeLike = jnp.float32, in_channels: int = 3, cifar: bool = False,
              drop_path_rate: float = 0.0) -> ResNet:
    return ResNet(block, blocks_per_stage, num_classes=num_classes, rngs=rngs, dtype=dtype,
                  param_dtype=param_dtype, in_channels=in_channels, cifar=cifar,
                  drop_path_rate=drop_path_rate)
  factory.__name__ = factory.__qualname__ = name
  factory.__doc__ = f"timm's `{name}`: {block.__name__}s {tuple(blocks_per_stage)} per stage."
  return register(name)(factory)


resnet18 = _resnet("resnet18", BasicBlock, (2, 2, 2, 2))
resnet34 = _resnet("resnet34", BasicBlock, (3, 4, 6, 3))
resnet50 = _resnet("resnet50", Bottleneck, (3, 4, 6, 3))
resnet101 = _resnet("resnet101", Bottleneck, (3, 4, 23, 3))
