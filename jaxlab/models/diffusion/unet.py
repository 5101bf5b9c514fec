"""`unet`: an ADM/DDPM++-style U-Net for diffusion (Dhariwal & Nichol 2021; Song et al. 2021).

Input conv, then per resolution `num_res_blocks` residual blocks (GroupNorm -> SiLU -> conv, the
noise/class embedding entering as a scale and shift after the second GroupNorm, dropout, a
zero-initialised conv) with self-attention at `attention_resolutions`, and a strided-conv
downsample; a middle ResBlock-attention-ResBlock; the mirrored decoder with skip connections,
nearest-neighbour upsampling and a conv; GroupNorm -> SiLU -> zero-initialised output conv.

`model(x, time, labels)`: NHWC x, time [B] (the formulation's noise input), labels [B] for a
class-conditional model (num_classes > 0; the value num_classes is the null class). Attention is
`jax.nn.dot_product_attention` over the H*W tokens. Returns float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import logical_axes as axes
from jaxlab.models.backbones.transformer_layers import dot_product_attention
from jaxlab.models.diffusion.embeddings import (
  LabelEmbedding,
  TimeEmbedding,
  check_labels,
  dense,
)
from jaxlab.models.registry import register

_ZERO = nnx.initializers.zeros_init()
_CONV_INIT = nnx.initializers.variance_scaling(1.0, "fan_avg", "uniform")  # DDPM's default


def _conv(cin: int, cout: int, kernel: int, kw, *, strides: int = 1, zero: bool = False) -> nnx.Conv:
  return nnx.Conv(cin, cout, (kernel, kernel), strides=strides, padding="SAME",
                  kernel_init=nnx.with_partitioning(_ZERO if zero else _CONV_INIT, axes.CONV_KERNEL),
                  bias_init=nnx.with_partitioning(_ZERO, (axes.CONV_OUT,)), **kw)


def _group_norm(channels: int, groups: int, kw) -> nnx.GroupNorm:
  if channels % groups:
    raise ValueError(f"unet: {channels} channels do not split into norm_groups={groups} groups")
  return nnx.GroupNorm(channels, num_groups=groups, epsilon=1e-5,
                       scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), (axes.CONV_OUT,)),
                       bias_init=nnx.with_partitioning(_ZERO, (axes.CONV_OUT,)), **kw)


class ResBlock(nnx.Module):

  def __init__(self, cin: int, cout: int, emb_dim: int, *, dropout: float, groups: int, kw):
    self.norm1 = _group_norm(cin, groups, kw)
    self.conv1 = _conv(cin, cout, 3, kw)
    self.emb = dense(emb_dim, 2 * cout, (axes.EMBED, axes.CONV_OUT), **kw)
    self.norm2 = _group_norm(cout, groups, kw)
    self.dropout = nnx.Dropout(dropout, rngs=kw["rngs"])
    self.conv2 = _conv(cout, cout, 3, kw, zero=True)
    self.skip = _conv(cin, cout, 1, kw) if cin != cout else None

  def __call__(self, x, emb):
    h = self.conv1(nnx.silu(self.norm1(x)))
    scale, shift = jnp.split(self.emb(nnx.silu(emb))[:, None, None, :], 2, axis=-1)
    h = nnx.silu(self.norm2(h) * (1 + scale) + shift)
    h = self.conv2(self.dropout(h))
    return (x if self.skip is None else self.skip(x)) + h


class AttentionBlock(nnx.Module):
  """Self-attention over all H*W positions, residual, output projection initialised to zero."""

  def __init__(self, channels: int, num_heads: int, *, groups: int, kw):
    if channels % num_heads:
      raise ValueError(f"unet: {channels} channels do not split into num_heads={num_heads}")
    self.num_heads = num_heads
    self.norm = _group_norm(channels, groups, kw)
    self.qkv = dense(channels, 3 * channels, axes.QKV_KERNEL, **kw)
    self.proj = dense(channels, channels, axes.ATTN_OUT_KERNEL, kernel_init=_ZERO, **kw)

  def __call__(self, x):
    b, h, w, c = x.shape
    qkv = self.qkv(self.norm(x).reshape(b, h * w, c)).reshape(b, h * w, 3, self.num_heads, c // self.num_heads)
    y = dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
    return x + self.proj(y.reshape(b, h * w, c)).reshape(b, h, w, c)


class Level(nnx.Module):
  """The residual blocks (each optionally followed by attention) of one resolution."""

  def __init__(self, in_channels: Sequence[int], cout: int, emb_dim: int, attention: bool, *,
               num_heads: int, dropout: float, groups: int, kw):
    self.blocks = nnx.List([ResBlock(cin, cout, emb_dim, dropout=dropout, groups=groups, kw=kw)
                            for cin in in_channels])
    self.attentions = nnx.List([AttentionBlock(cout, num_heads, groups=groups, kw=kw)
                                for _ in in_channels] if attention else [])


@register("unet")
class UNet(nnx.Module):

  def __init__(self, *, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
               param_dtype: DTypeLike = jnp.float32, in_channels: int = 3, out_channels: int | None = None,
               img_size: int = 32, channels: int = 128, channel_mult: Sequence[int] = (1, 2, 2, 2),
               num_res_blocks: int = 2, attention_resolutions: Sequence[int] = (16,), num_heads: int = 4,
               dropout: float = 0.1, norm_groups: int = 32):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    if img_size % 2 ** (len(channel_mult) - 1):
      raise ValueError(f"unet: img_size={img_size} does not halve {len(channel_mult) - 1} times")
    self.num_classes, self.img_size, self.in_channels = num_classes, img_size, in_channels
    emb_dim = 4 * channels
    self.time_embed = TimeEmbedding(channels, emb_dim, **kw)
    self.label_embed = LabelEmbedding(num_classes, emb_dim, **kw) if num_classes else None
    block = {"emb_dim": emb_dim, "num_heads": num_heads, "dropout": dropout, "groups": norm_groups, "kw": kw}

    self.conv_in = _conv(in_channels, channels, 3, kw)
    skips, ch, res = [channels], channels, img_size
    down, downsamples = [], []
    for i, mult in enumerate(channel_mult):
      ins = [ch] + [mult * channels] * (num_res_blocks - 1)
      down.append(Level(ins, mult * channels, attention=res in attention_resolutions, **block))
      ch = mult * channels
      skips += [ch] * num_res_blocks
      if i < len(channel_mult) - 1:
        downsamples.append(_conv(ch, ch, 3, kw, strides=2))
        skips.append(ch)
        res //= 2
    self.down, self.downsamples = nnx.List(down), nnx.List(downsamples)
    self.mid_block1 = ResBlock(ch, ch, emb_dim, dropout=dropout, groups=norm_groups, kw=kw)
    self.mid_attention = AttentionBlock(ch, num_heads, groups=norm_groups, kw=kw)
    self.mid_block2 = ResBlock(ch, ch, emb_dim, dropout=dropout, groups=norm_groups, kw=kw)

    up, upsamples = [], []
    for i, mult in reversed(list(enumerate(channel_mult))):
      cout = mult * channels
      ins = [(ch if j == 0 else cout) + skips.pop() for j in range(num_res_blocks + 1)]
      up.append(Level(ins, cout, attention=res in attention_resolutions, **block))
      ch = cout
      if i > 0:
        upsamples.append(_conv(ch, ch, 3, kw))
        res *= 2
    self.up, self.upsamples = nnx.List(up), nnx.List(upsamples)
    self.norm_out = _group_norm(ch, norm_groups, kw)
    self.conv_out = _conv(ch, out_channels or in_channels, 3, kw, zero=True)

  def __call__(self, x: jax.Array, time: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    if x.ndim != 4 or x.shape[1:] != (self.img_size, self.img_size, self.in_channels):
      raise ValueError(f"unet expects NHWC input (batch, {self.img_size}, {self.img_size}, "
                       f"{self.in_channels}), got {tuple(x.shape)}")
    labels = check_labels(labels, x.shape[0], self.num_classes, "unet")
    emb = self.time_embed(time)
    if labels is not None:
      emb = emb + self.label_embed(labels)

    h = self.conv_in(x)
    skips = [h]
    for i, level in enumerate(self.down):
      for j, block in enumerate(level.blocks):
        h = block(h, emb)
        if len(level.attentions):
          h = level.attentions[j](h)
        skips.append(h)
      if i < len(self.downsamples):
        h = self.downsamples[i](h)
        skips.append(h)
    h = self.mid_block2(self.mid_attention(self.mid_block1(h, emb)), emb)
    for i, level in enumerate(self.up):
      for j, block in enumerate(level.blocks):
        h = block(jnp.concatenate([h, skips.pop()], axis=-1), emb)
        if len(level.attentions):
          h = level.attentions[j](h)
      if i < len(self.upsamples):
        b, hh, ww, c = h.shape
        h = self.upsamples[i](jax.image.resize(h, (b, 2 * hh, 2 * ww, c), "nearest"))
    return self.conv_out(nnx.silu(self.norm_out(h))).astype(jnp.float32)
