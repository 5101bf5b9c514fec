"""TransNeXt (Shi, "TransNeXt: Robust Foveal Visual Perception for Vision Transformers",
arXiv 2311.17132) as the authors' pure-PyTorch `classification/transnext_native.py`
(DaiShiResearch/TransNeXt) builds it; timm has no TransNeXt. Their CUDA variant computes the same.

`transnext_tiny`: widths (72, 144, 288, 576), heads (3, 6, 12, 24), depths (2, 2, 15, 2), MLP ratios
(8, 8, 4, 4), pooling ratios (8, 4, 2, 1), 3x3 local windows. Each stage opens with an overlapping
patch embedding (7x7 stride-4 conv in stage 1, 3x3 stride-2 after, each + LayerNorm) and closes with
a LayerNorm; the head averages the tokens. Blocks are pre-norm:

  x = x + drop_path(attn(norm1(x)))
  x = x + drop_path(mlp(norm2(x)))     convolutional GLU: fc1 to 2 x (2/3 * ratio * C), one half
                                       through a 3x3 depthwise conv + GELU gates the other, fc2

Aggregated attention (stages 1-3) lets every query attend, in one softmax, to its 3x3 neighbourhood
(keys/values of the block input) and to a pooled map (1x1 conv `sr`, GELU, average pool by the
stage's ratio, LayerNorm; 7x7 tokens at 224): cosine similarity (L2-normalised q and k) of
(q + query_embedding) scaled by softplus(temperature) * log(local length + pooled length), plus a
learned bias per window position (local) and a continuous position bias from a small MLP on
log-spaced relative coordinates (pooled). The local weights additionally get the query-dependent
"learnable tokens" term q . T + b before they mix the values. Stage 4 (ratio 1) is full attention
with the same length-scaled cosine similarity and MLP position bias, run through
`jax.nn.dot_product_attention`; the aggregated form, whose keys differ per query, runs as einsums.

Parameter count with 1000 classes: 28,258,960 -- the authors' `transnext_tiny()` counted layer by
layer from `transnext_native.py` (the paper lists "28.2M"); the tests check it.

Attribute names follow the authors' (`patch_embed1.proj/norm`, `block1[0].attn.q/kv/proj/sr/norm/
cpb_fc1/cpb_fc2/temperature/query_embedding/relative_pos_bias_local/learnable_tokens/
learnable_bias`, `block4[0].attn.qkv`, `block1[0].mlp.fc1/dwconv.dwconv/fc2`, `norm1`, `head`);
their (heads, 1, ...) parameters are stored without the size-1 axis. Position-bias coordinates and
window masks are recomputed from `img_size`, which the model is built for (inputs must have it).

CIFAR form (`cifar=True`): 32x32 input and `patch_size` 2 (a 3x3 stride-2 stem), so the stages see
16x16, 8x8, 4x4 and 2x2 maps, each pooled to 2x2 tokens -- the stride-reduced stem of CIFAR variants
of hierarchical transformers; the parameters are those of the 224 model except the stem kernel.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import layers
from jaxlab.models import logical_axes as axes
from jaxlab.models.backbones import transformer_layers as tl
from jaxlab.models.registry import register

BLOCK_NORM_EPSILON = 1e-6  # the authors' norm_layer: partial(nn.LayerNorm, eps=1e-6)
TORCH_NORM_EPSILON = 1e-5  # plain nn.LayerNorm: patch embeddings and the pooled-feature norm
CPB_HIDDEN = 512  # hidden width of the continuous position bias MLP
WINDOW = 3  # local attention window


def _adaptive_avg_pool_1d(values: np.ndarray, out_size: int) -> np.ndarray:
  """PyTorch's adaptive_avg_pool1d: bins [floor(i*n/m), ceil((i+1)*n/m)) of a 1-D array."""
  n = len(values)
  return np.array([values[(i * n) // out_size:-((-(i + 1) * n) // out_size)].mean()
                   for i in range(out_size)], np.float32)


@functools.cache
def relative_position_cpb(query_size: int, key_size: int,
                          pretrain_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(index (Nq*Nk,), coordinates table (U, 2)) of the continuous position bias.

  Keys sit at the average-pooled positions of the query grid; offsets are scaled to +-8 over the
  pretraining grid and log-spaced (sign * log2(1 + |d|) / 3); the table holds the distinct offsets.
  """
  axis_q = np.arange(query_size, dtype=np.float32)
  axis_k = _adaptive_avg_pool_1d(axis_q, key_size)
  qh, qw = (a.reshape(-1) for a in np.meshgrid(axis_q, axis_q, indexing="ij"))
  kh, kw = (a.reshape(-1) for a in np.meshgrid(axis_k, axis_k, indexing="ij"))
  scale = np.float32(8.0 / (pretrain_size - 1))
  rel = np.stack([(qh[:, None] - kh[None, :]) * scale, (qw[:, None] - kw[None, :]) * scale], -1)
  table, index = np.unique(rel.reshape(-1, 2), axis=0, return_inverse=True)
  table = np.sign(table) * np.log2(np.abs(table) + 1.0) / np.log2(np.float32(8.0))
  return index.reshape(-1).astype(np.int32), table.astype(np.float32)


@functools.cache
def local_window_mask(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """(valid (N, 9) bool, valid count (N,)) of each token's zero-padded 3x3 neighbourhood."""
  ones = np.pad(np.ones((height, width), bool), WINDOW // 2)
  valid = np.stack([ones[i:i + height, j:j + width].reshape(-1)
                    for i in range(WINDOW) for j in range(WINDOW)], -1)
  return valid, valid.sum(-1).astype(np.float32)


def _neighbourhoods(x: jax.Array) -> jax.Array:
  """(B, H, W, C) -> (B, H*W, 9, C): each position's 3x3 window, zero outside (PyTorch's Unfold)."""
  b, h, w, c = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  windows = [padded[:, i:i + h, j:j + w] for i in range(WINDOW) for j in range(WINDOW)]
  return jnp.stack(windows, axis=3).reshape(b, h * w, WINDOW * WINDOW, c)


def _l2_normalize(x: jax.Array) -> jax.Array:
  """F.normalize over the last axis (in float32, so bfloat16 norms do not lose the small ones)."""
  x32 = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(jnp.square(x32), axis=-1, keepdims=True))
  return (x32 / jnp.maximum(norm, 1e-12)).astype(x.dtype)


def _param(init, shape, logical, param_dtype) -> nnx.Param:
  return nnx.Param(nnx.with_partitioning(init, logical)(jax.random.key(0), shape, param_dtype))


def _conv(in_channels: int, out_channels: int, kernel_size: int, *, strides: int = 1,
          groups: int = 1, kernel_axes=axes.CONV_KERNEL, bias_axis=axes.CONV_OUT,
          dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs) -> nnx.Conv:
  """A biased conv, PyTorch padding k//2, the authors' init N(0, 2 / (k*k*out/groups))."""
  std = (2.0 / (kernel_size * kernel_size * out_channels // groups)) ** 0.5
  return nnx.Conv(
      in_channels, out_channels, kernel_size=(kernel_size, kernel_size), strides=strides,
      padding=kernel_size // 2, feature_group_count=groups, use_bias=True, dtype=dtype,
      param_dtype=param_dtype,
      kernel_init=nnx.with_partitioning(nnx.initializers.normal(std), kernel_axes),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (bias_axis,)), rngs=rngs)


class _AttentionParams(nnx.Module):
  """What both attentions share: temperature, query embedding, output projection, position MLP."""

  def _init_shared(self, dim: int, num_heads: int, *, dtype, param_dtype, rngs):
    self.num_heads = num_heads
    self.head_dim = dim // num_heads
    # softplus(temperature) starts at 1 / 0.24.
    self.temperature = _param(nnx.initializers.constant(np.log(np.expm1(1 / 0.24))),
                              (num_heads,), (None,), param_dtype)
    self.query_embedding = _param(nnx.initializers.truncated_normal(0.02),
                                  (num_heads, self.head_dim), (None, None), param_dtype)
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.proj = tl.dense(dim, dim, axes.ATTN_OUT_KERNEL, **kw)
    self.cpb_fc1 = tl.dense(2, CPB_HIDDEN, (None, axes.MLP), **kw)
    self.cpb_fc2 = tl.dense(CPB_HIDDEN, num_heads, (axes.MLP, None), **kw)

  def _position_bias(self, query_size: int, key_size: int) -> jax.Array:
    """(heads, Nq, Nk) bias from the MLP on the distinct relative coordinates."""
    index, table = relative_position_cpb(query_size, key_size, query_size)
    bias = self.cpb_fc2(nnx.relu(self.cpb_fc1(jnp.asarray(table))))  # (U, heads)
    return bias[index].reshape(query_size ** 2, key_size ** 2, self.num_heads).transpose(2, 0, 1)

  def _scaled_queries(self, q: jax.Array, length_scale: jax.Array) -> jax.Array:
    """(normalize(q) + query_embedding) * softplus(temperature) * log(sequence length)."""
    temperature = jax.nn.softplus(self.temperature[...].astype(jnp.float32))[:, None]
    scaled = ((q.astype(jnp.float32) + self.query_embedding[...].astype(jnp.float32))
              * temperature * length_scale)
    return scaled.astype(q.dtype)


class Attention(_AttentionParams):
  """Full attention (the last stage): length-scaled cosine similarity plus MLP position bias."""

  def __init__(self, dim: int, num_heads: int, *, resolution: int, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    self._init_shared(dim, num_heads, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.resolution = resolution
    self.qkv = tl.dense(dim, 3 * dim, axes.QKV_KERNEL, dtype=dtype, param_dtype=param_dtype,
                        rngs=rngs)

  def __call__(self, x: jax.Array, height: int, width: int) -> jax.Array:
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
    q = self._scaled_queries(_l2_normalize(qkv[:, :, 0]), np.log(n))
    k = _l2_normalize(qkv[:, :, 1])
    bias = self._position_bias(self.resolution, self.resolution)[None].astype(q.dtype)
    # The scale is already in q (temperature * log n), hence scale=1; the bias is batch-1, which
    # lets jax pick cuDNN's fused kernel on GPU where it applies.
    y = jax.nn.dot_product_attention(q, k, qkv[:, :, 2], bias=bias, scale=1.0)
    return self.proj(y.reshape(b, n, c))


class AggregatedAttention(_AttentionParams):
  """One softmax over a query's 3x3 neighbourhood and the pooled tokens (stages 1-3)."""

  def __init__(self, dim: int, num_heads: int, *, resolution: int, sr_ratio: int,
               dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    self._init_shared(dim, num_heads, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.resolution = resolution
    self.pool_size = resolution // sr_ratio
    local = WINDOW * WINDOW
    self.q = tl.dense(dim, dim, (axes.EMBED, axes.HEADS), **kw)
    self.kv = tl.dense(dim, 2 * dim, axes.QKV_KERNEL, **kw)
    self.sr = _conv(dim, dim, 1, **kw)
    self.norm = tl.layer_norm(dim, epsilon=TORCH_NORM_EPSILON, **kw)
    self.relative_pos_bias_local = _param(nnx.initializers.truncated_normal(0.0004),
                                          (num_heads, local), (None, None), param_dtype)
    self.learnable_tokens = _param(nnx.initializers.truncated_normal(0.02),
                                   (num_heads, self.head_dim, local), (None, None, None),
                                   param_dtype)
    self.learnable_bias = _param(nnx.initializers.zeros_init(), (num_heads, local), (None, None),
                                 param_dtype)

  def _pooled(self, x: jax.Array, height: int, width: int) -> jax.Array:
    """LayerNorm(avg_pool(GELU(sr(x)))) as (B, pool_len, C); the pool's bins divide the map."""
    b, _, c = x.shape
    p = self.pool_size
    y = tl.gelu(self.sr(x.reshape(b, height, width, c)))
    y = y.reshape(b, p, height // p, p, width // p, c).mean(axis=(2, 4))
    return self.norm(y.reshape(b, p * p, c))

  def __call__(self, x: jax.Array, height: int, width: int) -> jax.Array:
    b, n, c = x.shape
    heads, d = self.num_heads, self.head_dim
    pool_len = self.pool_size ** 2
    valid, local_len = local_window_mask(height, width)

    q_norm = _l2_normalize(self.q(x).reshape(b, n, heads, d))
    length_scale = jnp.log(jnp.asarray(local_len) + pool_len)[:, None, None]  # (N, 1, 1)
    q = self._scaled_queries(q_norm, length_scale)

    kv = self.kv(x).reshape(b, n, 2, heads, d)
    k_local = _l2_normalize(kv[:, :, 0]).reshape(b, height, width, c)
    v_local = kv[:, :, 1].reshape(b, height, width, c)
    k_local = _neighbourhoods(k_local).reshape(b, n, -1, heads, d)  # (B, N, 9, heads, d)
    v_local = _neighbourhoods(v_local).reshape(b, n, -1, heads, d)

    # Logits in float32: a masked softmax over local + pooled keys.
    attn_local = jnp.einsum("bnhd,bnkhd->bnhk", q, k_local, preferred_element_type=jnp.float32)
    attn_local = attn_local + self.relative_pos_bias_local[...].astype(jnp.float32)
    attn_local = jnp.where(jnp.asarray(valid)[None, :, None, :], attn_local, -jnp.inf)

    kv_pool = self.kv(self._pooled(x, height, width)).reshape(b, pool_len, 2, heads, d)
    k_pool, v_pool = _l2_normalize(kv_pool[:, :, 0]), kv_pool[:, :, 1]
    pool_bias = self._position_bias(self.resolution, self.pool_size).transpose(1, 0, 2)
    attn_pool = jnp.einsum("bnhd,bphd->bnhp", q, k_pool, preferred_element_type=jnp.float32)
    attn_pool = attn_pool + pool_bias.astype(jnp.float32)

    attn = jax.nn.softmax(jnp.concatenate([attn_local, attn_pool], axis=-1), axis=-1)
    attn_local, attn_pool = attn[..., :WINDOW * WINDOW], attn[..., WINDOW * WINDOW:]
    # Query-dependent weights of the local values: q_norm . learnable_tokens + learnable_bias.
    tokens = jnp.einsum("bnhd,hdk->bnhk", q_norm, self.learnable_tokens[...].astype(q_norm.dtype))
    local_weights = (tokens + self.learnable_bias[...].astype(tokens.dtype)
                     + attn_local.astype(tokens.dtype))
    y = (jnp.einsum("bnhk,bnkhd->bnhd", local_weights, v_local)
         + jnp.einsum("bnhp,bphd->bnhd", attn_pool.astype(v_pool.dtype), v_pool))
    return self.proj(y.reshape(b, n, c))


class DWConv(nnx.Module):
  def __init__(self, dim: int, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    # Depthwise over the hidden features: their channels are MLP features.
    self.dwconv = _conv(dim, dim, 3, groups=dim, kernel_axes=(None, None, None, axes.MLP),
                        bias_axis=axes.MLP, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array, height: int, width: int) -> jax.Array:
    b, n, c = x.shape
    return self.dwconv(x.reshape(b, height, width, c)).reshape(b, n, c)


class ConvolutionalGLU(nnx.Module):
  """fc1 -> (x, v); GELU(dwconv3x3(x)) * v -> fc2; hidden = int(2/3 * ratio * dim)."""

  def __init__(self, dim: int, hidden: int, *, dtype: DTypeLike, param_dtype: DTypeLike,
               rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    hidden = int(2 * hidden / 3)
    self.fc1 = tl.dense(dim, 2 * hidden, axes.HIDDEN_DENSE_KERNEL, **kw)
    self.dwconv = DWConv(hidden, **kw)
    self.fc2 = tl.dense(hidden, dim, (axes.MLP, axes.EMBED), **kw)

  def __call__(self, x: jax.Array, height: int, width: int) -> jax.Array:
    x, v = jnp.split(self.fc1(x), 2, axis=-1)
    return self.fc2(tl.gelu(self.dwconv(x, height, width)) * v)


class Block(nnx.Module):

  def __init__(self, dim: int, num_heads: int, mlp_ratio: int, *, resolution: int,
               sr_ratio: int, drop_path: float, dtype: DTypeLike, param_dtype: DTypeLike,
               rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.norm1 = tl.layer_norm(dim, epsilon=BLOCK_NORM_EPSILON, **kw)
    if sr_ratio == 1:
      self.attn = Attention(dim, num_heads, resolution=resolution, **kw)
    else:
      self.attn = AggregatedAttention(dim, num_heads, resolution=resolution, sr_ratio=sr_ratio,
                                      **kw)
    self.norm2 = tl.layer_norm(dim, epsilon=BLOCK_NORM_EPSILON, **kw)
    self.mlp = ConvolutionalGLU(dim, dim * mlp_ratio, **kw)
    self.drop_path = layers.DropPath(drop_path, rngs=rngs)

  def __call__(self, x: jax.Array, height: int, width: int) -> jax.Array:
    x = x + self.drop_path(self.attn(self.norm1(x), height, width))
    return x + self.drop_path(self.mlp(self.norm2(x), height, width))


class OverlapPatchEmbed(nnx.Module):
  """A strided conv with overlapping windows, then LayerNorm (eps 1e-5) over channels."""

  def __init__(self, in_channels: int, dim: int, kernel_size: int, stride: int, *,
               dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.proj = _conv(in_channels, dim, kernel_size, strides=stride, **kw)
    self.norm = tl.layer_norm(dim, epsilon=TORCH_NORM_EPSILON, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.norm(self.proj(x))


class TransNeXt(nnx.Module):
  """Four stages `patch_embed{i}` -> `block{i}` -> `norm{i}`, token average, `head`."""

  def __init__(self, *, dims: Sequence[int], num_heads: Sequence[int], mlp_ratios: Sequence[int],
               depths: Sequence[int], sr_ratios: Sequence[int], patch_size: int, img_size: int,
               num_classes: int, in_channels: int, drop_path_rate: float, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    self.resolutions = tuple(img_size // (patch_size * 2 ** i) for i in range(len(depths)))
    if (img_size % (patch_size * 2 ** (len(depths) - 1)) or self.resolutions[-1] < 2
        or any(r % s for r, s in zip(self.resolutions, sr_ratios))):
      raise ValueError(f"TransNeXt img_size {img_size} with patch_size {patch_size}: every stage "
                       f"must be at least 2x2 and divisible by its pooling ratio {tuple(sr_ratios)}; "
                       f"use a multiple of {patch_size * 2 ** (len(depths) - 1) * 2} such as 224")
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    rates = tl.drop_path_rates(drop_path_rate, depths)
    for i, depth in enumerate(depths):
      embed = (OverlapPatchEmbed(in_channels, dims[0], 2 * patch_size - 1, patch_size, **kw)
               if i == 0 else OverlapPatchEmbed(dims[i - 1], dims[i], 3, 2, **kw))
      blocks = nnx.List([
          Block(dims[i], num_heads[i], mlp_ratios[i], resolution=self.resolutions[i],
                sr_ratio=sr_ratios[i], drop_path=rates[i][j], **kw) for j in range(depth)])
      setattr(self, f"patch_embed{i + 1}", embed)
      setattr(self, f"block{i + 1}", blocks)
      setattr(self, f"norm{i + 1}", tl.layer_norm(dims[i], epsilon=BLOCK_NORM_EPSILON, **kw))
    self.num_stages = len(depths)
    self.img_size = (img_size, img_size)
    self.in_channels = in_channels
    self.head = layers.classifier_head(dims[-1], num_classes, **kw)
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    tl.check_input(x, self.img_size, self.in_channels, "TransNeXt")
    x = x.astype(self.dtype)
    for i in range(1, self.num_stages + 1):
      x = getattr(self, f"patch_embed{i}")(x)
      b, h, w, c = x.shape
      x = x.reshape(b, h * w, c)
      for block in getattr(self, f"block{i}"):
        x = block(x, h, w)
      x = getattr(self, f"norm{i}")(x).reshape(b, h, w, c)
    # Losses and metrics want float32 logits whatever the compute dtype.
    return self.head(jnp.mean(x, axis=(1, 2))).astype(jnp.float32)


@register("transnext_tiny")
def transnext_tiny(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
                   param_dtype: DTypeLike = jnp.float32, in_channels: int = 3,
                   cifar: bool = False, drop_path_rate: float = 0.0,
                   img_size: int | None = None) -> TransNeXt:
  """TransNeXt-Tiny at 224 (32 with patch 2 if cifar); drop_path_rate: the authors' default 0."""
  if img_size is None:
    img_size = 32 if cifar else 224
  return TransNeXt(dims=(72, 144, 288, 576), num_heads=(3, 6, 12, 24), mlp_ratios=(8, 8, 4, 4),
                   depths=(2, 2, 15, 2), sr_ratios=(8, 4, 2, 1), patch_size=2 if cifar else 4,
                   img_size=img_size, num_classes=num_classes, in_channels=in_channels,
                   drop_path_rate=drop_path_rate, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
