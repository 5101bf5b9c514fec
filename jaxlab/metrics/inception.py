"""pytorch-fid's InceptionV3 (the FID network) in Flax NNX: with its weights, distances are FID.

FID (Heusel et al. 2017) is defined by one network: the TensorFlow Inception graph of 2015-12-05,
whose pool3 features every published FID is computed on. pytorch-fid ports it to PyTorch as
torchvision's Inception3 with four patched block types, and publishes the weights:

  https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

Download that file once (`wget URL`; 95 MB) and pass its path: `inception_fid(weights=PATH)`, or
`python -m jaxlab.metrics.sample_quality --inception=PATH ...`. jaxlab downloads nothing itself.
Reading a .pth file needs torch (`pip install jaxlab[torch]`); the same state dict saved as
.safetensors or .npz needs none, e.g. with torch once:

  python -c "import torch, safetensors.torch as st; st.save_file(torch.load('pt_inception-2015-12-05-6726825d.pth'), 'pt_inception.safetensors')"

The network here is pytorch-fid's `InceptionV3([3])` with `use_fid_inception=True`, NHWC:
  - input: float images in [0, 1], any size, resized to 299x299 bilinearly (half-pixel centres,
    no antialiasing, as torch's `F.interpolate(align_corners=False)`) and scaled to [-1, 1];
  - torchvision's stem and blocks, every conv followed by BatchNorm with eps 1e-3 (running
    statistics only: this network is never trained here) and ReLU;
  - the FID patches: the average pools in Mixed_5b-d, 6b-e and 7b leave the padding out of the
    mean (TensorFlow's behaviour), and Mixed_7c pools its last branch with a max instead;
  - output: the 2048 features of the global average pool (pool3), float32.
Module and parameter names are those of the .pth state dict (`Mixed_6b.branch7x7_2.conv.weight`
is `Mixed_6b.branch7x7_2.conv.kernel`), so jaxlab.convert loads it by name; the 1008-class `fc`
in the file is not part of FID and is skipped. Keys of pytorch-fid's `InceptionV3` wrapper
(`blocks.2.4.branch1x1.conv.weight`) are accepted too.
"""

from __future__ import annotations

import functools
import os
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.convert import state_dict as state_dict_io
from jaxlab.convert import timm as timm_convert
from jaxlab.models import logical_axes

NAME = "inception_v3_fid"  # the extractor name for which `frechet.distance_name` says "FID"
WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               "pt_inception-2015-12-05-6726825d.pth")
INPUT_SIZE = 299
FEATURES = 2048
BATCH_NORM_EPSILON = 1e-3  # torchvision's BasicConv2d (TensorFlow's Inception value)

# pytorch-fid's InceptionV3 wrapper holds the same modules as nn.Sequential blocks: its keys
# `blocks.<block>.<index>.` name these modules of the .pth file (the max pools have no weights).
_WRAPPER_BLOCKS = (("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"),
                   ("Conv2d_3b_1x1", "Conv2d_4a_3x3"),
                   ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                    "Mixed_6e"),
                   ("Mixed_7a", "Mixed_7b", "Mixed_7c"))
_CLASSIFIER_KEYS = ("fc.weight", "fc.bias")  # the 1008 ImageNet logits; FID uses pool3


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


