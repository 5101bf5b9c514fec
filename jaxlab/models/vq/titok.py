"""`titok`: a TiTok-style 1D tokenizer (Yu et al. 2024): an image becomes a fixed number of
latent tokens, not a grid.

encoder: ViT over [image patches; K learned latent tokens]; the K latent outputs, projected to
`latent_dim`, are quantized → K codes per image, whatever the image size.
decoder: ViT over [one mask token per patch; the K quantized latents]; each patch position's
output is projected back to its pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import logical_axes
from jaxlab.models.backbones import transformer_layers as tl
from jaxlab.models.backbones.vit import LAYER_NORM_EPSILON, Block, PatchEmbed
from jaxlab.models.registry import register
from jaxlab.models.vq import quantizers
from jaxlab.models.vq.base import Quantized


def embedding(shape: tuple[int, ...], *, param_dtype: DTypeLike, rngs: nnx.Rngs) -> nnx.Param:
  """Learned tokens or position embeddings (…, width), timm's std 0.02."""
  init = nnx.with_partitioning(nnx.initializers.normal(0.02), (None,) * (len(shape) - 1) + (logical_axes.EMBED,))
  return nnx.Param(init(rngs.params(), shape, param_dtype))


class TransformerStack(nnx.Module):
  """`depth` pre-norm ViT blocks and a final LayerNorm."""

  def __init__(self, width: int, depth: int, num_heads: int, *, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.blocks = nnx.List([Block(width, num_heads, **kw) for _ in range(depth)])
    self.norm = tl.layer_norm(width, epsilon=LAYER_NORM_EPSILON, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    for block in self.blocks:
      x = block(x)
    return self.norm(x)


class TiTok(nnx.Module):
  """Image (B, H, W, C) → codes (B, K) → reconstruction."""

  def __init__(self, *, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
               param_dtype: DTypeLike = jnp.float32, in_channels: int = 3,
               image_size: int = 256, patch_size: int = 16, width: int = 512, depth: int = 8,
               num_heads: int = 8, num_latent_tokens: int = 32, latent_dim: int = 12,
               quantizer: Mapping | None = None):
    if image_size % patch_size:
      raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    p = {"param_dtype": param_dtype, "rngs": rngs}
    quantizer = dict(quantizer or {"name": "vq", "codebook_size": 4096})
    self.in_channels, self.image_size, self.patch_size = in_channels, image_size, patch_size
    self.num_latent_tokens = num_latent_tokens
    grid = image_size // patch_size
    num_patches = grid * grid
    self.patch_embed = PatchEmbed(in_channels, width, patch_size, **kw)
    self.patch_pos = embedding((num_patches, width), **p)
    self.latent_tokens = embedding((num_latent_tokens, width), **p)
    self.latent_pos = embedding((num_latent_tokens, width), **p)
    self.encoder = TransformerStack(width, depth, num_heads, **kw)
    self.to_latent = tl.dense(width, latent_dim, (logical_axes.EMBED, None), **kw)
    self.quantizer = quantizers.create(quantizer.pop("name"), dim=latent_dim, rngs=rngs,
                                       param_dtype=param_dtype, **quantizer)
    self.from_latent = tl.dense(latent_dim, width, (None, logical_axes.EMBED), **kw)
    self.mask_token = embedding((width,), **p)
    self.decoder_patch_pos = embedding((num_patches, width), **p)
    self.decoder_latent_pos = embedding((num_latent_tokens, width), **p)
    self.decoder = TransformerStack(width, depth, num_heads, **kw)
    self.to_pixels = tl.dense(width, patch_size * patch_size * in_channels, (logical_axes.EMBED, None), **kw)

  @property
  def codebook_size(self) -> int:
    return self.quantizer.codebook_size

  def code_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
    del image_shape
    levels = getattr(self.quantizer, "codebook_sizes", None)
    k = self.num_latent_tokens
    return (k,) if levels is None else (k, len(levels))

  def encode(self, images: jax.Array) -> Quantized:
    tl.check_input(images, (self.image_size, self.image_size), self.in_channels, "titok")
    patches = self.patch_embed(images) + self.patch_pos[...]
    latents = jnp.broadcast_to(self.latent_tokens[...] + self.latent_pos[...],
                               (images.shape[0],) + self.latent_tokens.shape).astype(patches.dtype)
    x = self.encoder(jnp.concatenate([patches, latents], axis=1))
    return self.quantizer(self.to_latent(x[:, -self.num_latent_tokens:]))

  def decode_parts(self, values: jax.Array):
    """(features, last_layer, finish) with decode(values) == finish(last_layer(features))."""
    batch = values.shape[0]
    latents = self.from_latent(values) + self.decoder_latent_pos[...]
    masks = jnp.broadcast_to(self.mask_token[...] + self.decoder_patch_pos[...],
                             (batch,) + self.decoder_patch_pos.shape).astype(latents.dtype)
    features = self.decoder(jnp.concatenate([masks, latents], axis=1))[:, :masks.shape[1]]
    return features, self.to_pixels, self._unpatchify

  def _unpatchify(self, pixels: jax.Array) -> jax.Array:
    """(B, grid², p·p·C) → (B, H, W, C) float32."""
    batch, grid, p, c = pixels.shape[0], self.image_size // self.patch_size, self.patch_size, self.in_channels
    pixels = pixels.astype(jnp.float32).reshape(batch, grid, grid, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return pixels.reshape(batch, grid * p, grid * p, c)

  def decode(self, values: jax.Array) -> jax.Array:
    features, last_layer, finish = self.decode_parts(values)
    return finish(last_layer(features))

  def decode_codes(self, codes: jax.Array) -> jax.Array:
    return self.decode(self.quantizer.decode_codes(codes))

  def __call__(self, images: jax.Array) -> tuple[jax.Array, Quantized]:
    quantized = self.encode(images)
    return self.decode(quantized.values), quantized


@register("titok")
def titok(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
          param_dtype: DTypeLike = jnp.float32, in_channels: int = 3, image_size: int = 256,
          patch_size: int = 16, width: int = 512, depth: int = 8, num_heads: int = 8,
          num_latent_tokens: int = 32, latent_dim: int = 12, quantizer: Mapping | None = None) -> TiTok:
  """Defaults: TiTok-S-ish at 256² (32 tokens, 4096 codes of dimension 12)."""
  del num_classes
  return TiTok(rngs=rngs, dtype=dtype, param_dtype=param_dtype, in_channels=in_channels,
               image_size=image_size, patch_size=patch_size, width=width, depth=depth,
               num_heads=num_heads, num_latent_tokens=num_latent_tokens, latent_dim=latent_dim,
               quantizer=quantizer)
