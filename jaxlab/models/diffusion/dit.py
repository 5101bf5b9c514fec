"""`dit`: Diffusion Transformers (Peebles & Xie 2023) with adaLN-zero conditioning.

Patchify (a p x p strided conv) + fixed 2-D sin-cos position embeddings -> N blocks of
LayerNorm (no affine) modulated by shift/scale from the conditioning, self-attention and a GELU
MLP, each gated; the modulation layers and the output projection start at zero, so every block
starts as the identity ("adaLN-zero"). The conditioning is the noise-level embedding plus the
class embedding (null class = num_classes, for classifier-free guidance). `learn_sigma` doubles
the output channels as in the paper's models (the extra half is the variance interpolation of
Nichol & Dhariwal; the formulations here use only the first half).

Registered sizes, as in the paper (`dit_<size>_<patch>`): S (384 wide, 12 deep, 6 heads),
B (768, 12, 12), L (1024, 24, 16), XL (1152, 28, 16), with patch 2, 4 or 8; `dit` takes the
shape as arguments. `model(x, time, labels)` returns float32 NHWC.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import logical_axes as axes
from jaxlab.models.backbones.transformer_layers import (
  Mlp,
  SelfAttention,
  layer_norm,
  patch_conv,
)
from jaxlab.models.diffusion.embeddings import (
  LabelEmbedding,
  TimeEmbedding,
  check_labels,
  dense,
)
from jaxlab.models.registry import register

SIZES = {"s": (384, 12, 6), "b": (768, 12, 12), "l": (1024, 24, 16), "xl": (1152, 28, 16)}
PATCHES = (2, 4, 8)
_ZERO = nnx.initializers.zeros_init()


def sincos_pos_embed(dim: int, grid: int) -> np.ndarray:
  """[grid*grid, dim] fixed 2-D sin-cos embedding: half the features for each axis (MAE/DiT)."""

  def one_axis(d, positions):
    omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2))
    out = positions.reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  ys, xs = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")
  return np.concatenate([one_axis(dim // 2, ys), one_axis(dim // 2, xs)], axis=1).astype(np.float32)


def _modulate(x, shift, scale):
  return x * (1 + scale[:, None]) + shift[:, None]


def _gelu_tanh(x):
  return jax.nn.gelu(x, approximate=True)


class DiTBlock(nnx.Module):

  def __init__(self, dim: int, num_heads: int, mlp_ratio: float, kw):
    self.norm1 = layer_norm(dim, epsilon=1e-6, use_bias=False, **kw)
    self.attn = SelfAttention(dim, num_heads, **kw)
    self.norm2 = layer_norm(dim, epsilon=1e-6, use_bias=False, **kw)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), act=_gelu_tanh, **kw)
    self.modulation = dense(dim, 6 * dim, (axes.EMBED, axes.MLP), kernel_init=_ZERO, **kw)

  def __call__(self, x, c):
    shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(self.modulation(nnx.silu(c)), 6, axis=-1)
    x = x + gate1[:, None] * self.attn(_modulate(self.norm1(x), shift1, scale1))
    return x + gate2[:, None] * self.mlp(_modulate(self.norm2(x), shift2, scale2))


@register("dit")
class DiT(nnx.Module):

  def __init__(self, *, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
               param_dtype: DTypeLike = jnp.float32, in_channels: int = 4, img_size: int = 32,
               patch_size: int = 2, hidden_size: int = 1152, depth: int = 28, num_heads: int = 16,
               mlp_ratio: float = 4.0, learn_sigma: bool = True):
    if img_size % patch_size:
      raise ValueError(f"dit: img_size={img_size} is not a multiple of patch_size={patch_size}")
    if hidden_size % 4:
      raise ValueError(f"dit: hidden_size={hidden_size} must be a multiple of 4 (2-D sin-cos positions)")
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.num_classes, self.img_size, self.in_channels, self.patch = num_classes, img_size, in_channels, patch_size
    self.out_channels = 2 * in_channels if learn_sigma else in_channels
    self.patch_embed = patch_conv(in_channels, hidden_size, patch_size, strides=patch_size, padding="VALID", **kw)
    self.pos_embed = sincos_pos_embed(hidden_size, img_size // patch_size)  # fixed, not a parameter
    self.time_embed = TimeEmbedding(256, hidden_size, **kw)
    self.label_embed = LabelEmbedding(num_classes, hidden_size, **kw) if num_classes else None
    self.blocks = nnx.List([DiTBlock(hidden_size, num_heads, mlp_ratio, kw) for _ in range(depth)])
    self.norm_out = layer_norm(hidden_size, epsilon=1e-6, use_bias=False, **kw)
    self.modulation_out = dense(hidden_size, 2 * hidden_size, (axes.EMBED, axes.MLP), kernel_init=_ZERO, **kw)
    self.proj_out = dense(hidden_size, patch_size * patch_size * self.out_channels, (axes.EMBED, None),
                          kernel_init=_ZERO, **kw)

  def __call__(self, x: jax.Array, time: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    if x.ndim != 4 or x.shape[1:] != (self.img_size, self.img_size, self.in_channels):
      raise ValueError(f"dit expects NHWC input (batch, {self.img_size}, {self.img_size}, "
                       f"{self.in_channels}), got {tuple(x.shape)}")
    labels = check_labels(labels, x.shape[0], self.num_classes, "dit")
    b, p, g = x.shape[0], self.patch, self.img_size // self.patch
    tokens = self.patch_embed(x).reshape(b, g * g, -1) + jnp.asarray(self.pos_embed, x.dtype)
    c = self.time_embed(time)
    if labels is not None:
      c = c + self.label_embed(labels)
    for block in self.blocks:
      tokens = block(tokens, c)
    shift, scale = jnp.split(self.modulation_out(nnx.silu(c)), 2, axis=-1)
    out = self.proj_out(_modulate(self.norm_out(tokens), shift, scale))
    out = out.reshape(b, g, g, p, p, self.out_channels).transpose(0, 1, 3, 2, 4, 5)
    out = out.reshape(b, self.img_size, self.img_size, self.out_channels).astype(jnp.float32)
    # The formulations use the prediction; the learned-variance half is for DiT's own recipe.
    return out[..., :self.in_channels]


def _register(size: str, patch: int) -> None:
  hidden, depth, heads = SIZES[size]

  def factory(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
              param_dtype: DTypeLike = jnp.float32, in_channels: int = 4, img_size: int = 32,
              learn_sigma: bool = True) -> DiT:
    return DiT(num_classes=num_classes, rngs=rngs, dtype=dtype, param_dtype=param_dtype,
               in_channels=in_channels, img_size=img_size, patch_size=patch, hidden_size=hidden,
               depth=depth, num_heads=heads, learn_sigma=learn_sigma)

  factory.__doc__ = f"DiT-{size.upper()}/{patch}: {hidden} wide, {depth} deep, {heads} heads."
  register(f"dit_{size}_{patch}")(factory)


for _size in SIZES:
  for _patch in PATCHES:
    _register(_size, _patch)