class BasicConv2d(nnx.Module):
  """Conv (no bias) -> BatchNorm (eps 1e-3, running statistics) -> ReLU, as torchvision's."""

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], *,
               strides: int = 1, padding: int | tuple[int, int] = 0, dtype: DTypeLike,
               param_dtype: DTypeLike, precision: jax.lax.PrecisionLike, rngs: nnx.Rngs):
    pad_h, pad_w = _pair(padding)
    self.conv = nnx.Conv(
        in_channels, out_channels, kernel_size=_pair(kernel_size), strides=strides,
        padding=((pad_h, pad_h), (pad_w, pad_w)), use_bias=False, dtype=dtype,
        param_dtype=param_dtype, precision=precision,
        kernel_init=nnx.with_partitioning(nnx.initializers.he_normal(), logical_axes.CONV_KERNEL),
        rngs=rngs)
    self.bn = nnx.BatchNorm(
        out_channels, use_running_average=True, epsilon=BATCH_NORM_EPSILON, dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), (logical_axes.CONV_OUT,)),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (logical_axes.CONV_OUT,)),
        rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  """3x3, stride 1, padding 1, mean over the pixels inside the image only (the FID patch)."""
  return nnx.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x: jax.Array) -> jax.Array:
  return nnx.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_3x3_stride_2(x: jax.Array) -> jax.Array:
  return nnx.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nnx.Module):
  """35x35 block (Mixed_5b-d), pytorch-fid's FIDInceptionA."""

  def __init__(self, in_channels: int, pool_features: int, conv):
    self.branch1x1 = conv(in_channels, 64, 1)
    self.branch5x5_1 = conv(in_channels, 48, 1)
    self.branch5x5_2 = conv(48, 64, 5, padding=2)
    self.branch3x3dbl_1 = conv(in_channels, 64, 1)
    self.branch3x3dbl_2 = conv(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = conv(96, 96, 3, padding=1)
    self.branch_pool = conv(in_channels, pool_features, 1)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.concatenate([
        self.branch1x1(x),
        self.branch5x5_2(self.branch5x5_1(x)),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        self.branch_pool(_avg_pool_3x3(x)),
    ], axis=-1)


class InceptionB(nnx.Module):
  """35x35 -> 17x17 reduction (Mixed_6a), torchvision's InceptionB."""

  def __init__(self, in_channels: int, conv):
    self.branch3x3 = conv(in_channels, 384, 3, strides=2)
    self.branch3x3dbl_1 = conv(in_channels, 64, 1)
    self.branch3x3dbl_2 = conv(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = conv(96, 96, 3, strides=2)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.concatenate([
        self.branch3x3(x),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        _max_pool_3x3_stride_2(x),
    ], axis=-1)


class InceptionC(nnx.Module):
  """17x17 block with factorised 7x7 convolutions (Mixed_6b-e), pytorch-fid's FIDInceptionC."""

  def __init__(self, in_channels: int, channels_7x7: int, conv):
    c7 = channels_7x7
    self.branch1x1 = conv(in_channels, 192, 1)
    self.branch7x7_1 = conv(in_channels, c7, 1)
    self.branch7x7_2 = conv(c7, c7, (1, 7), padding=(0, 3))
    self.branch7x7_3 = conv(c7, 192, (7, 1), padding=(3, 0))
    self.branch7x7dbl_1 = conv(in_channels, c7, 1)
    self.branch7x7dbl_2 = conv(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_3 = conv(c7, c7, (1, 7), padding=(0, 3))
    self.branch7x7dbl_4 = conv(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_5 = conv(c7, 192, (1, 7), padding=(0, 3))
    self.branch_pool = conv(in_channels, 192, 1)

  def __call__(self, x: jax.Array) -> jax.Array:
    double = x
    for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                  self.branch7x7dbl_5):
      double = layer(double)
    return jnp.concatenate([
        self.branch1x1(x),
        self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
        double,
        self.branch_pool(_avg_pool_3x3(x)),
    ], axis=-1)


class InceptionD(nnx.Module):
  """17x17 -> 8x8 reduction (Mixed_7a), torchvision's InceptionD."""

  def __init__(self, in_channels: int, conv):
    self.branch3x3_1 = conv(in_channels, 192, 1)
    self.branch3x3_2 = conv(192, 320, 3, strides=2)
    self.branch7x7x3_1 = conv(in_channels, 192, 1)
    self.branch7x7x3_2 = conv(192, 192, (1, 7), padding=(0, 3))
    self.branch7x7x3_3 = conv(192, 192, (7, 1), padding=(3, 0))
    self.branch7x7x3_4 = conv(192, 192, 3, strides=2)

  def __call__(self, x: jax.Array) -> jax.Array:
    seven = x
    for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
      seven = layer(seven)
    return jnp.concatenate([self.branch3x3_2(self.branch3x3_1(x)), seven, _max_pool_3x3_stride_2(x)],
                           axis=-1)


class InceptionE(nnx.Module):
  """8x8 block with split 1x3/3x1 outputs (Mixed_7b, 7c), pytorch-fid's FIDInceptionE_1/_2.

  `pool` is the last branch's pooling: "avg" (padding left out of the mean) in Mixed_7b, "max"
  in Mixed_7c, where the TensorFlow graph has a max pool (the paper's design has an average).
  """

  def __init__(self, in_channels: int, pool: str, conv):
    if pool not in ("avg", "max"):
      raise ValueError(f"InceptionE pool must be 'avg' or 'max', got '{pool}'")
    self.pool = pool
    self.branch1x1 = conv(in_channels, 320, 1)
    self.branch3x3_1 = conv(in_channels, 384, 1)
    self.branch3x3_2a = conv(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3_2b = conv(384, 384, (3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = conv(in_channels, 448, 1)
    self.branch3x3dbl_2 = conv(448, 384, 3, padding=1)
    self.branch3x3dbl_3a = conv(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = conv(384, 384, (3, 1), padding=(1, 0))
    self.branch_pool = conv(in_channels, 192, 1)

  def __call__(self, x: jax.Array) -> jax.Array:
    single = self.branch3x3_1(x)
    double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    pooled = _avg_pool_3x3(x) if self.pool == "avg" else _max_pool_3x3(x)
    return jnp.concatenate([
        self.branch1x1(x),
        self.branch3x3_2a(single), self.branch3x3_2b(single),
        self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
        self.branch_pool(pooled),
    ], axis=-1)


def resize_bilinear(images: jax.Array, size: tuple[int, int]) -> jax.Array:
  """NHWC bilinear resize as torch's F.interpolate(mode='bilinear', align_corners=False).

  Half-pixel centres, edge pixels repeated, and no antialiasing when shrinking (torch's default).
  """
  n, _, _, c = images.shape
  return jax.image.resize(images, (n, *size, c), method="bilinear", antialias=False)


class InceptionV3(nnx.Module):
  """pytorch-fid's FID InceptionV3 up to pool3: float [N, H, W, 3] in [0, 1] -> float32 [N, 2048].

  Random weights until loaded: use `inception_fid(weights=PATH)` for the FID network.
  """

  def __init__(self, *, dtype: DTypeLike = jnp.float32, param_dtype: DTypeLike = jnp.float32,
               precision: jax.lax.PrecisionLike = jax.lax.Precision.HIGHEST, rngs: nnx.Rngs):
    # HIGHEST: FID is compared across papers and hardware; TPUs/GPUs would otherwise run these
    # float32 convolutions in bfloat16/TF32 passes and shift the features.
    conv = functools.partial(BasicConv2d, dtype=dtype, param_dtype=param_dtype, precision=precision,
                             rngs=rngs)
    self.dtype = dtype
    self.Conv2d_1a_3x3 = conv(3, 32, 3, strides=2)
    self.Conv2d_2a_3x3 = conv(32, 32, 3)
    self.Conv2d_2b_3x3 = conv(32, 64, 3, padding=1)
    self.Conv2d_3b_1x1 = conv(64, 80, 1)
    self.Conv2d_4a_3x3 = conv(80, 192, 3)
    self.Mixed_5b = InceptionA(192, 32, conv)
    self.Mixed_5c = InceptionA(256, 64, conv)
    self.Mixed_5d = InceptionA(288, 64, conv)
    self.Mixed_6a = InceptionB(288, conv)
    self.Mixed_6b = InceptionC(768, 128, conv)
    self.Mixed_6c = InceptionC(768, 160, conv)
    self.Mixed_6d = InceptionC(768, 160, conv)
    self.Mixed_6e = InceptionC(768, 192, conv)
    self.Mixed_7a = InceptionD(768, conv)
    self.Mixed_7b = InceptionE(1280, "avg", conv)
    self.Mixed_7c = InceptionE(2048, "max", conv)

  def __call__(self, images: jax.Array) -> jax.Array:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"InceptionV3 takes RGB images [N, H, W, 3] with values in [0, 1], got shape "
                       f"{images.shape}")
    x = resize_bilinear(images.astype(jnp.float32), (INPUT_SIZE, INPUT_SIZE))
    x = (2.0 * x - 1.0).astype(self.dtype)
    for layer in (self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3):
      x = layer(x)
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(_max_pool_3x3_stride_2(x)))
    x = _max_pool_3x3_stride_2(x)
    for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                  self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                  self.Mixed_7c):
      x = block(x)
    return x.astype(jnp.float32).mean(axis=(1, 2))


@timm_convert.hook(NAME)
def _from_pytorch_fid(state_dict, model):
  """Skips the 1008-class classifier and names the wrapper's `blocks.i.j.` keys as in the .pth."""
  del model
  renamed = {}
  for key, value in state_dict.items():
    if key in _CLASSIFIER_KEYS:
      continue
    parts = key.split(".")
    if (len(parts) > 3 and parts[0] == "blocks" and parts[1].isdigit() and parts[2].isdigit()
        and int(parts[1]) < len(_WRAPPER_BLOCKS) and int(parts[2]) < len(_WRAPPER_BLOCKS[int(parts[1])])):
      key = ".".join([_WRAPPER_BLOCKS[int(parts[1])][int(parts[2])]] + parts[3:])
    renamed[key] = value
  return renamed


def _read_state_dict(path: str | os.PathLike) -> dict:
  """`{key: array}` from .npz (numpy's own format, no torch either) or what jaxlab.convert reads."""
  if os.fspath(path).lower().endswith(".npz"):
    # allow_pickle=False: object arrays would run code on load; weights are plain arrays.
    with np.load(path, allow_pickle=False) as arrays:
      return {key: arrays[key] for key in arrays.files}
  return state_dict_io.load_state_dict(path)


# What reading a damaged or foreign file raises, by format (pickle/zip: .pth and .npz).
_READ_ERRORS = (OSError, ValueError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError,
                zipfile.BadZipFile)


def inception_fid(weights: str | os.PathLike, *, dtype: DTypeLike = jnp.float32,
                  param_dtype: DTypeLike = jnp.float32,
                  precision: jax.lax.PrecisionLike = jax.lax.Precision.HIGHEST) -> InceptionV3:
  """The FID InceptionV3 with pytorch-fid's weights from `weights` (.pth, .safetensors or .npz).

  Raises one ValueError line for a file that cannot be read or is not this network's state
  dict (naming the keys that match nothing, the parameters left without a value and the shapes
  that differ). Get the file from `WEIGHTS_URL` (see the module docstring).
  """
  from safetensors import SafetensorError  # pylint: disable=import-outside-toplevel
  source = os.fspath(weights)
  try:
    state_dict = _read_state_dict(weights)
  except (*_READ_ERRORS, SafetensorError) as e:
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ValueError(f"cannot read InceptionV3 weights {source}: {message} (pytorch-fid's file: "
                     f"{WEIGHTS_URL})") from None
  # Abstract parameters: the loader gives every one its value (or fails), so no random init runs
  # (initialising 22M parameters eagerly takes a minute on a CPU). Unsharded, as jaxlab.models.create.
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: InceptionV3(dtype=dtype, param_dtype=param_dtype,
                                               precision=precision, rngs=nnx.Rngs(0)))
  return timm_convert.load_timm_state_dict(model, state_dict, name=NAME, source=source)
