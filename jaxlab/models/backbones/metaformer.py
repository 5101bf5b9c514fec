"""MetaFormer baselines (Yu et al., arXiv 2210.13452): IdentityFormer, PoolFormerV2, ConvFormer,
CAFormer, and the coupling-bias study's AttentionFormer, all as timm's `metaformer.py` builds them.

One four-stage network: a 7x7 stride-4 convolution stem with a bias-free norm, stages 1-3 opened by
a norm + 3x3 stride-2 convolution, blocks of
  x = res_scale1 * x + drop_path(token_mixer(norm1(x)))
  x = res_scale2 * x + drop_path(mlp(norm2(x)))      (StarReLU MLP, ratio 4, no biases)
with res-scale (a learned per-channel scale, initialized to 1) in the last two stages only, then a
global average pool, a LayerNorm (with bias) and the head. Norms are bias-free with eps 1e-6.
The variants differ only in token mixer, norm and head:

| model               | token mixer per stage                    | block norm          | head     |
| ------------------- | ---------------------------------------- | ------------------- | -------- |
| identityformer_s12  | identity                                 | GroupNorm(1 group)  | linear   |
| poolformerv2_s12    | 3x3 average pool minus input             | GroupNorm(1 group)  | linear   |
| convformer_s12/s18  | SepConv (1x1, StarReLU, 7x7 dw, 1x1)     | LayerNorm           | MLP head |
| caformer_s12/s18    | SepConv, SepConv, attention, attention   | LayerNorm           | MLP head |
| attentionformer_s12 | attention in all four stages             | LayerNorm           | MLP head |

S12 is depths (2, 2, 6, 2), S18 is (3, 3, 9, 3); widths (64, 128, 320, 512); attention has head_dim
32 and no qkv/proj biases; the MLP head is fc1 (4x) -> squared ReLU -> LayerNorm -> fc2.

References for the parameter counts (1000 classes; the tests check them):
- timm 1.0 has poolformerv2_s12 (11,891,712), convformer_s18 (26,774,448) and caformer_s18
  (26,341,656).
- identityformer_s12: sail-sg/metaformer `metaformer_baselines.py` (the authors' code; its
  identityformer_s12 is poolformerv2_s12 without pooling: 11,891,712, "11.9M" in the paper).
- convformer_s12 (19,527,192), caformer_s12 (19,238,664) and attentionformer_s12 (19,201,024)
  are the S12 layout of the authors' ConvFormer/CAFormer definitions; AttentionFormer-S12 is the
  MetaFormer S12 with vanilla attention as the token mixer of every stage (the study's "AF-12",
  Li et al., arXiv 2410.06373, Table 1, built on the MetaFormer baselines of arXiv 2210.13452);
  it uses the norms and head of CAFormer's attention stages. The counts are those of timm's
  `MetaFormer` class built with these arguments (tests/timm_reference/make_fixtures_vit.py).

Attribute names follow timm (`stem.conv/norm`, `stages[i].downsample.norm/conv`,
`stages[i].blocks[j].token_mixer.qkv`, `...mlp.fc1`, `...res_scale1.scale`, `head.norm`, `head.fc`),
so timm state dicts load by name; timm's 1x1 convolutions (NCHW stages) are dense layers here.

Inputs may have any size that survives the downsampling (MetaFormers have no position parameters).

CIFAR form (`cifar=True`): the stem becomes a 3x3 stride-2 convolution (padding 1), so a 32x32 image
gives stages at 16x16, 8x8, 4x4 and 2x2 instead of 8, 4, 2 and 1 — the stride-reduced stem CIFAR
variants of hierarchical networks use; everything else is unchanged.
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

NORM_EPSILON = 1e-6
MIXERS = ("identity", "pooling", "sepconv", "attention")
NORMS = ("group", "layer")


class StarReLU(nnx.Module):
  """s * relu(x)^2 + b with learned scalars s (init 1) and b (init 0)."""

  def __init__(self, *, param_dtype: DTypeLike):
    key = jax.random.key(0)  # constant initializers: the key is unused
    self.scale = nnx.Param(nnx.with_partitioning(nnx.initializers.ones_init(), (None,))(
        key, (1,), param_dtype))
    self.bias = nnx.Param(nnx.with_partitioning(nnx.initializers.zeros_init(), (None,))(
        key, (1,), param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    return (self.scale[...].astype(x.dtype) * jnp.square(nnx.relu(x))
            + self.bias[...].astype(x.dtype))


def squared_relu(x: jax.Array) -> jax.Array:
  return jnp.square(nnx.relu(x))


class Scale(nnx.Module):
  """Learned per-channel scale (timm's `Scale`; here for res-scale), initialized to `init_value`."""

  def __init__(self, dim: int, init_value: float, *, param_dtype: DTypeLike):
    self.scale = nnx.Param(nnx.with_partitioning(
        nnx.initializers.constant(init_value), (axes.EMBED,))(jax.random.key(0), (dim,),
                                                               param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    return x * self.scale[...].astype(x.dtype)


def norm(kind: str, dim: int, *, dtype: DTypeLike, param_dtype: DTypeLike,
         rngs: nnx.Rngs) -> nnx.Module:
  """Bias-free norm with eps 1e-6: "layer" over channels, or "group" (one group) over H, W and C."""
  if kind == "layer":
    return tl.layer_norm(dim, epsilon=NORM_EPSILON, use_bias=False, dtype=dtype,
                         param_dtype=param_dtype, rngs=rngs)
  return nnx.GroupNorm(
      dim, num_groups=1, epsilon=NORM_EPSILON, use_bias=False, use_fast_variance=False,
      dtype=dtype, param_dtype=param_dtype,
      scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), (axes.EMBED,)), rngs=rngs)


class Pooling(nnx.Module):
  """PoolFormer's mixer: 3x3 average pool (padding not counted) minus the input."""

  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = nnx.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                          count_include_pad=False)
    return pooled - x


