"""`mobilenetv2_100`, `efficientnet_b0`: timm's EfficientNet-family networks, in flax.nnx.

Both are timm's `EfficientNet` class with different block specs (timm builds them from strings
like "ir_r2_k3_s2_e6_c24_se0.25"): a strided 3x3 stem conv (`conv_stem`, `bn1`), stages of
depthwise-separable (`ds`) and inverted-residual (`ir`) blocks (`blocks[i][j]`), a 1x1 conv to 1280
features (`conv_head`, `bn2`), global average pool and linear `classifier`.
MobileNetV2 uses ReLU6 and no squeeze-excite; EfficientNet-B0 uses SiLU, squeeze-excite with 1/4 of
the block's input channels, and 5x5 kernels in some stages. Convolutions pad symmetrically like
timm's non-"tf_" models. A block adds its input back when it keeps the shape; stochastic depth on that
branch rises with the block index as in timm (rate * index / num_blocks; `drop_path_rate` default 0
as in timm, 0.2 is timm's training recipe for B0).

`cifar=True`: for 32x32 inputs, the stem conv and the first strided stage use stride 1 (as the CIFAR
MobileNetV2 of kuangliu/pytorch-cifar does), so the last feature map is 4x4 like a CIFAR ResNet's;
parameters are unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import layers
from jaxlab.models.registry import register

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """One of timm's block-string stages, e.g. ir_r2_k3_s2_e6_c24_se0.25."""
  block: str  # "ds" (depthwise separable) or "ir" (inverted residual)
  repeats: int
  kernel: int
  stride: int  # of the stage's first block
  expansion: int
  channels: int
  se_ratio: float = 0.0  # squeeze-excite width as a fraction of the block's input channels


MOBILENETV2_100 = (
    StageSpec("ds", 1, 3, 1, 1, 16), StageSpec("ir", 2, 3, 2, 6, 24),
    StageSpec("ir", 3, 3, 2, 6, 32), StageSpec("ir", 4, 3, 2, 6, 64),
    StageSpec("ir", 3, 3, 1, 6, 96), StageSpec("ir", 3, 3, 2, 6, 160),
    StageSpec("ir", 1, 3, 1, 6, 320))
EFFICIENTNET_B0 = (
    StageSpec("ds", 1, 3, 1, 1, 16, 0.25), StageSpec("ir", 2, 3, 2, 6, 24, 0.25),
    StageSpec("ir", 2, 5, 2, 6, 40, 0.25), StageSpec("ir", 3, 3, 2, 6, 80, 0.25),
    StageSpec("ir", 3, 5, 1, 6, 112, 0.25), StageSpec("ir", 4, 5, 2, 6, 192, 0.25),
    StageSpec("ir", 1, 3, 1, 6, 320, 0.25))

Activation = Callable[[jax.Array], jax.Array]


def _padding(kernel: int, stride: int) -> int:
  """timm's symmetric "same-ish" padding for the PyTorch-style (non-"tf_") models."""
  return ((stride - 1) + (kernel - 1)) // 2


