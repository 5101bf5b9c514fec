"""`convnext_tiny`, `convnextv2_tiny`: timm's ConvNeXt (Liu et al. 2022) and ConvNeXt V2 (Woo et
al. 2023), in flax.nnx.

A 4x4 stride-4 patchify stem conv with LayerNorm (`stem.0`, `stem.1`); four stages (`stages[i]`)
of 3/3/9/3 blocks at widths 96/192/384/768, stages 1-3 opening with a LayerNorm + 2x2 stride-2 conv
(`downsample.0`, `downsample.1`); each block: 7x7 depthwise conv (`conv_dw`), LayerNorm (`norm`),
MLP 4x with exact GELU (`mlp.fc1`, `mlp.fc2`), and a residual sum with stochastic depth. V1 scales
the branch by a per-channel layer scale (`gamma`, initialised to 1e-6); V2 has no layer scale but a
Global Response Normalization (`mlp.grn`) after the GELU. Head: global average pool, LayerNorm
(`head.norm`), `head.fc`. LayerNorm epsilon 1e-6, weights truncated-normal(0.02) as in timm.
`drop_path_rate` rises linearly over the blocks (default 0 like timm; the papers use 0.1 for Tiny
on ImageNet, and V2's fine-tuning 0.2).

`cifar=True`: the stem becomes a 3x3 stride-1 conv (+ LayerNorm), as in the ConvNeXt_CIFAR of
OpenMixup that the study's CIFAR-100 benchmarks use; stages then run at 32/16/8/4 pixels on 32x32
inputs. Everything else, including parameter names, is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import layers, logical_axes
from jaxlab.models.registry import register

LN_EPSILON = 1e-6
INIT = nnx.initializers.truncated_normal(stddev=0.02)
MLP_RATIO = 4
LAYER_SCALE_INIT = 1e-6


def _layer_norm(dim: int, kw: dict) -> nnx.LayerNorm:
  # Two-pass variance like PyTorch's LayerNorm (flax's fast variance is E[x^2] - E[x]^2).
  return nnx.LayerNorm(
      dim, epsilon=LN_EPSILON, use_fast_variance=False, **kw,
      scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), (logical_axes.EMBED,)),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (logical_axes.EMBED,)))


def _dense(in_features: int, out_features: int, kernel_axes: tuple[str, str], kw: dict
           ) -> nnx.Linear:
  return nnx.Linear(
      in_features, out_features, **kw,
      kernel_init=nnx.with_partitioning(INIT, kernel_axes),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (kernel_axes[1],)))


class GlobalResponseNorm(nnx.Module):
  """ConvNeXt V2's GRN over NHWC: x + bias + weight * x * (|x|_spatial / mean_channels |x|)."""

  def __init__(self, dim: int, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    del dtype, rngs  # computes in the input's dtype; zero-initialised, as in the paper
    zeros = nnx.with_partitioning(nnx.initializers.zeros_init(), (logical_axes.MLP,))
    self.weight = nnx.Param(zeros(jax.random.key(0), (dim,), param_dtype))
    self.bias = nnx.Param(zeros(jax.random.key(0), (dim,), param_dtype))
    self.epsilon = 1e-6

  def __call__(self, x: jax.Array) -> jax.Array:
    # The L2 norm in float32: squares of bfloat16 activations lose too much.
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=(1, 2), keepdims=True))
    scale = (norm / (jnp.mean(norm, axis=-1, keepdims=True) + self.epsilon)).astype(x.dtype)
    weight, bias = self.weight[...].astype(x.dtype), self.bias[...].astype(x.dtype)
    return x + bias + weight * (x * scale)


