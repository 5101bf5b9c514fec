"""Pooling shared by the convnet backbones: PyTorch's adaptive average pooling, a pooled head.

`adaptive_avg_pool` reproduces `torch.nn.functional.adaptive_avg_pool2d` exactly (its overlapping
bins for sizes that do not divide, and upsampling by repetition), so torchvision/timm heads that rely
on it (AlexNet's 6x6 pool, VGG's pre-logits on small inputs) compute the same on any input size.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import layers


@functools.cache
def _bin_weights(in_size: int, out_size: int) -> np.ndarray:
  """(out, in) averaging matrix of PyTorch's adaptive pooling bins [floor(i*n/m), ceil((i+1)*n/m))."""
  weights = np.zeros((out_size, in_size), np.float32)
  for i in range(out_size):
    start = (i * in_size) // out_size
    end = -((-(i + 1) * in_size) // out_size)
    weights[i, start:end] = 1.0 / (end - start)
  return weights


def adaptive_avg_pool(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
  """NHWC average pooling to a fixed spatial size, with PyTorch's bin boundaries."""
  height, width = x.shape[1:3]
  if (height, width) == tuple(output_size):
    return x
  rows = jnp.asarray(_bin_weights(height, output_size[0]), x.dtype)
  cols = jnp.asarray(_bin_weights(width, output_size[1]), x.dtype)
  return jnp.einsum("ih,jw,nhwc->nijc", rows, cols, x)


class ClassifierHead(nnx.Module):
  """timm's ClassifierHead: global average pool, dropout, linear `fc` (float32 logits)."""

  def __init__(self, in_features: int, num_classes: int, *, drop_rate: float = 0.0,
               dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    self.drop = nnx.Dropout(drop_rate, rngs=rngs)
    self.fc = layers.classifier_head(in_features, num_classes, dtype=dtype,
                                     param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.mean(x, axis=(1, 2))
    return self.fc(self.drop(x)).astype(jnp.float32)