class SqueezeExcite(nnx.Module):
  """Channel gate: mean over space, 1x1 conv down, activation, 1x1 conv up, sigmoid."""

  def __init__(self, channels: int, reduced: int, act: Activation, *, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.act = act
    self.conv_reduce = layers.conv(channels, reduced, 1, padding=0, use_bias=True, **kw)
    self.conv_expand = layers.conv(reduced, channels, 1, padding=0, use_bias=True, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    gate = jnp.mean(x, axis=(1, 2), keepdims=True)
    gate = self.conv_expand(self.act(self.conv_reduce(gate)))
    return x * nnx.sigmoid(gate)


class DepthwiseSeparableConv(nnx.Module):
  """Depthwise kxk conv-BN-act, optional squeeze-excite, pointwise conv-BN; residual if shapes allow."""

  def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
               se_ratio: float, act: Activation, drop_path_rate: float, *, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.act = act
    self.conv_dw = layers.conv(in_channels, in_channels, kernel, strides=stride,
                               padding=_padding(kernel, stride), groups=in_channels, **kw)
    self.bn1 = layers.batch_norm(in_channels, **kw)
    self.se = (SqueezeExcite(in_channels, round(in_channels * se_ratio), act, **kw)
               if se_ratio else None)
    self.conv_pw = layers.conv(in_channels, out_channels, 1, padding=0, **kw)
    self.bn2 = layers.batch_norm(out_channels, **kw)
    self.has_skip = stride == 1 and in_channels == out_channels
    self.drop_path = layers.DropPath(drop_path_rate if self.has_skip else 0.0, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.act(self.bn1(self.conv_dw(x)))
    if self.se is not None:
      y = self.se(y)
    y = self.bn2(self.conv_pw(y))
    return self.drop_path(y) + x if self.has_skip else y


class InvertedResidual(nnx.Module):
  """1x1 expand-BN-act, depthwise kxk-BN-act, optional squeeze-excite, 1x1 project-BN; residual."""

  def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
               expansion: int, se_ratio: float, act: Activation, drop_path_rate: float, *,
               dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    mid = in_channels * expansion
    self.act = act
    self.conv_pw = layers.conv(in_channels, mid, 1, padding=0, **kw)
    self.bn1 = layers.batch_norm(mid, **kw)
    self.conv_dw = layers.conv(mid, mid, kernel, strides=stride, padding=_padding(kernel, stride),
                               groups=mid, **kw)
    self.bn2 = layers.batch_norm(mid, **kw)
    # timm sizes the squeeze from the block's input: ratio / expansion of the expanded channels.
    self.se = (SqueezeExcite(mid, round(mid * (se_ratio / expansion)), act, **kw)
               if se_ratio else None)
    self.conv_pwl = layers.conv(mid, out_channels, 1, padding=0, **kw)
    self.bn3 = layers.batch_norm(out_channels, **kw)
    self.has_skip = stride == 1 and in_channels == out_channels
    self.drop_path = layers.DropPath(drop_path_rate if self.has_skip else 0.0, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.act(self.bn1(self.conv_pw(x)))
    y = self.act(self.bn2(self.conv_dw(y)))
    if self.se is not None:
      y = self.se(y)
    y = self.bn3(self.conv_pwl(y))
    return self.drop_path(y) + x if self.has_skip else y


class EfficientNet(nnx.Module):
  pretrained_classifier = "classifier"

  def __init__(self, stages: Sequence[StageSpec], act: Activation, *, num_classes: int,
               rngs: nnx.Rngs, dtype: DTypeLike, param_dtype: DTypeLike, in_channels: int,
               cifar: bool, drop_path_rate: float):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.act = act
    stem_stride = 1 if cifar else 2
    self.conv_stem = layers.conv(in_channels, STEM_CHANNELS, 3, strides=stem_stride,
                                 padding=_padding(3, stem_stride), **kw)
    self.bn1 = layers.batch_norm(STEM_CHANNELS, **kw)
    num_blocks = sum(stage.repeats for stage in stages)
    first_strided = next(i for i, stage in enumerate(stages) if stage.stride > 1)
    channels, index, blocks = STEM_CHANNELS, 0, []
    for stage_index, stage in enumerate(stages):
      stage_blocks = []
      for repeat in range(stage.repeats):
        stride = stage.stride if repeat == 0 else 1
        if cifar and stage_index == first_strided:
          stride = 1
        rate = drop_path_rate * index / num_blocks
        if stage.block == "ds":
          block = DepthwiseSeparableConv(channels, stage.channels, stage.kernel, stride,
                                         stage.se_ratio, act, rate, **kw)
        else:
          block = InvertedResidual(channels, stage.channels, stage.kernel, stride,
                                   stage.expansion, stage.se_ratio, act, rate, **kw)
        stage_blocks.append(block)
        channels, index = stage.channels, index + 1
      blocks.append(nnx.List(stage_blocks))
    self.blocks = nnx.List(blocks)
    self.conv_head = layers.conv(channels, HEAD_CHANNELS, 1, padding=0, **kw)
    self.bn2 = layers.batch_norm(HEAD_CHANNELS, **kw)
    self.classifier = layers.classifier_head(HEAD_CHANNELS, num_classes, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.act(self.bn1(self.conv_stem(x)))
    for stage in self.blocks:
      for block in stage:
        x = block(x)
    x = self.act(self.bn2(self.conv_head(x)))
    x = jnp.mean(x, axis=(1, 2))
    return self.classifier(x).astype(jnp.float32)


@register("mobilenetv2_100")
def mobilenetv2_100(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
                    param_dtype: DTypeLike = jnp.float32, in_channels: int = 3,
                    cifar: bool = False, drop_path_rate: float = 0.0) -> EfficientNet:
  """MobileNetV2 at width 1.0 (timm's `mobilenetv2_100`): ReLU6, no squeeze-excite."""
  return EfficientNet(MOBILENETV2_100, jax.nn.relu6, num_classes=num_classes, rngs=rngs,
                      dtype=dtype, param_dtype=param_dtype, in_channels=in_channels, cifar=cifar,
                      drop_path_rate=drop_path_rate)


@register("efficientnet_b0")
def efficientnet_b0(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
                    param_dtype: DTypeLike = jnp.float32, in_channels: int = 3,
                    cifar: bool = False, drop_path_rate: float = 0.0) -> EfficientNet:
  """EfficientNet-B0 (timm's `efficientnet_b0`): SiLU, squeeze-excite 0.25."""
  return EfficientNet(EFFICIENTNET_B0, nnx.silu, num_classes=num_classes, rngs=rngs, dtype=dtype,
                      param_dtype=param_dtype, in_channels=in_channels, cifar=cifar,
                      drop_path_rate=drop_path_rate)