class Mlp(nnx.Module):
  """fc1 -> exact GELU -> [GRN] -> fc2."""

  def __init__(self, dim: int, hidden: int, use_grn: bool, kw: dict):
    self.fc1 = _dense(dim, hidden, logical_axes.HIDDEN_DENSE_KERNEL, kw)
    self.grn = GlobalResponseNorm(hidden, **kw) if use_grn else None
    self.fc2 = _dense(hidden, dim, (logical_axes.MLP, logical_axes.EMBED), kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jax.nn.gelu(self.fc1(x), approximate=False)  # PyTorch's nn.GELU is the erf form
    if self.grn is not None:
      x = self.grn(x)
    return self.fc2(x)


class ConvNeXtBlock(nnx.Module):
  """x + drop_path(gamma * mlp(norm(dwconv7x7(x))))."""

  def __init__(self, dim: int, drop_path_rate: float, *, use_grn: bool, layer_scale: bool,
               dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.conv_dw = layers.conv(dim, dim, 7, padding=3, groups=dim, use_bias=True,
                               kernel_init=INIT, **kw)
    self.norm = _layer_norm(dim, kw)
    self.mlp = Mlp(dim, MLP_RATIO * dim, use_grn, kw)
    if layer_scale:
      init = nnx.with_partitioning(nnx.initializers.constant(LAYER_SCALE_INIT),
                                   (logical_axes.EMBED,))
      self.gamma = nnx.Param(init(jax.random.key(0), (dim,), param_dtype))
    else:
      self.gamma = None
    self.drop_path = layers.DropPath(drop_path_rate, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.mlp(self.norm(self.conv_dw(x)))
    if self.gamma is not None:
      y = y * self.gamma[...].astype(y.dtype)
    return x + self.drop_path(y)


class ConvNeXtStage(nnx.Module):
  """[LayerNorm + 2x2 stride-2 conv] then blocks."""

  def __init__(self, in_dim: int, dim: int, depth: int, rates: Sequence[float], *,
               use_grn: bool, layer_scale: bool, dtype: DTypeLike, param_dtype: DTypeLike,
               rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    if in_dim != dim:
      self.downsample = nnx.Sequential(
          _layer_norm(in_dim, kw),
          layers.conv(in_dim, dim, 2, strides=2, padding=0, use_bias=True, kernel_init=INIT, **kw))
    else:
      self.downsample = None
    self.blocks = nnx.List([ConvNeXtBlock(dim, rate, use_grn=use_grn, layer_scale=layer_scale, **kw)
                            for rate in rates[:depth]])

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.downsample is not None:
      x = self.downsample(x)
    for block in self.blocks:
      x = block(x)
    return x


class NormHead(nnx.Module):
  """timm's NormMlpClassifierHead without hidden layer: pool, LayerNorm, fc."""

  def __init__(self, dim: int, num_classes: int, kw: dict):
    self.norm = _layer_norm(dim, kw)
    self.fc = layers.classifier_head(dim, num_classes, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.norm(jnp.mean(x, axis=(1, 2)))
    return self.fc(x).astype(jnp.float32)


class ConvNeXt(nnx.Module):
  pretrained_classifier = "head.fc"

  def __init__(self, depths: Sequence[int], dims: Sequence[int], *, use_grn: bool,
               layer_scale: bool, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike,
               param_dtype: DTypeLike, in_channels: int, cifar: bool, drop_path_rate: float):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    if cifar:
      stem_conv = layers.conv(in_channels, dims[0], 3, padding=1, use_bias=True,
                              kernel_init=INIT, **kw)
    else:
      stem_conv = layers.conv(in_channels, dims[0], 4, strides=4, padding=0, use_bias=True,
                              kernel_init=INIT, **kw)
    self.stem = nnx.Sequential(stem_conv, _layer_norm(dims[0], kw))
    rates = np.linspace(0.0, drop_path_rate, sum(depths)).tolist()
    stages, in_dim, start = [], dims[0], 0
    for depth, dim in zip(depths, dims):
      stages.append(ConvNeXtStage(in_dim, dim, depth, rates[start:start + depth], use_grn=use_grn,
                                  layer_scale=layer_scale, **kw))
      in_dim, start = dim, start + depth
    self.stages = nnx.List(stages)
    self.head = NormHead(dims[-1], num_classes, kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.stem(x)
    for stage in self.stages:
      x = stage(x)
    return self.head(x)


def _convnext(name: str, *, use_grn: bool, layer_scale: bool, doc: str):
  def factory(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
              param_dtype: DTypeLike = jnp.float32, in_channels: int = 3, cifar: bool = False,
              drop_path_rate: float = 0.0) -> ConvNeXt:
    return ConvNeXt((3, 3, 9, 3), (96, 192, 384, 768), use_grn=use_grn, layer_scale=layer_scale,
                    num_classes=num_classes, rngs=rngs, dtype=dtype, param_dtype=param_dtype,
                    in_channels=in_channels, cifar=cifar, drop_path_rate=drop_path_rate)
  factory.__name__ = factory.__qualname__ = name
  factory.__doc__ = doc
  return register(name)(factory)


convnext_tiny = _convnext("convnext_tiny", use_grn=False, layer_scale=True,
                          doc="ConvNeXt-T: layer scale 1e-6, no GRN.")
convnextv2_tiny = _convnext("convnextv2_tiny", use_grn=True, layer_scale=False,
                            doc="ConvNeXt V2-T: GRN in the MLP, no layer scale.")
