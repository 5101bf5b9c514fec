"""`densenet121`: timm's DenseNet-121 (Huang et al. 2017; torchvision layout), in flax.nnx.

7x7 stride-2 stem conv (`features.conv0`) with BN-ReLU (`norm0`) and a 3x3 stride-2 max-pool, four
dense blocks of 6/12/24/16 layers (`features.denseblock{i}.denselayer{j}`: BN-ReLU-1x1 conv to
4*32 channels, BN-ReLU-3x3 conv to 32 new channels, concatenated to the input), transitions
between them (`features.transition{i}`: BN-ReLU-1x1 conv halving the channels, 2x2 average pool),
a final BN-ReLU (`norm5`), global average pool and linear `classifier`. timm's DenseNet has no
stochastic depth, so there is no `drop_path_rate`.

`cifar=True`: a 3x3 stride-1 stem conv and no max-pool, for 32x32 inputs (final feature map 4x4).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import layers
from jaxlab.models.registry import register

GROWTH_RATE = 32
BOTTLENECK_WIDTH = 4  # the 1x1 conv's output is BOTTLENECK_WIDTH * GROWTH_RATE channels
STEM_CHANNELS = 64


class DenseLayer(nnx.Module):
  """BN-ReLU-conv1x1-BN-ReLU-conv3x3, whose GROWTH_RATE outputs are appended to its input."""

  def __init__(self, in_channels: int, *, dtype: DTypeLike, param_dtype: DTypeLike,
               rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    width = BOTTLENECK_WIDTH * GROWTH_RATE
    self.norm1 = layers.batch_norm(in_channels, **kw)
    self.conv1 = layers.conv(in_channels, width, 1, padding=0, **kw)
    self.norm2 = layers.batch_norm(width, **kw)
    self.conv2 = layers.conv(width, GROWTH_RATE, 3, padding=1, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.conv1(nnx.relu(self.norm1(x)))
    y = self.conv2(nnx.relu(self.norm2(y)))
    return jnp.concatenate([x, y], axis=-1)


class DenseBlock(nnx.Module):
  """`num_layers` DenseLayers, named denselayer1... like timm's."""

  def __init__(self, num_layers: int, in_channels: int, **kw):
    self.num_layers = num_layers
    for index in range(num_layers):
      setattr(self, f"denselayer{index + 1}", DenseLayer(in_channels + index * GROWTH_RATE, **kw))

  def __call__(self, x: jax.Array) -> jax.Array:
    for index in range(self.num_layers):
      x = getattr(self, f"denselayer{index + 1}")(x)
    return x


class Transition(nnx.Module):
  """BN-ReLU-conv1x1 to half the channels, then 2x2 average pooling."""

  def __init__(self, in_channels: int, out_channels: int, **kw):
    self.norm = layers.batch_norm(in_channels, **kw)
    self.conv = layers.conv(in_channels, out_channels, 1, padding=0, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv(nnx.relu(self.norm(x)))
    return nnx.avg_pool(x, (2, 2), strides=(2, 2))


class DenseNetFeatures(nnx.Module):
  """timm's `features` Sequential, with its child names (conv0, norm0, denseblock1, ...)."""

  def __init__(self, block_config: Sequence[int], *, in_channels: int, cifar: bool, **kw):
    self.cifar = cifar
    self.num_blocks = len(block_config)
    if cifar:
      self.conv0 = layers.conv(in_channels, STEM_CHANNELS, 3, padding=1, **kw)
    else:
      self.conv0 = layers.conv(in_channels, STEM_CHANNELS, 7, strides=2, padding=3, **kw)
    self.norm0 = layers.batch_norm(STEM_CHANNELS, **kw)
    channels = STEM_CHANNELS
    for index, num_layers in enumerate(block_config):
      setattr(self, f"denseblock{index + 1}", DenseBlock(num_layers, channels, **kw))
      channels += num_layers * GROWTH_RATE
      if index + 1 < len(block_config):
        setattr(self, f"transition{index + 1}", Transition(channels, channels // 2, **kw))
        channels //= 2
    self.norm5 = layers.batch_norm(channels, **kw)
    self.out_channels = channels

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(self.norm0(self.conv0(x)))
    if not self.cifar:
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for index in range(1, self.num_blocks + 1):
      x = getattr(self, f"denseblock{index}")(x)
      if index < self.num_blocks:
        x = getattr(self, f"transition{index}")(x)
    return nnx.relu(self.norm5(x))


class DenseNet(nnx.Module):
  pretrained_classifier = "classifier"

  def __init__(self, block_config: Sequence[int], *, num_classes: int, rngs: nnx.Rngs,
               dtype: DTypeLike, param_dtype: DTypeLike, in_channels: int, cifar: bool):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.features = DenseNetFeatures(block_config, in_channels=in_channels, cifar=cifar, **kw)
    self.classifier = layers.classifier_head(self.features.out_channels, num_classes, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.mean(self.features(x), axis=(1, 2))
    return self.classifier(x).astype(jnp.float32)


@register("densenet121")
def densenet121(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
                param_dtype: DTypeLike = jnp.float32, in_channels: int = 3,
                cifar: bool = False) -> DenseNet:
  return DenseNet((6, 12, 24, 16), num_classes=num_classes, rngs=rngs, dtype=dtype,
                  param_dtype=param_dtype, in_channels=in_channels, cifar=cifar)
