"""`vq_autoencoder`: the convolutional VQ-VAE / VQGAN tokenizer (Taming Transformers' layout).

encoder: conv → [ResBlock × n, downsample] per level (no downsample after the last) → mid ResBlock
→ GroupNorm, swish, conv to `latent_dim`; quantizer (any of `jaxlab.models.vq.quantizers`) on
each latent pixel; decoder mirrors the encoder with nearest-neighbour upsampling + conv (transposed
convolutions are slow in XLA and make checkerboards). GroupNorm, not BatchNorm: nothing in the
autoencoder depends on the batch, so a frozen tokenizer is a pure function of its weights.

`len(channels) - 1` levels downsample by 2 each: 8x8 digits with channels=(32, 64) give 4x4 codes.
The same module is VQ-VAE or VQGAN; what differs is the training loss (`jaxlab.tasks.tokenizer`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import layers, logical_axes
from jaxlab.models.registry import register
from jaxlab.models.vq import quantizers
from jaxlab.models.vq.base import Quantized


def group_norm(channels: int, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs) -> nnx.GroupNorm:
  """GroupNorm with up to 32 groups (Taming uses 32), fewer for narrow layers."""
  groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0 and g <= channels)
  return nnx.GroupNorm(
      channels, num_groups=groups, epsilon=1e-6, dtype=dtype, param_dtype=param_dtype,
      scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), (logical_axes.CONV_OUT,)),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (logical_axes.CONV_OUT,)),
      rngs=rngs)


def conv(in_channels: int, out_channels: int, kernel_size: int = 3, *, strides: int = 1,
         padding: str | Sequence[tuple[int, int]] = "SAME", dtype: DTypeLike, param_dtype: DTypeLike,
         rngs: nnx.Rngs) -> nnx.Conv:
  """A biased convolution with fan-in (LeCun) init: there is no ReLU-BatchNorm pair to balance."""
  return layers.conv(in_channels, out_channels, kernel_size, strides=strides, padding=padding,
                     use_bias=True, kernel_init=nnx.initializers.lecun_normal(), dtype=dtype,
                     param_dtype=param_dtype, rngs=rngs)


class ResBlock(nnx.Module):
  """GroupNorm-swish-conv twice, plus the input (1x1-projected when the width changes)."""

  def __init__(self, in_channels: int, out_channels: int, *, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.norm1 = group_norm(in_channels, **kw)
    self.conv1 = conv(in_channels, out_channels, **kw)
    self.norm2 = group_norm(out_channels, **kw)
    self.conv2 = conv(out_channels, out_channels, **kw)
    self.shortcut = conv(in_channels, out_channels, 1, **kw) if in_channels != out_channels else None

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv1(nnx.swish(self.norm1(x)))
    h = self.conv2(nnx.swish(self.norm2(h)))
    return (self.shortcut(x) if self.shortcut is not None else x) + h


class Upsample(nnx.Module):
  """Nearest-neighbour x2, then a 3x3 conv."""

  def __init__(self, channels: int, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    self.conv = conv(channels, channels, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    return self.conv(jax.image.resize(x, (b, 2 * h, 2 * w, c), "nearest"))


class Encoder(nnx.Module):

  def __init__(self, in_channels: int, channels: Sequence[int], num_res_blocks: int, latent_dim: int,
               *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.conv_in = conv(in_channels, channels[0], **kw)
    blocks, width = [], channels[0]
    for level, out in enumerate(channels):
      for _ in range(num_res_blocks):
        blocks.append(ResBlock(width, out, **kw))
        width = out
      if level < len(channels) - 1:  # stride-2 conv, padded (0, 1) like Taming's Downsample
        blocks.append(conv(width, width, strides=2, padding=((0, 1), (0, 1)), **kw))
    self.blocks = nnx.List(blocks)
    self.mid = ResBlock(width, width, **kw)
    self.norm_out = group_norm(width, **kw)
    self.conv_out = conv(width, latent_dim, 1, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv_in(x)
    for block in self.blocks:
      x = block(x)
    return self.conv_out(nnx.swish(self.norm_out(self.mid(x))))


class Decoder(nnx.Module):
  """`features(z)` is everything but the last conv (`conv_out`), whose kernel the VQGAN loss
  uses for its adaptive adversarial weight."""

  def __init__(self, out_channels: int, channels: Sequence[int], num_res_blocks: int, latent_dim: int,
               *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    width = channels[-1]
    self.conv_in = conv(latent_dim, width, **kw)
    self.mid = ResBlock(width, width, **kw)
    blocks = []
    for level in reversed(range(len(channels))):
      for _ in range(num_res_blocks):
        blocks.append(ResBlock(width, channels[level], **kw))
        width = channels[level]
      if level > 0:
        blocks.append(Upsample(width, **kw))
    self.blocks = nnx.List(blocks)
    self.norm_out = group_norm(width, **kw)
    self.conv_out = conv(width, out_channels, **kw)

  def features(self, z: jax.Array) -> jax.Array:
    x = self.mid(self.conv_in(z))
    for block in self.blocks:
      x = block(x)
    return nnx.swish(self.norm_out(x))

  def __call__(self, z: jax.Array) -> jax.Array:
    return self.conv_out(self.features(z)).astype(jnp.float32)


class VQAutoencoder(nnx.Module):
  """Image (B, H, W, C) → codes (B, H/2^k, W/2^k) → reconstruction; see the module docstring."""

  def __init__(self, *, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
               param_dtype: DTypeLike = jnp.float32, in_channels: int = 3,
               channels: Sequence[int] = (128, 128, 256, 256, 512), num_res_blocks: int = 2,
               latent_dim: int = 256, quantizer: Mapping | None = None):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    channels = tuple(channels)
    quantizer = dict(quantizer or {"name": "vq", "codebook_size": 1024})
    self.downsample = 2 ** (len(channels) - 1)
    self.encoder = Encoder(in_channels, channels, num_res_blocks, latent_dim, **kw)
    self.quantizer = quantizers.create(quantizer.pop("name"), dim=latent_dim, rngs=rngs,
                                       param_dtype=param_dtype, **quantizer)
    self.decoder = Decoder(in_channels, channels, num_res_blocks, latent_dim, **kw)

  @property
  def codebook_size(self) -> int:
    return self.quantizer.codebook_size

  def code_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of one image's codes: (H/2^k, W/2^k) (plus levels for residual quantizers)."""
    h, w = image_shape[0] // self.downsample, image_shape[1] // self.downsample
    levels = getattr(self.quantizer, "codebook_sizes", None)
    return (h, w) if levels is None else (h, w, len(levels))

  def encode(self, images: jax.Array) -> Quantized:
    return self.quantizer(self.latents(images))

  def latents(self, images: jax.Array) -> jax.Array:
    """The encoder's output before quantization (B, H/2^k, W/2^k, latent_dim): what latent
    diffusion models (LDM's VQ-regularised autoencoders; `jaxlab.diffusion.latent`)."""
    return self.encoder(images)

  def decode_latents(self, latents: jax.Array) -> jax.Array:
    """Images from (generated) pre-quantization latents: quantize, then decode."""
    return self.decode(self.quantizer(latents).values)

  def decode(self, values: jax.Array) -> jax.Array:
    return self.decoder(values)

  def decode_codes(self, codes: jax.Array) -> jax.Array:
    return self.decoder(self.quantizer.decode_codes(codes))

  def decode_parts(self, values: jax.Array):
    """(features, last_layer, finish) with decode(values) == finish(last_layer(features)): the
    VQGAN loss weighs its adversarial term by gradients at `last_layer`'s kernel."""
    return self.decoder.features(values), self.decoder.conv_out, lambda y: y.astype(jnp.float32)

  def __call__(self, images: jax.Array) -> tuple[jax.Array, Quantized]:
    quantized = self.encode(images)
    return self.decode(quantized.values), quantized


@register("vq_autoencoder")
def vq_autoencoder(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
                   param_dtype: DTypeLike = jnp.float32, in_channels: int = 3,
                   channels: Sequence[int] = (128, 128, 256, 256, 512), num_res_blocks: int = 2,
                   latent_dim: int = 256, quantizer: Mapping | None = None) -> VQAutoencoder:
  """Defaults: the VQGAN f16 of Taming Transformers (ImageNet 256 → 16x16 codes, 1024 codes)."""
  del num_classes  # a tokenizer does not classify
  return VQAutoencoder(rngs=rngs, dtype=dtype, param_dtype=param_dtype, in_channels=in_channels,
                       channels=channels, num_res_blocks=num_res_blocks, latent_dim=latent_dim,
                       quantizer=quantizer)
