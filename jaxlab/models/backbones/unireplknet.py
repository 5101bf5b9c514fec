"""UniRepLKNet (Ding et al., "UniRepLKNet: A Universal Perception Large-Kernel ConvNet ...",
arXiv 2311.15599) in its training-time form, as the authors' `unireplknet.py` (AILab-CVC/UniRepLKNet)
builds it with `deploy=False`; timm has no UniRepLKNet.

`unireplknet_tiny` (UniRepLKNet-T): widths (80, 160, 320, 640), depths (3, 3, 18, 3). Stem: 3x3
stride-2 conv to half width, LayerNorm, GELU, 3x3 stride-2 conv, LayerNorm; stages 2-4 opened by a
3x3 stride-2 conv + LayerNorm (all convs of the stem/downsampling with bias, LayerNorm eps 1e-6 over
channels). Each block:

  y = SE(BN(dwconv(x)))                    SE: avg pool, 1x1 to C/4, ReLU, 1x1, sigmoid gate
  y = BN(pwconv2(GRN(GELU(pwconv1(y)))))   4x FFN with ConvNeXt-V2's GRN; pwconv2 bias-free
  x = x + drop_path(gamma * y)             layer scale initialised 1e-6

`dwconv` is a bias-free 3x3 depthwise conv in the 3x3 blocks (stage 1 and every other block of
stage 3) and otherwise the Dilated Reparam Block of kernel 13: a 13x13 depthwise conv + BN summed
with dilated depthwise branches (kernel, dilation) = (5, 1), (7, 2), (3, 3), (3, 4), (3, 5), each +
BN. (At deployment the authors fold all branches into one 13x13 conv; this is the form that trains.)
Head: global average pool, LayerNorm, linear.

Parameter count with 1000 classes: 31,693,420 -- the authors' `unireplknet_t()` (deploy=False)
counted layer by layer from their `unireplknet.py` (the paper reports "31M"); the tests check it.

Attribute names follow the authors' (`downsample_layers[i]`, `stages[i][j].dwconv.lk_origin`,
`.dwconv.origin_bn`, `.dwconv.dil_conv_k5_1`, `.dil_bn_k5_1`, `.norm`, `.se.down/up`, `.gamma`,
`norm`, `head`), except where theirs are nn.Sequential wrappers around layout permutes:
their `pwconv1.1` is `pwconv1`, `act.1` is `grn`, `pwconv2.0` is `pwconv2`, `pwconv2.2` is `pwconv2_norm`.

CIFAR form (`cifar=True`): the stem's first convolution has stride 1, so a 32x32 image gives stages
at 16x16, 8x8, 4x4 and 2x2 instead of 8, 4, 2 and 1 (the stride-reduced stem CIFAR variants of
hierarchical networks use); the parameters are the same. Inputs may have any size.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import layers
from jaxlab.models import logical_axes as axes
from jaxlab.models.backbones import transformer_layers as tl
from jaxlab.models.registry import register

LAYER_NORM_EPSILON = 1e-6
# The authors' Dilated Reparam Block branches for a 13x13 kernel: (kernel sizes, dilations).
DILATED_BRANCHES = {13: ((5, 7, 3, 3, 3), (1, 2, 3, 4, 5))}
# UniRepLKNet-T's kernel size per block (the authors' default_UniRepLKNet_T_kernel_sizes).
TINY_KERNELS = ((3, 3, 3), (13, 13, 13), (13, 3) * 9, (13, 13, 13))
_INIT = nnx.initializers.truncated_normal(0.02)  # the authors' init of conv and linear weights


def _conv(in_channels: int, out_channels: int, kernel_size: int, *, strides: int = 1,
          dilation: int = 1, groups: int = 1, use_bias: bool, dtype: DTypeLike,
          param_dtype: DTypeLike, rngs: nnx.Rngs) -> nnx.Conv:
  """A convolution padded like PyTorch's `padding = dilation * (k - 1) // 2` (odd kernels)."""
  return nnx.Conv(
      in_channels, out_channels, kernel_size=(kernel_size, kernel_size), strides=strides,
      padding=dilation * (kernel_size - 1) // 2, kernel_dilation=dilation,
      feature_group_count=groups, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
      kernel_init=nnx.with_partitioning(_INIT, axes.CONV_KERNEL),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axes.CONV_OUT,)), rngs=rngs)


