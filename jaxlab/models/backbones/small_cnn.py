"""`small_cnn`: a 94k-parameter CNN for 8x8 digits and other small images; trains in seconds on CPU.

conv3x3(32)-BN-ReLU, conv3x3(64)-BN-ReLU, 2x2 avg-pool, conv3x3(128)-BN-ReLU, global average pool,
dropout, linear head. Channel counts are multiples of 8 so tests can shard them over 2 or 8 devices.
"""

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import layers
from jaxlab.models.registry import register

WIDTHS = (32, 64, 128)


@register("small_cnn")
class SmallCNN(nnx.Module):

  def __init__(
      self,
      *,
      num_classes: int,
      rngs: nnx.Rngs,
      dtype: DTypeLike = jnp.float32,
      param_dtype: DTypeLike = jnp.float32,
      in_channels: int = 1,  # grayscale digits, the dataset this model is for
      dropout_rate: float = 0.0,
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    c1, c2, c3 = WIDTHS
    self.conv1 = layers.conv(in_channels, c1, 3, **kw)
    self.bn1 = layers.batch_norm(c1, **kw)
    self.conv2 = layers.conv(c1, c2, 3, **kw)
    self.bn2 = layers.batch_norm(c2, **kw)
    self.conv3 = layers.conv(c2, c3, 3, **kw)
    self.bn3 = layers.batch_norm(c3, **kw)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)  # draws masks from the "dropout" stream
    self.head = layers.classifier_head(c3, num_classes, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(self.bn1(self.conv1(x)))
    x = nnx.relu(self.bn2(self.conv2(x)))
    x = nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = nnx.relu(self.bn3(self.conv3(x)))
    x = jnp.mean(x, axis=(1, 2))
    x = self.dropout(x)
    # Losses and metrics want float32 logits whatever the compute dtype.
    return self.head(x).astype(jnp.float32)
