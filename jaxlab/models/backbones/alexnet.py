"""`alexnet`: torchvision's AlexNet (the one-GPU variant of Krizhevsky 2014), in flax.nnx.

timm has no AlexNet, so torchvision's `alexnet` is the reference: five convolutions with bias and
ReLU (11x11 stride 4, 5x5, 3x3, 3x3, 3x3; 64-192-384-256-256 channels) with 3x3 stride-2 max-pools
after the 1st, 2nd and 5th, PyTorch's adaptive average pool to 6x6, and the classifier
dropout(0.5)-fc(9216, 4096)-ReLU-dropout(0.5)-fc(4096, 4096)-ReLU-fc. `features` and `classifier`
are indexed like torchvision's nn.Sequential, so its checkpoints load by name; a conversion hook
reorders the first classifier weight's inputs from PyTorch's (C, H, W) flattening to NHWC's (H, W, C).

`cifar=True`: a 3x3 stride-1 first convolution and no first max-pool, for 32x32 inputs (the
features are then 7x7, pooled to 6x6 like any other size); the classifier is unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.convert import timm as timm_convert
from jaxlab.models import layers, logical_axes
from jaxlab.models.pooling import adaptive_avg_pool
from jaxlab.models.registry import register

POOL_SIZE = (6, 6)
HIDDEN = 4096
DROPOUT = 0.5


def _max_pool(x: jax.Array) -> jax.Array:
  return nnx.max_pool(x, (3, 3), strides=(2, 2))


def _identity(x: jax.Array) -> jax.Array:
  return x


def _hidden_dense(in_features: int, out_features: int, kw: dict) -> nnx.Linear:
  """A hidden fully connected layer of the classifier, sharded like an MLP."""
  return nnx.Linear(
      in_features, out_features, **kw,
      kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(),
                                        logical_axes.HIDDEN_DENSE_KERNEL),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (logical_axes.MLP,)))


class AlexNet(nnx.Module):
  pretrained_classifier = "classifier.6"

  def __init__(self, *, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike,
               param_dtype: DTypeLike, in_channels: int, cifar: bool):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}

    def conv(in_features, out_features, kernel_size, **kwargs):
      return layers.conv(in_features, out_features, kernel_size, use_bias=True, **kwargs, **kw)

    if cifar:  # no max-pool; an identity keeps torchvision's indices of the later layers
      stem = [conv(in_channels, 64, 3, padding=1), nnx.relu, _identity]
    else:
      stem = [conv(in_channels, 64, 11, strides=4, padding=2), nnx.relu, _max_pool]
    self.features = nnx.Sequential(
        *stem,
        conv(64, 192, 5, padding=2), nnx.relu, _max_pool,
        conv(192, 384, 3, padding=1), nnx.relu,
        conv(384, 256, 3, padding=1), nnx.relu,
        conv(256, 256, 3, padding=1), nnx.relu, _max_pool)
    features = 256 * POOL_SIZE[0] * POOL_SIZE[1]
    self.classifier = nnx.Sequential(
        nnx.Dropout(DROPOUT, rngs=rngs), _hidden_dense(features, HIDDEN, kw), nnx.relu,
        nnx.Dropout(DROPOUT, rngs=rngs), _hidden_dense(HIDDEN, HIDDEN, kw), nnx.relu,
        layers.classifier_head(HIDDEN, num_classes, **kw))

  def __call__(self, x: jax.Array) -> jax.Array:
    x = adaptive_avg_pool(self.features(x), POOL_SIZE)
    x = x.reshape(x.shape[0], -1)  # (H, W, C) order; the hook permutes PyTorch's (C, H, W)
    return self.classifier(x).astype(jnp.float32)


@timm_convert.hook("alexnet")
def _flatten_order_from_torch(state_dict: Mapping[str, np.ndarray], model: AlexNet
                              ) -> dict[str, np.ndarray]:
  """classifier.1.weight's inputs: PyTorch flattens (C, 6, 6) maps, jaxlab (6, 6, C)."""
  del model
  state_dict = dict(state_dict)
  weight = state_dict.get("classifier.1.weight")
  if weight is not None and weight.ndim == 2 and weight.shape[1] == 256 * 36:
    out = weight.shape[0]
    state_dict["classifier.1.weight"] = (
        weight.reshape(out, 256, *POOL_SIZE).transpose(0, 2, 3, 1).reshape(out, -1))
  return state_dict


@register("alexnet")
def alexnet(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
            param_dtype: DTypeLike = jnp.float32, in_channels: int = 3,
            cifar: bool = False) -> AlexNet:
  return AlexNet(num_classes=num_classes, rngs=rngs, dtype=dtype, param_dtype=param_dtype,
                 in_channels=in_channels, cifar=cifar)
