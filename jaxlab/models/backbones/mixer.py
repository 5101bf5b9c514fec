"""MLP-Mixer (arXiv 2105.01601) as timm's `mixer_s16_224` builds it: 18,528,264 parameters with
1000 classes.

A strided-convolution patch embedding (`stem.proj`), then 8 blocks of
x + mlp_tokens(norm1(x) over the token axis) and x + mlp_channels(norm2(x)), both GELU MLPs
(token MLP hidden width = dim / 2 = 256, channel MLP 4 * dim = 2048), LayerNorm eps 1e-6, stochastic
depth on both branches, a final norm, mean over tokens and a linear head. Names follow timm.

The token MLP mixes a fixed number of tokens, so the model is built for one input size (`img_size`);
its weights only fit checkpoints made for the same number of patches.

CIFAR form (`cifar=True`): 32x32 input with 4x4 patches, 64 tokens; the token MLP is
64 -> 256 -> 64.
"""

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import layers
from jaxlab.models import logical_axes as axes
from jaxlab.models.backbones import transformer_layers as tl
from jaxlab.models.backbones.vit import PatchEmbed
from jaxlab.models.registry import register

LAYER_NORM_EPSILON = 1e-6


class MixerBlock(nnx.Module):
  """Token mixing across patches, then channel mixing, each pre-normed and residual."""

  def __init__(self, dim: int, num_tokens: int, *, tokens_hidden: int, channels_hidden: int,
               drop_path: float, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = tl.layer_norm(dim, epsilon=LAYER_NORM_EPSILON, **kw)
    # The token MLP's input/output axis counts patches: never sharded.
    self.mlp_tokens = tl.Mlp(num_tokens, tokens_hidden, io_axis=None, hidden_axis=axes.MLP, **kw)
    self.drop_path = layers.DropPath(drop_path, rngs=rngs)  # one module for both branches, as timm
    self.norm2 = tl.layer_norm(dim, epsilon=LAYER_NORM_EPSILON, **kw)
    self.mlp_channels = tl.Mlp(dim, channels_hidden, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.mlp_tokens(jnp.swapaxes(self.norm1(x), 1, 2))  # (B, C, N): mixes along tokens
    x = x + self.drop_path(jnp.swapaxes(y, 1, 2))
    return x + self.drop_path(self.mlp_channels(self.norm2(x)))


class MlpMixer(nnx.Module):

  def __init__(self, *, dim: int, depth: int, patch_size: int, img_size: int | tuple[int, int],
               mlp_ratio: tuple[float, float], num_classes: int, in_channels: int,
               drop_path_rate: float, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    self.img_size = tl.to_pair(img_size, "img_size")
    if any(s % patch_size for s in self.img_size):
      raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {patch_size}")
    self.in_channels = in_channels
    num_tokens = (self.img_size[0] // patch_size) * (self.img_size[1] // patch_size)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.stem = PatchEmbed(in_channels, dim, patch_size, **kw)
    rates = tl.drop_path_rates(drop_path_rate, [depth])[0]
    self.blocks = nnx.List([
        MixerBlock(dim, num_tokens, tokens_hidden=int(mlp_ratio[0] * dim),
                   channels_hidden=int(mlp_ratio[1] * dim), drop_path=r, **kw) for r in rates])
    self.norm = tl.layer_norm(dim, epsilon=LAYER_NORM_EPSILON, **kw)
    self.head = layers.classifier_head(dim, num_classes, **kw)
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    tl.check_input(x, self.img_size, self.in_channels, "MlpMixer")
    x = self.stem(x.astype(self.dtype))
    for block in self.blocks:
      x = block(x)
    x = jnp.mean(self.norm(x), axis=1)
    # Losses and metrics want float32 logits whatever the compute dtype.
    return self.head(x).astype(jnp.float32)


@register("mixer_s16_224")
def mixer_s16_224(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
                  param_dtype: DTypeLike = jnp.float32, in_channels: int = 3, cifar: bool = False,
                  drop_path_rate: float = 0.0, img_size: int | tuple[int, int] | None = None,
                  patch_size: int | None = None) -> MlpMixer:
  """Mixer-S/16: dim 512, 8 blocks; img_size 224 (32 if cifar), patch 16 (4 if cifar)."""
  if img_size is None:
    img_size = 32 if cifar else 224
  if patch_size is None:
    patch_size = 4 if cifar else 16
  return MlpMixer(dim=512, depth=8, patch_size=patch_size, img_size=img_size,
                  mlp_ratio=(0.5, 4.0), num_classes=num_classes, in_channels=in_channels,
                  drop_path_rate=drop_path_rate, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