def _layer_norm(dim: int, *, dtype: DTypeLike, param_dtype: DTypeLike,
                rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(
      dim, epsilon=LAYER_NORM_EPSILON, use_fast_variance=False, dtype=dtype,
      param_dtype=param_dtype,
      scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), (axes.CONV_OUT,)),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axes.CONV_OUT,)), rngs=rngs)


class DilatedReparamBlock(nnx.Module):
  """A large depthwise kernel + BN, plus dilated small depthwise kernels + BN, summed."""

  def __init__(self, dim: int, kernel_size: int, *, dtype: DTypeLike, param_dtype: DTypeLike,
               rngs: nnx.Rngs):
    if kernel_size not in DILATED_BRANCHES:
      raise ValueError(f"no dilated branches for kernel size {kernel_size}; valid: "
                       f"{', '.join(map(str, DILATED_BRANCHES))}")
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.lk_origin = _conv(dim, dim, kernel_size, groups=dim, use_bias=False, **kw)
    self.origin_bn = layers.batch_norm(dim, **kw)
    self.branches = tuple(zip(*DILATED_BRANCHES[kernel_size]))
    for k, r in self.branches:
      setattr(self, f"dil_conv_k{k}_{r}", _conv(dim, dim, k, dilation=r, groups=dim,
                                                use_bias=False, **kw))
      setattr(self, f"dil_bn_k{k}_{r}", layers.batch_norm(dim, **kw))

  def __call__(self, x: jax.Array) -> jax.Array:
    out = self.origin_bn(self.lk_origin(x))
    for k, r in self.branches:
      out = out + getattr(self, f"dil_bn_k{k}_{r}")(getattr(self, f"dil_conv_k{k}_{r}")(x))
    return out


