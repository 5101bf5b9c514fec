"""`resnet18_cifar`, `resnet34_cifar`: the CIFAR ResNets of kuangliu/pytorch-cifar, in flax.nnx.

Same layers and parameter count as that PyTorch code (ResNet-18: 11,173,962 parameters for 10
classes), so published CIFAR recipes and PyTorch checkpoints carry over: a 3x3 stride-1 stem without
max-pool, BasicBlocks with widths 64/128/256/512, conv1x1+BN shortcuts where the shape changes,
global average pool, linear head. Convolutions pad explicitly by 1 like PyTorch (not "SAME", which
pads stride-2 convolutions asymmetrically).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import layers
from jaxlab.models.registry import register

STAGE_WIDTHS = (64, 128, 256, 512)


class BasicBlock(nnx.Module):
  """Two 3x3 conv-BN layers plus a shortcut, ReLU after the sum."""

  def __init__(self, in_channels: int, out_channels: int, strides: int, *, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv1 = layers.conv(in_channels, out_channels, 3, strides=strides, padding=1, **kw)
    self.bn1 = layers.batch_norm(out_channels, **kw)
    self.conv2 = layers.conv(out_channels, out_channels, 3, padding=1, **kw)
    self.bn2 = layers.batch_norm(out_channels, **kw)
    if strides != 1 or in_channels != out_channels:
      # Projection so the residual sum has matching shapes.
      self.shortcut = nnx.Sequential(
          layers.conv(in_channels, out_channels, 1, strides=strides, padding=0, **kw),
          layers.batch_norm(out_channels, **kw),
      )
    else:
      self.shortcut = None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return nnx.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNetCifar(nnx.Module):

  def __init__(self, blocks_per_stage: Sequence[int], *, num_classes: int, rngs: nnx.Rngs,
               dtype: DTypeLike, param_dtype: DTypeLike, in_channels: int):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv1 = layers.conv(in_channels, STAGE_WIDTHS[0], 3, padding=1, **kw)
    self.bn1 = layers.batch_norm(STAGE_WIDTHS[0], **kw)
    stages = []
    channels = STAGE_WIDTHS[0]
    for stage, (num_blocks, width) in enumerate(zip(blocks_per_stage, STAGE_WIDTHS)):
      blocks = []
      for block in range(num_blocks):
        # Every stage but the first halves the resolution in its first block.
        strides = 2 if stage > 0 and block == 0 else 1
        blocks.append(BasicBlock(channels, width, strides, **kw))
        channels = width
      stages.append(nnx.Sequential(*blocks))
    self.stages = nnx.List(stages)
    self.head = layers.classifier_head(channels, num_classes, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(self.bn1(self.conv1(x)))
    for stage in self.stages:
      x = stage(x)
    x = jnp.mean(x, axis=(1, 2))
    # Losses and metrics want float32 logits whatever the compute dtype.
    return self.head(x).astype(jnp.float32)


@register("resnet18_cifar")
def resnet18_cifar(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
                   param_dtype: DTypeLike = jnp.float32, in_channels: int = 3) -> ResNetCifar:
  return ResNetCifar((2, 2, 2, 2), num_classes=num_classes, rngs=rngs, dtype=dtype,
                     param_dtype=param_dtype, in_channels=in_channels)


@register("resnet34_cifar")
def resnet34_cifar(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
                   param_dtype: DTypeLike = jnp.float32, in_channels: int = 3) -> ResNetCifar:
  return ResNetCifar((3, 4, 6, 3), num_classes=num_classes, rngs=rngs, dtype=dtype,
                     param_dtype=param_dtype, in_channels=in_channels)
