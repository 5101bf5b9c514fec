"""Swin Transformer (arXiv 2103.14030) as timm's `swin_tiny_patch4_window7_224` builds it.

28,288,354 parameters with 1000 classes, timm's attribute names (`patch_embed.proj/norm`,
`layers[i].downsample.norm/reduction`, `layers[i].blocks[j].attn.qkv/relative_position_bias_table/
proj`, `norm`, `head.fc`) and timm's current layout: patch merging at the *start* of stages 1-3.

Each block is pre-norm window attention over non-overlapping windows (every other block shifts the
windows by half a window with a cyclic roll, and an attention mask of -100 keeps tokens that the
roll brought together from attending to each other), plus a learned relative-position bias
(a ((2w-1)^2, heads) table indexed by the pairwise offsets of a window's tokens), then a GELU MLP.
Attention runs in `jax.nn.dot_product_attention` with bias = relative-position bias + mask.
Where a stage's feature map is no larger than the window, the window shrinks to the map and the
shift is dropped (timm does the same), so the bias table of such a stage is smaller.

`img_size` fixes the stage resolutions and so the masks; drop_path_rate defaults to timm's 0.1.

CIFAR form (`cifar=True`): 32x32 input, 2x2 patches and 4x4 windows, so the stages see 16x16, 8x8,
4x4 and 2x2 maps (shifted windows in the first two; the last two are a single window). The stem then
reduces by 2 instead of 4, as the stride-reduced stems of CIFAR convnets do.
"""

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.convert import timm as timm_convert
from jaxlab.models import layers
from jaxlab.models.backbones import transformer_layers as tl
from jaxlab.models.registry import register

LAYER_NORM_EPSILON = 1e-5  # torch.nn.LayerNorm's default, which timm's Swin uses
MASKED = -100.0  # timm's value for attention logits between tokens of different shifted regions


@functools.cache
def relative_position_index(window: tuple[int, int]) -> np.ndarray:
  """(N, N) index into the bias table for every pair of tokens in a window of N = wh * ww."""
  coords = np.stack(np.meshgrid(np.arange(window[0]), np.arange(window[1]), indexing="ij"))
  coords = coords.reshape(2, -1)
  rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)  # (N, N, 2)
  rel[:, :, 0] += window[0] - 1  # shift offsets to start at 0
  rel[:, :, 1] += window[1] - 1
  return rel[:, :, 0] * (2 * window[1] - 1) + rel[:, :, 1]