class SEBlock(nnx.Module):
  """Squeeze-and-excitation: average pool, 1x1 down (C/4), ReLU, 1x1 up, sigmoid, scale."""

  def __init__(self, dim: int, hidden: int, *, dtype: DTypeLike, param_dtype: DTypeLike,
               rngs: nnx.Rngs):
    kw = {"use_bias": True, "dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.down = _conv(dim, hidden, 1, **kw)
    self.up = _conv(hidden, dim, 1, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    return x * jax.nn.sigmoid(self.up(nnx.relu(self.down(s))))


class GRN(nnx.Module):
  """Global response normalisation (ConvNeXt V2): (gamma * N(x) + 1) * x + beta, gamma = beta = 0."""

  def __init__(self, dim: int, *, param_dtype: DTypeLike):
    zeros = nnx.with_partitioning(nnx.initializers.zeros_init(), (axes.MLP,))
    self.gamma = nnx.Param(zeros(jax.random.key(0), (dim,), param_dtype))
    self.beta = nnx.Param(zeros(jax.random.key(0), (dim,), param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    # L2 norm over space per channel, divided by its mean over channels (eps as the original).
    g = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=(1, 2), keepdims=True))
    n = (g / (jnp.mean(g, axis=-1, keepdims=True) + 1e-6)).astype(x.dtype)
    return (self.gamma[...].astype(x.dtype) * n + 1) * x + self.beta[...].astype(x.dtype)


class UniRepLKNetBlock(nnx.Module):

  def __init__(self, dim: int, kernel_size: int, *, drop_path: float, layer_scale: float,
               dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    if kernel_size >= 7:
      self.dwconv = DilatedReparamBlock(dim, kernel_size, **kw)
    elif kernel_size in (3, 5):
      self.dwconv = _conv(dim, dim, kernel_size, groups=dim, use_bias=False, **kw)
    else:
      raise ValueError(f"UniRepLKNet kernel size {kernel_size}; valid: 3, 5, 13")
    self.norm = layers.batch_norm(dim, **kw)
    self.se = SEBlock(dim, dim // 4, **kw)
    hidden = 4 * dim
    self.pwconv1 = tl.dense(dim, hidden, axes.HIDDEN_DENSE_KERNEL, **kw)
    self.grn = GRN(hidden, param_dtype=param_dtype)
    self.pwconv2 = tl.dense(hidden, dim, (axes.MLP, axes.EMBED), use_bias=False, **kw)
    self.pwconv2_norm = layers.batch_norm(dim, **kw)
    self.gamma = layers.LayerScale(dim, layer_scale, axis_name=axes.CONV_OUT,
                                   param_dtype=param_dtype)
    self.drop_path = layers.DropPath(drop_path, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.se(self.norm(self.dwconv(x)))
    y = self.pwconv2_norm(self.pwconv2(self.grn(tl.gelu(self.pwconv1(y)))))
    return x + self.drop_path(self.gamma(y))


class UniRepLKNet(nnx.Module):

  def __init__(self, *, dims: Sequence[int], depths: Sequence[int],
               kernel_sizes: Sequence[Sequence[int]], num_classes: int, in_channels: int,
               cifar: bool, drop_path_rate: float, layer_scale: float = 1e-6, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    if [len(k) for k in kernel_sizes] != list(depths):
      raise ValueError(f"kernel sizes per block {kernel_sizes} do not match depths {depths}")
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    stem = nnx.Sequential(
        _conv(in_channels, dims[0] // 2, 3, strides=1 if cifar else 2, use_bias=True, **kw),
        _layer_norm(dims[0] // 2, **kw),
        tl.gelu,
        _conv(dims[0] // 2, dims[0], 3, strides=2, use_bias=True, **kw),
        _layer_norm(dims[0], **kw))
    self.downsample_layers = nnx.List([stem] + [
        nnx.Sequential(_conv(dims[i], dims[i + 1], 3, strides=2, use_bias=True, **kw),
                       _layer_norm(dims[i + 1], **kw)) for i in range(len(dims) - 1)])
    rates = tl.drop_path_rates(drop_path_rate, depths)
    self.stages = nnx.List([
        nnx.List([UniRepLKNetBlock(dims[i], k, drop_path=r, layer_scale=layer_scale, **kw)
                  for k, r in zip(kernel_sizes[i], rates[i])])
        for i in range(len(depths))])
    self.norm = tl.layer_norm(dims[-1], epsilon=LAYER_NORM_EPSILON, **kw)
    self.head = nnx.Linear(
        dims[-1], num_classes, dtype=dtype, param_dtype=param_dtype,
        kernel_init=nnx.with_partitioning(_INIT, axes.HEAD_KERNEL),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axes.CLASSES,)), rngs=rngs)
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"UniRepLKNet expects NHWC input, got shape {tuple(x.shape)}")
    x = x.astype(self.dtype)
    for downsample, stage in zip(self.downsample_layers, self.stages):
      x = downsample(x)
      for block in stage:
        x = block(x)
    # Losses and metrics want float32 logits whatever the compute dtype.
    return self.head(self.norm(jnp.mean(x, axis=(1, 2)))).astype(jnp.float32)


@register("unireplknet_tiny")
def unireplknet_tiny(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
                     param_dtype: DTypeLike = jnp.float32, in_channels: int = 3,
                     cifar: bool = False, drop_path_rate: float = 0.0) -> UniRepLKNet:
  """UniRepLKNet-T; drop_path_rate defaults to the authors' model default, 0."""
  return UniRepLKNet(dims=(80, 160, 320, 640), depths=(3, 3, 18, 3), kernel_sizes=TINY_KERNELS,
                     num_classes=num_classes, in_channels=in_channels, cifar=cifar,
                     drop_path_rate=drop_path_rate, dtype=dtype, param_dtype=param_dtype,
                     rngs=rngs)