class SepConv(nnx.Module):
  """Inverted separable convolution: 1x1 (2x) -> StarReLU -> 7x7 depthwise -> 1x1, no biases."""

  def __init__(self, dim: int, *, expansion: int = 2, kernel_size: int = 7, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    hidden = expansion * dim
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.pwconv1 = tl.dense(dim, hidden, axes.HIDDEN_DENSE_KERNEL, use_bias=False, **kw)
    self.act1 = StarReLU(param_dtype=param_dtype)
    # Depthwise: its channels are pwconv1's outputs, so it shares their logical axis.
    self.dwconv = nnx.Conv(
        hidden, hidden, kernel_size=(kernel_size, kernel_size), padding=kernel_size // 2,
        feature_group_count=hidden, use_bias=False, dtype=dtype, param_dtype=param_dtype,
        kernel_init=nnx.with_partitioning(nnx.initializers.truncated_normal(0.02),
                                          (None, None, None, axes.MLP)),
        rngs=rngs)
    self.pwconv2 = tl.dense(hidden, dim, (axes.MLP, axes.EMBED), use_bias=False, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.pwconv2(self.dwconv(self.act1(self.pwconv1(x))))


class Attention(tl.SelfAttention):
  """Vanilla self-attention over all H*W tokens of a stage, head_dim 32, no biases."""

  HEAD_DIM = 32

  def __init__(self, dim: int, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    super().__init__(dim, max(dim // self.HEAD_DIM, 1), head_dim=self.HEAD_DIM, qkv_bias=False,
                     proj_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    return super().__call__(x.reshape(b, h * w, c)).reshape(b, h, w, c)


def token_mixer(kind: str, dim: int, **kw) -> nnx.Module | None:
  if kind == "identity":
    return None
  if kind == "pooling":
    return Pooling()
  if kind == "sepconv":
    return SepConv(dim, **kw)
  return Attention(dim, **kw)


class MetaFormerBlock(nnx.Module):

  def __init__(self, dim: int, mixer: str, norm_kind: str, *, drop_path: float,
               res_scale: bool, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = norm(norm_kind, dim, **kw)
    self.token_mixer = token_mixer(mixer, dim, **kw)
    self.drop_path1 = layers.DropPath(drop_path, rngs=rngs)
    self.res_scale1 = Scale(dim, 1.0, param_dtype=param_dtype) if res_scale else None
    self.norm2 = norm(norm_kind, dim, **kw)
    self.mlp = tl.Mlp(dim, 4 * dim, act=StarReLU(param_dtype=param_dtype), use_bias=False, **kw)
    self.drop_path2 = layers.DropPath(drop_path, rngs=rngs)
    self.res_scale2 = Scale(dim, 1.0, param_dtype=param_dtype) if res_scale else None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.norm1(x)
    if self.token_mixer is not None:
      y = self.token_mixer(y)
    x = (x if self.res_scale1 is None else self.res_scale1(x)) + self.drop_path1(y)
    y = self.mlp(self.norm2(x))
    return (x if self.res_scale2 is None else self.res_scale2(x)) + self.drop_path2(y)


class Stem(nnx.Module):
  def __init__(self, in_channels: int, dim: int, *, cifar: bool, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    kernel, stride, pad = (3, 2, 1) if cifar else (7, 4, 2)
    self.conv = tl.patch_conv(in_channels, dim, kernel, strides=stride, padding=pad, **kw)
    self.norm = norm("layer", dim, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.norm(self.conv(x))


class Downsampling(nnx.Module):
  def __init__(self, in_dim: int, out_dim: int, *, dtype: DTypeLike, param_dtype: DTypeLike,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm = norm("layer", in_dim, **kw)
    self.conv = tl.patch_conv(in_dim, out_dim, 3, strides=2, padding=1, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(self.norm(x))


class MetaFormerStage(nnx.Module):
  def __init__(self, in_dim: int, out_dim: int, mixer: str, norm_kind: str, *,
               drop_paths: Sequence[float], res_scale: bool, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.downsample = Downsampling(in_dim, out_dim, **kw) if in_dim != out_dim else None
    self.blocks = nnx.List([
        MetaFormerBlock(out_dim, mixer, norm_kind, drop_path=r, res_scale=res_scale, **kw)
        for r in drop_paths])

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.downsample is not None:
      x = self.downsample(x)
    for block in self.blocks:
      x = block(x)
    return x


class MlpHead(nnx.Module):
  """fc1 (4x) -> squared ReLU -> LayerNorm -> fc2: the classifier of ConvFormer and CAFormer."""

  def __init__(self, dim: int, num_classes: int, *, dtype: DTypeLike, param_dtype: DTypeLike,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.fc1 = tl.dense(dim, 4 * dim, axes.HIDDEN_DENSE_KERNEL, **kw)
    self.norm = nnx.LayerNorm(
        4 * dim, epsilon=NORM_EPSILON, use_fast_variance=False, dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), (axes.MLP,)),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axes.MLP,)), rngs=rngs)
    self.fc2 = layers.classifier_head(4 * dim, num_classes, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(self.norm(squared_relu(self.fc1(x))))


class Head(nnx.Module):
  """Global average pool -> LayerNorm (with bias) -> `fc` (a linear layer or an MlpHead)."""

  def __init__(self, dim: int, num_classes: int, *, mlp_head: bool, dtype: DTypeLike,
               param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm = tl.layer_norm(dim, epsilon=NORM_EPSILON, **kw)
    self.fc = (MlpHead(dim, num_classes, **kw) if mlp_head
               else layers.classifier_head(dim, num_classes, **kw))

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc(self.norm(jnp.mean(x, axis=(1, 2))))


class MetaFormer(nnx.Module):

  def __init__(self, *, depths: Sequence[int], dims: Sequence[int], mixers: Sequence[str],
               norms: Sequence[str], mlp_head: bool, num_classes: int, in_channels: int,
               cifar: bool, drop_path_rate: float, dtype: DTypeLike, param_dtype: DTypeLike,
               rngs: nnx.Rngs):
    for kind, valid, what in ((mixers, MIXERS, "token mixer"), (norms, NORMS, "norm")):
      bad = [k for k in kind if k not in valid]
      if bad:
        raise ValueError(f"unknown {what} {bad[0]!r}; valid: {', '.join(valid)}")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.stem = Stem(in_channels, dims[0], cifar=cifar, **kw)
    rates = tl.drop_path_rates(drop_path_rate, depths)
    stages, prev = [], dims[0]
    for i in range(len(depths)):
      # Res-scale in the last two stages only (timm's res_scale_init_values=(None, None, 1, 1)).
      stages.append(MetaFormerStage(prev, dims[i], mixers[i], norms[i], drop_paths=rates[i],
                                    res_scale=i >= 2, **kw))
      prev = dims[i]
    self.stages = nnx.List(stages)
    self.head = Head(dims[-1], num_classes, mlp_head=mlp_head, **kw)
    # The layer whose size is num_classes (timm's pretrained_cfg["classifier"]), for weight import.
    self.pretrained_classifier = "head.fc.fc2" if mlp_head else "head.fc"
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"MetaFormer expects NHWC input, got shape {tuple(x.shape)}")
    x = self.stem(x.astype(self.dtype))
    for stage in self.stages:
      x = stage(x)
    # Losses and metrics want float32 logits whatever the compute dtype.
    return self.head(x).astype(jnp.float32)


S12 = (2, 2, 6, 2)
S18 = (3, 3, 9, 3)
WIDTHS = (64, 128, 320, 512)

# name -> (depths, token mixer per stage, norm per stage, MLP head)
VARIANTS = {
    "identityformer_s12": (S12, ("identity",) * 4, ("group",) * 4, False),
    "poolformerv2_s12": (S12, ("pooling",) * 4, ("group",) * 4, False),
    "convformer_s12": (S12, ("sepconv",) * 4, ("layer",) * 4, True),
    "convformer_s18": (S18, ("sepconv",) * 4, ("layer",) * 4, True),
    "caformer_s12": (S12, ("sepconv",) * 2 + ("attention",) * 2, ("layer",) * 4, True),
    "caformer_s18": (S18, ("sepconv",) * 2 + ("attention",) * 2, ("layer",) * 4, True),
    "attentionformer_s12": (S12, ("attention",) * 4, ("layer",) * 4, True),
}


def _register(name: str) -> None:
  depths, mixers, norms, mlp_head = VARIANTS[name]

  def factory(*, num_classes: int, rngs: nnx.Rngs, dtype: DTypeLike = jnp.float32,
              param_dtype: DTypeLike = jnp.float32, in_channels: int = 3, cifar: bool = False,
              drop_path_rate: float = 0.0) -> MetaFormer:
    """drop_path_rate: timm's default 0 (the MetaFormer paper trains S12/S18 with 0.1-0.2)."""
    return MetaFormer(depths=depths, dims=WIDTHS, mixers=mixers, norms=norms, mlp_head=mlp_head,
                      num_classes=num_classes, in_channels=in_channels, cifar=cifar,
                      drop_path_rate=drop_path_rate, dtype=dtype, param_dtype=param_dtype,
                      rngs=rngs)
  factory.__name__ = name
  register(name)(factory)


for _name in VARIANTS:
  _register(_name)
