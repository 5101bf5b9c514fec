"""`vgg13`: timm's VGG-13 (configuration B of Simonyan & Zisserman), in flax.nnx.

ImageNet form, as timm builds it: ten 3x3 convolutions with bias and ReLU in five blocks, each
ended by a 2x2 max-pool (`features`, indexed like timm's nn.Sequential so `features.3.weight`
loads into `features.layers[3]`), then timm's convolutional pre-logits (`pre_logits.fc1`: a 7x7
valid conv to 4096 features, `pre_logits.fc2`: 1x1 conv, both ReLU; feature maps smaller than 7x7
are first resampled to 7x7 with PyTorch's adaptive average pooling, as in timm), global average pool
and `head.fc`. No BatchNorm, as in the original.

`cifar=True`: the CIFAR VGG-13 of the CIFAR recipes (kuangliu/pytorch-cifar `VGG('VGG13')`):
the same convolutions, each followed by BatchNorm (laid out like timm's `vgg13_bn` features), and the
pre-logits MLP replaced by global average pooling (the features are 1x1 on 32x32 inputs) and a
linear head: 9.4M parameters instead of 133M.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import layers
from jaxlab.models.pooling import ClassifierHead, adaptive_avg_pool
from jaxlab.models.registry import register

# Output channels of each conv; "M" is a 2x2 stride-2 max-pool (timm's/torchvision's cfg "vgg13").
VGG13 = (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
PRE_LOGITS_FEATURES = 4096
PRE_LOGITS_KERNEL = 7


def _max_pool(x: jax.Array) -> jax.Array:
  return nnx.max_pool(x, (2, 2), strides=(2, 2))


class ConvMlp(nnx.Module):
  """timm's VGG pre-logits: a 7x7 conv and a 1x1 conv standing in for VGG's two 4096-wide FCs."""

  def __init__(self, in_channels: int, features: int, *, dtype: DTypeLike, param_dtype: DTypeLike,
               rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.fc1 = layers.conv(in_channels, features, PRE_LOGITS_KERNEL, padding=0, use_bias=True, **kw)
    self.fc2 = layers.conv(features, features, 1, padding=0, use_bias=True, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    height, width = x.shape[1:3]
    if min(height, width) < PRE_LOGITS_KERNEL:  # keep the input of the 7x7 conv at least 7x7
      x = adaptive_avg_pool(x, (max(height, PRE_LOGITS_KERNEL), max(width, PRE_LOGITS_KERNEL)))
    return nnx.relu(self.fc2(nnx.relu(self.fc1(x))))


class VGG(nnx.Module):
  pretrained_classifier = "head.fc"

  def __init__(self, config, *, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike,
               param_dtype: DTypeLike, in_channels: int, cifar: bool):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    stack = []
    channels = in_channels
    for item in config:
      if item == "M":
        stack.append(_max_pool)
        continue
      stack.append(layers.conv(channels, item, 3, padding=1, use_bias=True, **kw))
      if cifar:
        stack.append(layers.batch_norm(item, **kw))
      stack.append(nnx.relu)
      channels = item
    self.features = nnx.Sequential(*stack)
    if cifar:
      self.pre_logits = None
    else:
      self.pre_logits = ConvMlp(channels, PRE_LOGITS_FEATURES, **kw)
      channels = PRE_LOGITS_FEATURES
    self.head = ClassifierHead(channels, num_classes, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.features(x)
    if self.pre_logits is not None:
      x = self.pre_logits(x)
    return self.head(x)


@register("vgg13")
def vgg13(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
          param_dtype: DTypeLike = jnp.float32, in_channels: int = 3, cifar: bool = False) -> VGG:
  return VGG(VGG13, num_classes=num_classes, rngs=rngs, dtype=dtype, param_dtype=param_dtype,
             in_channels=in_channels, cifar=cifar)
