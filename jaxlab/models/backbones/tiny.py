"""Digit-sized members of the zoo's families, for studies and tests that must run on a CPU.

`tiny_vit`, `tiny_mixer` and `tiny_convnext` are the zoo's own VisionTransformer, MlpMixer and
ConvNeXt classes (same blocks, norms and initialisations as their timm counterparts), shrunk to the
embedded 8x8x1 digits: 2x2 patches (16 tokens) for the token models, a 3x3 stride-1 stem and two
stages (8 and 4 pixels) for ConvNeXt. With `small_cnn` (a BatchNorm CNN) they give a coupling study
four architecture families that train in seconds. Widths and depths are keywords, so tests can
shrink them further.
"""

import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models.backbones.convnext import ConvNeXt
from jaxlab.models.backbones.mixer import MlpMixer
from jaxlab.models.backbones.vit import VisionTransformer
from jaxlab.models.registry import register


@register("tiny_vit")
def tiny_vit(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
             param_dtype: DTypeLike = jnp.float32, in_channels: int = 1, img_size: int = 8,
             patch_size: int = 2, dim: int = 64, depth: int = 4, num_heads: int = 4,
             drop_path_rate: float = 0.0) -> VisionTransformer:
  """ViT with a class token: 4 blocks of width 64 (4 heads), 16 patch tokens on 8x8 inputs."""
  return VisionTransformer(dim=dim, depth=depth, num_heads=num_heads, patch_size=patch_size,
                           img_size=img_size, num_classes=num_classes, in_channels=in_channels,
                           drop_path_rate=drop_path_rate, dtype=dtype, param_dtype=param_dtype,
                           rngs=rngs)


@register("tiny_mixer")
def tiny_mixer(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
               param_dtype: DTypeLike = jnp.float32, in_channels: int = 1, img_size: int = 8,
               patch_size: int = 2, dim: int = 64, depth: int = 4,
               drop_path_rate: float = 0.0) -> MlpMixer:
  """MLP-Mixer with Mixer-S's MLP ratios (token 0.5, channel 4): 4 blocks of width 64."""
  return MlpMixer(dim=dim, depth=depth, patch_size=patch_size, img_size=img_size,
                  mlp_ratio=(0.5, 4.0), num_classes=num_classes, in_channels=in_channels,
                  drop_path_rate=drop_path_rate, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


@register("tiny_convnext")
def tiny_convnext(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
                  param_dtype: DTypeLike = jnp.float32, in_channels: int = 1,
                  depths: tuple[int, ...] = (1, 1), dims: tuple[int, ...] = (32, 64),
                  drop_path_rate: float = 0.0) -> ConvNeXt:
  """ConvNeXt (v1: layer scale) in its CIFAR form: 3x3 stem, stages of widths 32 and 64."""
  return ConvNeXt(tuple(depths), tuple(dims), use_grn=False, layer_scale=True,
                  num_classes=num_classes, rngs=rngs, dtype=dtype, param_dtype=param_dtype,
                  in_channels=in_channels, cifar=True, drop_path_rate=drop_path_rate)
