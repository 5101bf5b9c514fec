"""MogaNet (Li et al., "MogaNet: Multi-order Gated Aggregation Network", arXiv 2211.03295), as the
authors' `models/moganet.py` (Westlake-AI/MogaNet) builds it; timm has no MogaNet.

`moganet_small` (MogaNet-S): widths (64, 128, 320, 512), depths (2, 3, 12, 2), FFN ratios (8, 8, 4, 4).
A two-conv stem (3x3 stride 2 to half width, BN, GELU, 3x3 stride 2, BN), stages 2-4 opened by a 3x3
stride-2 conv + BN, each stage closed by a BN; global average pool and a linear head. Each block is

  x = x + drop_path(layer_scale_1 * attn(norm1(x)))     (BatchNorm; layer scale initialised 1e-5)
  x = x + drop_path(layer_scale_2 * mlp(norm2(x)))

where `attn` is multi-order gated aggregation: proj_1 (1x1), "feature decomposition"
x + sigma * (x - mean_HW(x)), SiLU; a gate branch (1x1) and a value branch of depthwise convs of
three orders (5x5; then 5x5 dilation 2 on 3/8 of the channels and 7x7 dilation 3 on 4/8, 1/8 kept),
merged by a 1x1; SiLU(gate) * SiLU(value) -> proj_2, plus the block input. `mlp` is the
channel-aggregation FFN: 1x1 up, 3x3 depthwise, GELU, x + sigma * (x - GELU(decompose(x))) with a
1x1 conv to one channel, 1x1 down. Every convolution has a bias, as in the original.

Parameter count with 1000 classes: 25,335,675 -- the authors' MogaNet(arch='small') counted layer by
layer from their `models/moganet.py` (the paper's Table reports "25.3M"); the tests check it.

Attribute names follow the authors' module paths (`patch_embed1.projection.0`, `blocks1[0].attn.value.
DW_conv0`, `blocks1[0].mlp.decompose`, `norm1`, `head`), so their checkpoints map onto this module
by name (their (1, C, 1, 1) scales reshape to (C,)).

CIFAR form (`cifar=True`): the stem's first convolution has stride 1, so a 32x32 image gives stages
at 16x16, 8x8, 4x4 and 2x2 instead of 8, 4, 2 and 1 (the stride-reduced stem of CIFAR variants of
hierarchical networks); the parameters are the same. Inputs may have any size (no position terms).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import layers
from jaxlab.models import logical_axes as axes
from jaxlab.models.registry import register

# The authors initialise convolutions with N(0, 2 / fan_out), fan_out = k*k*out/groups (PyTorch's).
_DENSE_CONV_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(in_channels: int, out_channels: int, kernel_size: int, *, strides: int = 1,
          dilation: int = 1, groups: int = 1, dtype: DTypeLike, param_dtype: DTypeLike,
          rngs: nnx.Rngs) -> nnx.Conv:
  """A biased convolution padded like PyTorch's `padding = dilation * (k - 1) // 2`."""
  pad = dilation * (kernel_size - 1) // 2
  if groups == 1:
    init = _DENSE_CONV_INIT
  else:  # depthwise: PyTorch's fan_out divides by groups, leaving k*k*out/groups taps
    init = nnx.initializers.normal((2.0 / (kernel_size * kernel_size * out_channels // groups)) ** 0.5)
  return nnx.Conv(
      in_channels, out_channels, kernel_size=(kernel_size, kernel_size), strides=strides,
      padding=pad, kernel_dilation=dilation, feature_group_count=groups, use_bias=True,
      dtype=dtype, param_dtype=param_dtype,
      kernel_init=nnx.with_partitioning(init, axes.CONV_KERNEL),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axes.CONV_OUT,)), rngs=rngs)


def gelu(x: jax.Array) -> jax.Array:
  """PyTorch's nn.GELU(): the exact (erf) form."""
  return jax.nn.gelu(x, approximate=False)


class ElementScale(nnx.Module):
  """A learned per-channel scale (`sigma` of the feature decomposition), initialised to 1e-5."""

  def __init__(self, dim: int, init_value: float, *, param_dtype: DTypeLike):
    self.scale = nnx.Param(nnx.with_partitioning(nnx.initializers.constant(init_value),
                                                 (axes.CONV_OUT,))(jax.random.key(0), (dim,), param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    return x * self.scale[...].astype(x.dtype)


class MultiOrderDWConv(nnx.Module):
  """Depthwise convs of three orders: 5x5 on all channels, then dilated 5x5 / 7x7 on two splits."""

  def __init__(self, dim: int, *, dilations: Sequence[int] = (1, 2, 3),
               channel_split: Sequence[int] = (1, 3, 4), dtype: DTypeLike, param_dtype: DTypeLike,
               rngs: nnx.Rngs):
    if dim % sum(channel_split):
      raise ValueError(f"MogaNet width {dim} must be a multiple of {sum(channel_split)}")
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    # Same split arithmetic as the original: int() of the ratios, the first split takes the rest.
    self.dims_1 = int(channel_split[1] / sum(channel_split) * dim)
    self.dims_2 = int(channel_split[2] / sum(channel_split) * dim)
    self.dims_0 = dim - self.dims_1 - self.dims_2
    self.DW_conv0 = _conv(dim, dim, 5, dilation=dilations[0], groups=dim, **kw)
    self.DW_conv1 = _conv(self.dims_1, self.dims_1, 5, dilation=dilations[1], groups=self.dims_1, **kw)
    self.DW_conv2 = _conv(self.dims_2, self.dims_2, 7, dilation=dilations[2], groups=self.dims_2, **kw)
    self.PW_conv = _conv(dim, dim, 1, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    x0 = self.DW_conv0(x)
    x1 = self.DW_conv1(x0[..., self.dims_0:self.dims_0 + self.dims_1])
    x2 = self.DW_conv2(x0[..., x0.shape[-1] - self.dims_2:])
    return self.PW_conv(jnp.concatenate([x0[..., :self.dims_0], x1, x2], axis=-1))


class MultiOrderGatedAggregation(nnx.Module):
  """The spatial mixer: SiLU(gate(y)) * SiLU(value(y)) -> proj_2, plus the input (y decomposed)."""

  def __init__(self, dim: int, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.proj_1 = _conv(dim, dim, 1, **kw)
    self.gate = _conv(dim, dim, 1, **kw)
    self.value = MultiOrderDWConv(dim, **kw)
    self.proj_2 = _conv(dim, dim, 1, **kw)
    self.sigma = ElementScale(dim, 1e-5, param_dtype=param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    shortcut = x
    x = self.proj_1(x)
    # Feature decomposition: push the features away from their global average (the "0-order" part).
    x = nnx.silu(x + self.sigma(x - jnp.mean(x, axis=(1, 2), keepdims=True)))
    x = self.proj_2(nnx.silu(self.gate(x)) * nnx.silu(self.value(x)))
    return x + shortcut


class ChannelAggregationFFN(nnx.Module):
  """1x1 up, 3x3 depthwise, GELU, channel aggregation (x + sigma * (x - GELU(1x1 to 1))), 1x1 down."""

  def __init__(self, dim: int, hidden: int, *, dtype: DTypeLike, param_dtype: DTypeLike,
               rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.fc1 = _conv(dim, hidden, 1, **kw)
    self.dwconv = _conv(hidden, hidden, 3, groups=hidden, **kw)
    self.fc2 = _conv(hidden, dim, 1, **kw)
    self.decompose = _conv(hidden, 1, 1, **kw)
    self.sigma = ElementScale(hidden, 1e-5, param_dtype=param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = gelu(self.dwconv(self.fc1(x)))
    x = x + self.sigma(x - gelu(self.decompose(x)))
    return self.fc2(x)


class MogaBlock(nnx.Module):

  def __init__(self, dim: int, ffn_ratio: int, *, drop_path: float, layer_scale: float,
               dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.norm1 = layers.batch_norm(dim, **kw)
    self.attn = MultiOrderGatedAggregation(dim, **kw)
    self.norm2 = layers.batch_norm(dim, **kw)
    self.mlp = ChannelAggregationFFN(dim, dim * ffn_ratio, **kw)
    scale = nnx.with_partitioning(nnx.initializers.constant(layer_scale), (axes.CONV_OUT,))
    self.layer_scale_1 = nnx.Param(scale(jax.random.key(0), (dim,), param_dtype))
    self.layer_scale_2 = nnx.Param(scale(jax.random.key(0), (dim,), param_dtype))
    self.drop_path = layers.DropPath(drop_path, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.drop_path(self.layer_scale_1[...].astype(x.dtype) * self.attn(self.norm1(x)))
    return x + self.drop_path(self.layer_scale_2[...].astype(x.dtype) * self.mlp(self.norm2(x)))


class StackConvPatchEmbed(nnx.Module):
  """The stem: 3x3 conv to half width, BN, GELU, 3x3 conv, BN (strides 2, 2; 1, 2 for CIFAR)."""

  def __init__(self, in_channels: int, dim: int, *, cifar: bool, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.projection = nnx.Sequential(
        _conv(in_channels, dim // 2, 3, strides=1 if cifar else 2, **kw),
        layers.batch_norm(dim // 2, **kw),
        gelu,
        _conv(dim // 2, dim, 3, strides=2, **kw),
        layers.batch_norm(dim, **kw))

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.projection(x)


class ConvPatchEmbed(nnx.Module):
  """Downsampling between stages: 3x3 stride-2 conv, BN."""

  def __init__(self, in_channels: int, dim: int, *, dtype: DTypeLike, param_dtype: DTypeLike,
               rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.projection = _conv(in_channels, dim, 3, strides=2, **kw)
    self.norm = layers.batch_norm(dim, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.norm(self.projection(x))


def _drop_path_rates(rate: float, depths: Sequence[int]) -> list[float]:
  """torch.linspace(0, rate, sum(depths)), the original's stochastic-depth decay rule."""
  total = sum(depths)
  return [rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]


class MogaNet(nnx.Module):
  """Four stages `patch_embed{i}` -> `blocks{i}` -> `norm{i}`, average pool, `head`."""

  def __init__(self, *, dims: Sequence[int], depths: Sequence[int], ffn_ratios: Sequence[int],
               num_classes: int, in_channels: int, cifar: bool, drop_path_rate: float,
               layer_scale: float = 1e-5, dtype: DTypeLike, param_dtype: DTypeLike,
               rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    rates = _drop_path_rates(drop_path_rate, depths)
    start = 0
    for i, (dim, depth, ratio) in enumerate(zip(dims, depths, ffn_ratios)):
      embed = (StackConvPatchEmbed(in_channels, dim, cifar=cifar, **kw) if i == 0
               else ConvPatchEmbed(dims[i - 1], dim, **kw))
      blocks = nnx.List([MogaBlock(dim, ratio, drop_path=rates[start + j], layer_scale=layer_scale,
                                   **kw) for j in range(depth)])
      start += depth
      setattr(self, f"patch_embed{i + 1}", embed)
      setattr(self, f"blocks{i + 1}", blocks)
      setattr(self, f"norm{i + 1}", layers.batch_norm(dim, **kw))
    self.num_stages = len(depths)
    self.head = nnx.Linear(
        dims[-1], num_classes, dtype=dtype, param_dtype=param_dtype,
        kernel_init=nnx.with_partitioning(nnx.initializers.truncated_normal(0.02), axes.HEAD_KERNEL),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axes.CLASSES,)), rngs=rngs)
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"MogaNet expects NHWC input, got shape {tuple(x.shape)}")
    x = x.astype(self.dtype)
    for i in range(1, self.num_stages + 1):
      x = getattr(self, f"patch_embed{i}")(x)
      for block in getattr(self, f"blocks{i}"):
        x = block(x)
      x = getattr(self, f"norm{i}")(x)
    # Losses and metrics want float32 logits whatever the compute dtype.
    return self.head(jnp.mean(x, axis=(1, 2))).astype(jnp.float32)


@register("moganet_small")
def moganet_small(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
                  param_dtype: DTypeLike = jnp.float32, in_channels: int = 3, cifar: bool = False,
                  drop_path_rate: float = 0.0) -> MogaNet:
  """MogaNet-S; drop_path_rate defaults to the authors' model default, 0 (set it per recipe)."""
  return MogaNet(dims=(64, 128, 320, 512), depths=(2, 3, 12, 2), ffn_ratios=(8, 8, 4, 4),
                 num_classes=num_classes, in_channels=in_channels, cifar=cifar,
                 drop_path_rate=drop_path_rate, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
