"""Layers shared by the transformer and MetaFormer backbones (ViT, Mixer, Swin, MetaFormers).

Attribute names follow timm's module names (`qkv`, `proj`, `fc1`, `act`, `fc2`), so that timm state
dicts map onto these modules by name (see `jaxlab.convert`). Every parameter carries logical axes:
dense kernels are (EMBED, MLP) / (MLP, EMBED), the fused qkv kernel is (EMBED, QKV) and the
attention output projection is (HEADS, EMBED), so tensor-parallel rules can split heads and hidden
features.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import logical_axes as axes

# timm initializes transformer weights with a truncated normal of std 0.02.
_DENSE_INIT = nnx.initializers.truncated_normal(0.02)


def dense(in_features: int, out_features: int, kernel_axes: tuple[str | None, str | None], *,
          use_bias: bool = True, dtype: DTypeLike, param_dtype: DTypeLike,
          rngs: nnx.Rngs) -> nnx.Linear:
  """A dense layer whose kernel (in, out) and bias (out,) carry the given logical axes."""
  return nnx.Linear(
      in_features, out_features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
      kernel_init=nnx.with_partitioning(_DENSE_INIT, kernel_axes),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (kernel_axes[1],)),
      rngs=rngs)


def layer_norm(dim: int, *, epsilon: float, use_bias: bool = True, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs) -> nnx.LayerNorm:
  """LayerNorm over the last (channel) axis, with PyTorch's two-pass variance."""
  return nnx.LayerNorm(
      dim, epsilon=epsilon, use_bias=use_bias, use_fast_variance=False, dtype=dtype,
      param_dtype=param_dtype,
      scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), (axes.EMBED,)),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axes.EMBED,)),
      rngs=rngs)


def patch_conv(in_channels: int, out_channels: int, kernel_size: int, *, strides: int,
               padding: int | str, dtype: DTypeLike, param_dtype: DTypeLike,
               rngs: nnx.Rngs) -> nnx.Conv:
  """A convolution with bias that embeds patches (or downsamples) in NHWC, padding like PyTorch."""
  return nnx.Conv(
      in_channels, out_channels, kernel_size=(kernel_size, kernel_size), strides=strides,
      padding=padding, use_bias=True, dtype=dtype, param_dtype=param_dtype,
      kernel_init=nnx.with_partitioning(_DENSE_INIT, axes.CONV_KERNEL),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axes.CONV_OUT,)),
      rngs=rngs)


def gelu(x: jax.Array) -> jax.Array:
  """The exact (erf) GELU of PyTorch's nn.GELU()."""
  return jax.nn.gelu(x, approximate=False)


class Mlp(nnx.Module):
  """fc1 -> activation -> fc2 over the last axis (timm's `Mlp`).

  `act` is a function or a module with parameters (e.g. MetaFormer's StarReLU); kernels are
  (EMBED, MLP) and (MLP, EMBED) unless `hidden_axis`/`io_axis` say otherwise (Mixer's token MLP).
  """

  def __init__(self, in_features: int, hidden_features: int, *,
               act: Callable[[jax.Array], jax.Array] = gelu, use_bias: bool = True,
               io_axis: str | None = axes.EMBED, hidden_axis: str | None = axes.MLP,
               dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.fc1 = dense(in_features, hidden_features, (io_axis, hidden_axis), **kw)
    self.act = act
    self.fc2 = dense(hidden_features, in_features, (hidden_axis, io_axis), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(self.act(self.fc1(x)))


def _wants_cudnn(dtype: DTypeLike, head_dim: int) -> bool:
  """cuDNN flash attention applies on GPU to bf16/fp16 with head_dim % 8 == 0 (and <= 128)."""
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  return jax.default_backend() == "gpu" and half and head_dim % 8 == 0 and head_dim <= 128


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                          bias: jax.Array | None = None) -> jax.Array:
  """`jax.nn.dot_product_attention` on (B, N, heads, head_dim), cuDNN flash attention if it can.

  cuDNN is tried for unbiased attention in half precision on GPU and refused configurations fall
  back to XLA (jax checks them while tracing). Biased attention (Swin's per-window bias, which is
  learned and batch-shaped) always uses XLA: cuDNN's bias gradient needs a batch-1 bias.
  """
  if bias is None and _wants_cudnn(q.dtype, q.shape[-1]):
    try:
      return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
    except (NotImplementedError, RuntimeError):
      pass  # e.g. an unsupported sequence length on this GPU: the XLA version below
  return jax.nn.dot_product_attention(q, k, v, bias=bias)


class SelfAttention(nnx.Module):
  """Multi-head self-attention over (B, N, C) tokens with timm's fused qkv projection.

  The qkv kernel's output features are laid out as (3, heads, head_dim), like timm's, so timm
  weights load unchanged. Attention itself is `jax.nn.dot_product_attention` (cuDNN flash attention
  on GPU in bf16/fp16, see `dot_product_attention`); `bias` (broadcastable to (B, heads, N, N)) is
  added to the logits, which is how Swin's relative-position bias and shifted-window mask enter.
  """

  def __init__(self, dim: int, num_heads: int, *, head_dim: int | None = None,
               qkv_bias: bool = True, proj_bias: bool = True, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.head_dim = head_dim or dim // num_heads
    attn_dim = self.num_heads * self.head_dim
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.qkv = dense(dim, 3 * attn_dim, axes.QKV_KERNEL, use_bias=qkv_bias, **kw)
    self.proj = dense(attn_dim, dim, axes.ATTN_OUT_KERNEL, use_bias=proj_bias, **kw)

  def __call__(self, x: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    batch, tokens, _ = x.shape
    qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each (B, N, heads, head_dim)
    if bias is not None:
      bias = bias.astype(q.dtype)
    y = dot_product_attention(q, k, v, bias)
    return self.proj(y.reshape(batch, tokens, self.num_heads * self.head_dim))


def drop_path_rates(rate: float, depths: Sequence[int]) -> list[list[float]]:
  """Stochastic-depth rates rising linearly from 0 to `rate` over all blocks, split per stage."""
  total = sum(depths)
  flat = [rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
  out, start = [], 0
  for depth in depths:
    out.append(flat[start:start + depth])
    start += depth
  return out


def to_pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
  """(height, width) from an int or a pair; a one-line ValueError otherwise."""
  if isinstance(size, int):
    return size, size
  size = tuple(size)
  if len(size) != 2 or not all(isinstance(s, int) for s in size):
    raise ValueError(f"{name} must be an int or a (height, width) pair, got {size!r}")
  return size


def check_input(x: jax.Array, img_size: tuple[int, int], in_channels: int, model: str) -> None:
  """Models with position embeddings or token MLPs are built for one input size."""
  if x.ndim != 4 or tuple(x.shape[1:3]) != img_size or x.shape[3] != in_channels:
    raise ValueError(
        f"{model} expects NHWC input of shape (batch, {img_size[0]}, {img_size[1]}, "
        f"{in_channels}), got {tuple(x.shape)}; build it with img_size= for other sizes")