def window_partition(x: jax.Array, window: tuple[int, int]) -> jax.Array:
  """(B, H, W, C) -> (B * num_windows, wh * ww, C), windows in row-major order per image."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // window[0], window[0], w // window[1], window[1], c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], c)


def window_reverse(windows: jax.Array, window: tuple[int, int], h: int, w: int) -> jax.Array:
  """Inverse of `window_partition`."""
  c = windows.shape[-1]
  x = windows.reshape(-1, h // window[0], w // window[1], window[0], window[1], c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


@functools.cache
def shifted_window_mask(size: tuple[int, int], window: tuple[int, int],
                        shift: tuple[int, int]) -> np.ndarray:
  """(num_windows, N, N) additive mask: 0 within a region of the rolled map, -100 across regions."""
  regions = np.zeros((1, *size, 1), np.float32)
  label = 0
  for hs in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
    for ws in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
      regions[:, hs[0]:hs[1], ws[0]:ws[1], :] = label
      label += 1
  windows = np.asarray(window_partition(regions, window))[..., 0]  # (nW, N)
  diff = windows[:, None, :] - windows[:, :, None]
  return np.where(diff != 0, MASKED, 0.0).astype(np.float32)


class WindowAttention(tl.SelfAttention):
  """Self-attention within a window, with a learned relative-position bias per head."""

  def __init__(self, dim: int, num_heads: int, window: tuple[int, int], *, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    super().__init__(dim, num_heads, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.window = window
    table_size = (2 * window[0] - 1) * (2 * window[1] - 1)
    init = nnx.with_partitioning(nnx.initializers.truncated_normal(0.02), (None, None))
    self.relative_position_bias_table = nnx.Param(
        init(rngs.params(), (table_size, num_heads), param_dtype))

  def __call__(self, x: jax.Array, mask: np.ndarray | None = None) -> jax.Array:
    n = self.window[0] * self.window[1]
    index = relative_position_index(self.window).reshape(-1)
    bias = self.relative_position_bias_table[...][index].reshape(n, n, self.num_heads)
    bias = bias.transpose(2, 0, 1)[None]  # (1, heads, N, N)
    if mask is not None:
      # x holds (B * nW) windows, window index fastest: tile (nW, heads, N, N) over the batch.
      num_windows = mask.shape[0]
      bias = bias + jnp.asarray(mask)[:, None]
      bias = jnp.broadcast_to(bias, (x.shape[0] // num_windows, *bias.shape))
      bias = bias.reshape(x.shape[0], self.num_heads, n, n)
    return super().__call__(x, bias)


class SwinTransformerBlock(nnx.Module):

  def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, window: int,
               shift: int, *, mlp_ratio: float = 4.0, drop_path: float, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    # A map no larger than the window is one window, and shifting it would change nothing.
    self.window = tuple(min(r, window) for r in resolution)
    self.shift = tuple(0 if r <= window else shift for r in resolution)
    self.resolution = resolution
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = tl.layer_norm(dim, epsilon=LAYER_NORM_EPSILON, **kw)
    self.attn = WindowAttention(dim, num_heads, self.window, **kw)
    self.drop_path1 = layers.DropPath(drop_path, rngs=rngs)
    self.norm2 = tl.layer_norm(dim, epsilon=LAYER_NORM_EPSILON, **kw)
    self.mlp = tl.Mlp(dim, int(dim * mlp_ratio), **kw)
    self.drop_path2 = layers.DropPath(drop_path, rngs=rngs)

  def _attention(self, x: jax.Array) -> jax.Array:
    _, h, w, _ = x.shape
    shifted = any(self.shift)
    if shifted:
      x = jnp.roll(x, (-self.shift[0], -self.shift[1]), axis=(1, 2))
    # Pad to whole windows (bottom/right), as timm does for sizes the window does not divide.
    pad_h, pad_w = (-h) % self.window[0], (-w) % self.window[1]
    x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    hp, wp = h + pad_h, w + pad_w
    mask = shifted_window_mask((hp, wp), self.window, self.shift) if shifted else None
    y = self.attn(window_partition(x, self.window), mask)
    y = window_reverse(y, self.window, hp, wp)[:, :h, :w]
    if shifted:
      y = jnp.roll(y, self.shift, axis=(1, 2))
    return y

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.drop_path1(self._attention(self.norm1(x)))
    return x + self.drop_path2(self.mlp(self.norm2(x)))


class PatchMerging(nnx.Module):
  """2x2 neighbourhoods -> 4C features -> LayerNorm -> linear to `out_dim` (halves H and W)."""

  def __init__(self, dim: int, out_dim: int, *, dtype: DTypeLike, param_dtype: DTypeLike,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm = tl.layer_norm(4 * dim, epsilon=LAYER_NORM_EPSILON, **kw)
    self.reduction = tl.dense(4 * dim, out_dim, (None, None), use_bias=False, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    h, w = x.shape[1], x.shape[2]
    # timm's order of the four neighbours: (0,0), (1,0), (0,1), (1,1) as (row, col) offsets.
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 4, 2, 5)
    return self.reduction(self.norm(x.reshape(b, h // 2, w // 2, 4 * c)))


class SwinTransformerStage(nnx.Module):

  def __init__(self, dim: int, out_dim: int, resolution: tuple[int, int], depth: int,
               num_heads: int, window: int, *, downsample: bool, drop_paths: list[float],
               dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.downsample = PatchMerging(dim, out_dim, **kw) if downsample else None
    self.blocks = nnx.List([
        SwinTransformerBlock(out_dim, resolution, num_heads, window,
                             shift=0 if i % 2 == 0 else window // 2, drop_path=drop_paths[i], **kw)
        for i in range(depth)])

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.downsample is not None:
      x = self.downsample(x)
    for block in self.blocks:
      x = block(x)
    return x


class PatchEmbed(nnx.Module):
  def __init__(self, in_channels: int, dim: int, patch_size: int, *, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.proj = tl.patch_conv(in_channels, dim, patch_size, strides=patch_size, padding="VALID",
                              **kw)
    self.norm = tl.layer_norm(dim, epsilon=LAYER_NORM_EPSILON, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.norm(self.proj(x))


class ClassifierHead(nnx.Module):
  """Global average pool over H, W, then `fc` (timm's `head.fc`)."""

  def __init__(self, dim: int, num_classes: int, *, dtype: DTypeLike, param_dtype: DTypeLike,
               rngs: nnx.Rngs):
    self.fc = layers.classifier_head(dim, num_classes, dtype=dtype, param_dtype=param_dtype,
                                     rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc(jnp.mean(x, axis=(1, 2)))


class SwinTransformer(nnx.Module):

  def __init__(self, *, embed_dim: int, depths: tuple[int, ...], num_heads: tuple[int, ...],
               patch_size: int, window_size: int, img_size: int | tuple[int, int],
               num_classes: int, in_channels: int, drop_path_rate: float, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    self.img_size = tl.to_pair(img_size, "img_size")
    if any(s % patch_size for s in self.img_size):
      raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {patch_size}")
    self.in_channels = in_channels
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.patch_embed = PatchEmbed(in_channels, embed_dim, patch_size, **kw)
    resolution = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
    dims = [embed_dim * 2 ** i for i in range(len(depths))]
    rates = tl.drop_path_rates(drop_path_rate, depths)
    stages = []
    for i, depth in enumerate(depths):
      if i > 0:
        resolution = tuple(math.ceil(r / 2) for r in resolution)
      stages.append(SwinTransformerStage(
          dims[max(i - 1, 0)], dims[i], resolution, depth, num_heads[i], window_size,
          downsample=i > 0, drop_paths=rates[i], **kw))
    self.layers = nnx.List(stages)
    self.norm = tl.layer_norm(dims[-1], epsilon=LAYER_NORM_EPSILON, **kw)
    self.head = ClassifierHead(dims[-1], num_classes, **kw)
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    tl.check_input(x, self.img_size, self.in_channels, "SwinTransformer")
    x = self.patch_embed(x.astype(self.dtype))
    for stage in self.layers:
      x = stage(x)
    # Losses and metrics want float32 logits whatever the compute dtype.
    return self.head(self.norm(x)).astype(jnp.float32)


def resize_bias_table(table: np.ndarray, window: tuple[int, int]) -> np.ndarray:
  """A ((2w-1)^2, heads) relative-position table for another (wh, ww) window.

  A smaller window's offsets are a subset of a larger one's, so shrinking (what a feature map
  smaller than the checkpoint's window needs) crops the centre of the table: the same biases the
  checkpoint applies to those offsets. Growing resamples the (2w-1, 2w-1) grid bicubically.
  (timm interpolates in both cases, on a geometric grid; it agrees with the crop only roughly.)
  """
  side = round(np.sqrt(table.shape[0]))
  if side * side != table.shape[0]:
    raise ValueError(f"relative-position table of {table.shape[0]} rows is not a square window's")
  new = (2 * window[0] - 1, 2 * window[1] - 1)
  grid = table.reshape(side, side, -1)
  if new[0] <= side and new[1] <= side:
    top, left = (side - new[0]) // 2, (side - new[1]) // 2
    grid = grid[top:top + new[0], left:left + new[1]]
  else:
    grid = np.asarray(jax.image.resize(jnp.asarray(grid, jnp.float32), (*new, grid.shape[-1]),
                                       method="cubic"), table.dtype)
  return grid.reshape(new[0] * new[1], -1)


@timm_convert.hook("swin_*")
def _swin_from_timm(state_dict, model: SwinTransformer) -> dict[str, np.ndarray]:
  """Drops buffers jaxlab recomputes and fits bias tables to the model's (clamped) windows.

  Checkpoints of the original Microsoft code (patch merging at the *end* of a stage, head `head`)
  are renamed to timm's current layout first, as timm's `checkpoint_filter_fn` does.
  """
  old_layout = "layers.0.downsample.reduction.weight" in state_dict
  out = {}
  for key, value in state_dict.items():
    if key.endswith(("relative_position_index", "attn_mask")):
      continue  # persistent buffers in old checkpoints; recomputed from the window here
    if old_layout:
      key = re.sub(r"^layers\.(\d+)\.downsample",
                   lambda m: f"layers.{int(m.group(1)) + 1}.downsample", key)
      key = re.sub(r"^head\.", "head.fc.", key)
    match = re.match(r"^layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$", key)
    if match and int(match[1]) < len(model.layers) and int(match[2]) < len(
        model.layers[int(match[1])].blocks):
      attn = model.layers[int(match[1])].blocks[int(match[2])].attn
      if value.shape != attn.relative_position_bias_table.shape:
        value = resize_bias_table(np.asarray(value), attn.window)
    out[key] = value
  return out


@register("swin_tiny_patch4_window7_224")
def swin_tiny_patch4_window7_224(
    *, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
    param_dtype: DTypeLike = jnp.float32, in_channels: int = 3, cifar: bool = False,
    drop_path_rate: float = 0.1, img_size: int | tuple[int, int] | None = None,
    patch_size: int | None = None, window_size: int | None = None) -> SwinTransformer:
  """Swin-T: dim 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24); 224/4/7, or 32/2/4 if cifar."""
  if img_size is None:
    img_size = 32 if cifar else 224
  if patch_size is None:
    patch_size = 2 if cifar else 4
  if window_size is None:
    window_size = 4 if cifar else 7
  return SwinTransformer(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                         patch_size=patch_size, window_size=window_size, img_size=img_size,
                         num_classes=num_classes, in_channels=in_channels,
                         drop_path_rate=drop_path_rate, dtype=dtype, param_dtype=param_dtype,
                         rngs=rngs)
