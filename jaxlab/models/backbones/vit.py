"""Vision Transformer (ViT, arXiv 2010.11929) and DeiT (arXiv 2012.12877), as timm builds them.

`vit_tiny/small/base_patch16_224` and `deit_small_patch16_224` have timm's parameter counts
(5,717,416 / 22,050,664 / 86,567,656 / 22,050,664 with 1000 classes) and attribute names
(`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks[i].attn.qkv`, `norm`, `head`), so timm
checkpoints load by name.
A pre-norm transformer: patch embedding by a strided convolution, a class token, learned absolute
position embeddings, blocks of LayerNorm (eps 1e-6) -> attention with fused qkv -> residual and
LayerNorm -> GELU MLP -> residual, a final LayerNorm and a linear head on the class token.
DeiT-S is ViT-S trained with the DeiT recipe: the same network.

`img_size` sizes the position embeddings (one per patch of an img_size x img_size input, plus the
class token's); loading a checkpoint made for another size resamples them bicubically, as timm does.

CIFAR form (`cifar=True`): 32x32 input with 4x4 patches, so the transformer sees an 8x8 grid of 64
tokens (plus the class token), about what a 224 input gives with 16x16 patches at a quarter of the
sequence length; everything else is unchanged.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.convert import timm as timm_convert
from jaxlab.models import layers
from jaxlab.models import logical_axes as axes
from jaxlab.models.backbones import transformer_layers as tl
from jaxlab.models.registry import register

LAYER_NORM_EPSILON = 1e-6  # timm's ViT norm layer


class PatchEmbed(nnx.Module):
  """Non-overlapping patches -> embeddings by a convolution with stride = kernel = patch size."""

  def __init__(self, in_channels: int, dim: int, patch_size: int, *, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    self.proj = tl.patch_conv(in_channels, dim, patch_size, strides=patch_size, padding="VALID",
                              dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.proj(x)  # (B, H/p, W/p, dim)
    return x.reshape(x.shape[0], -1, x.shape[-1])


class Block(nnx.Module):
  """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)), both with stochastic depth."""

  def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, drop_path: float = 0.0,
               dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = tl.layer_norm(dim, epsilon=LAYER_NORM_EPSILON, **kw)
    self.attn = tl.SelfAttention(dim, num_heads, **kw)
    self.drop_path1 = layers.DropPath(drop_path, rngs=rngs)
    self.norm2 = tl.layer_norm(dim, epsilon=LAYER_NORM_EPSILON, **kw)
    self.mlp = tl.Mlp(dim, int(dim * mlp_ratio), **kw)
    self.drop_path2 = layers.DropPath(drop_path, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.drop_path1(self.attn(self.norm1(x)))
    return x + self.drop_path2(self.mlp(self.norm2(x)))


class VisionTransformer(nnx.Module):
  """ViT with a class token; logits come from the class token after the final norm."""

  def __init__(self, *, dim: int, depth: int, num_heads: int, patch_size: int,
               img_size: int | tuple[int, int], num_classes: int, in_channels: int,
               drop_path_rate: float, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    self.img_size = tl.to_pair(img_size, "img_size")
    if any(s % patch_size for s in self.img_size):
      raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {patch_size}")
    self.in_channels = in_channels
    self.grid_size = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.patch_embed = PatchEmbed(in_channels, dim, patch_size, **kw)
    num_tokens = 1 + self.grid_size[0] * self.grid_size[1]
    init = nnx.initializers.truncated_normal(0.02)
    self.cls_token = nnx.Param(nnx.with_partitioning(
        nnx.initializers.normal(1e-6), (None, None, axes.EMBED))(rngs.params(), (1, 1, dim),
                                                                 param_dtype))
    self.pos_embed = nnx.Param(nnx.with_partitioning(init, (None, None, axes.EMBED))(
        rngs.params(), (1, num_tokens, dim), param_dtype))
    rates = tl.drop_path_rates(drop_path_rate, [depth])[0]
    self.blocks = nnx.List([Block(dim, num_heads, drop_path=r, **kw) for r in rates])
    self.norm = tl.layer_norm(dim, epsilon=LAYER_NORM_EPSILON, **kw)
    self.head = layers.classifier_head(dim, num_classes, **kw)
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    tl.check_input(x, self.img_size, self.in_channels, "VisionTransformer")
    x = self.patch_embed(x.astype(self.dtype))
    cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
    x = jnp.concatenate([cls, x], axis=1) + self.pos_embed[...].astype(x.dtype)
    for block in self.blocks:
      x = block(x)
    x = self.norm(x)
    # Losses and metrics want float32 logits whatever the compute dtype.
    return self.head(x[:, 0]).astype(jnp.float32)


def resample_pos_embed(pos_embed: np.ndarray, new_grid: tuple[int, int],
                       num_prefix_tokens: int = 1) -> np.ndarray:
  """Bicubic resampling of (1, prefix + h*w, C) position embeddings to another patch grid.

  Matches timm's `resample_abs_pos_embed` (PyTorch bicubic with antialias=True, whose cubic kernel
  is Keys' a=-0.5, the kernel of `jax.image.resize(method="cubic")`); prefix (class) tokens are
  kept as they are. The old grid is assumed square, as in timm.
  """
  prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
  old = round(np.sqrt(grid.shape[1]))
  if old * old != grid.shape[1]:
    raise ValueError(f"position embedding with {grid.shape[1]} patch tokens is not a square grid")
  if (old, old) == tuple(new_grid):
    return pos_embed
  dim = grid.shape[-1]
  grid = jnp.asarray(grid.reshape(old, old, dim), jnp.float32)
  resized = jax.image.resize(grid, (*new_grid, dim), method="cubic", antialias=True)
  resized = np.asarray(resized, pos_embed.dtype).reshape(1, -1, dim)
  return np.concatenate([prefix, resized], axis=1)


@timm_convert.hook("vit_*", "deit_*")
def _pos_embed_for_model_grid(state_dict, model: VisionTransformer) -> dict[str, np.ndarray]:
  """Resamples a checkpoint's position embeddings to the model's patch grid (its img_size)."""
  state_dict = dict(state_dict)
  pos_embed = state_dict.get("pos_embed")
  if pos_embed is not None and pos_embed.shape != model.pos_embed.shape:
    state_dict["pos_embed"] = resample_pos_embed(np.asarray(pos_embed), model.grid_size)
  return state_dict


def _vit(dim: int, depth: int, num_heads: int, *, num_classes: int, rngs: nnx.Rngs,
         dtype: DTypeLike, param_dtype: DTypeLike, in_channels: int, cifar: bool,
         drop_path_rate: float, img_size: int | tuple[int, int] | None,
         patch_size: int | None) -> VisionTransformer:
  if img_size is None:
    img_size = 32 if cifar else 224
  if patch_size is None:
    patch_size = 4 if cifar else 16
  return VisionTransformer(dim=dim, depth=depth, num_heads=num_heads, patch_size=patch_size,
                           img_size=img_size, num_classes=num_classes, in_channels=in_channels,
                           drop_path_rate=drop_path_rate, dtype=dtype, param_dtype=param_dtype,
                           rngs=rngs)


def _register(name: str, dim: int, depth: int, num_heads: int) -> None:
  def factory(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
              param_dtype: DTypeLike = jnp.float32, in_channels: int = 3, cifar: bool = False,
              drop_path_rate: float = 0.0, img_size: int | tuple[int, int] | None = None,
              patch_size: int | None = None) -> VisionTransformer:
    """img_size: 224 (32 if cifar); patch_size: 16 (4 if cifar); drop_path_rate: timm's 0."""
    return _vit(dim, depth, num_heads, num_classes=num_classes, rngs=rngs, dtype=dtype,
                param_dtype=param_dtype, in_channels=in_channels, cifar=cifar,
                drop_path_rate=drop_path_rate, img_size=img_size, patch_size=patch_size)
  factory.__name__ = name
  register(name)(factory)


_register("vit_tiny_patch16_224", dim=192, depth=12, num_heads=3)
_register("vit_small_patch16_224", dim=384, depth=12, num_heads=6)
_register("vit_base_patch16_224", dim=768, depth=12, num_heads=12)
_register("deit_small_patch16_224", dim=384, depth=12, num_heads=6)
