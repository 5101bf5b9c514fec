"""RandAugment in TensorFlow, per example and stateless, with timm's `rand-m9-mstd0.5-inc1` semantics.

`parse(spec)` reads a timm config string ('rand-m9-n2-mstd0.5-inc1-mmax10'); `randaugment(image,
seed, policy)` applies it to one float32 HxWx3 image on the 0..1 scale. As timm's RandAugment
(timm/data/auto_augment.py): `num_layers` ops drawn uniformly with replacement from the 15 ops
of `_RAND_INCREASING_TRANSFORMS` (inc1; or `_RAND_TRANSFORMS` with inc0), each applied with
probability 0.5 at a magnitude drawn from N(m, mstd) and clipped to [0, mmax], out of 10:

  AutoContrast, Equalize, Invert                   no magnitude
  Rotate                                           +-30 deg * m/10
  ShearX/Y                                         +-0.3 * m/10
  TranslateXRel/YRel                               +-0.45 * m/10 of the side
  Posterize(Increasing)                            keep 4 - int(4 m/10) bits   (inc0: int(4 m/10))
  Solarize(Increasing)                             invert pixels >= 256 - int(256 m/10) (inc0: >= int(256 m/10))
  SolarizeAdd                                      + int(110 m/10) to pixels < 128
  Color/Contrast/Brightness/Sharpness(Increasing)  enhance by 1 +- 0.9 m/10   (inc0: 0.1 + 1.8 m/10)

Ops compute on the 0..255 scale and round to integers after each op, as PIL's uint8 images do;
geometric ops fill with the dataset mean (timm's img_mean) and interpolate bilinearly (timm picks
bilinear or bicubic at random). Randomness comes only from `seed`: the same seed, the same image.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Sequence

import tensorflow as tf

MAX_LEVEL = 10.0  # timm's _LEVEL_DENOM
OP_PROB = 0.5  # timm's rand_augment_ops(prob=0.5)
INCREASING_OPS = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'PosterizeIncreasing',
                  'SolarizeIncreasing', 'SolarizeAdd', 'ColorIncreasing', 'ContrastIncreasing',
                  'BrightnessIncreasing', 'SharpnessIncreasing', 'ShearX', 'ShearY',
                  'TranslateXRel', 'TranslateYRel')
ORIGINAL_OPS = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize',
                'SolarizeAdd', 'Color', 'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY',
                'TranslateXRel', 'TranslateYRel')


@dataclasses.dataclass(frozen=True)
class Policy:
  magnitude: float = 9.0
  num_layers: int = 2
  magnitude_std: float = 0.5
  magnitude_max: float = MAX_LEVEL
  increasing: bool = True

  @property
  def ops(self) -> tuple[str, ...]:
    return INCREASING_OPS if self.increasing else ORIGINAL_OPS


def parse(spec: str) -> Policy:
  """timm's 'rand-m9-n2-mstd0.5-mmax10-inc1' (any order after 'rand'); one-line ValueError."""
  parts = spec.split('-')
  if parts[0] != 'rand':
    raise ValueError(f"randaugment spec {spec!r} must start with 'rand', e.g. 'rand-m9-mstd0.5-inc1'")
  fields = {}
  for part in parts[1:]:
    match = re.fullmatch(r'(mstd|mmax|inc|m|n)([0-9.]+)', part)
    if not match:
      raise ValueError(f"randaugment spec {spec!r}: unknown part {part!r}; valid: m<magnitude>, "
                       'n<num ops>, mstd<std>, mmax<max>, inc<0|1>')
    key, value = match.groups()
    fields[key] = float(value)
  policy = Policy(magnitude=fields.get('m', 9.0), num_layers=int(fields.get('n', 2)),
                  magnitude_std=fields.get('mstd', 0.5), magnitude_max=fields.get('mmax', MAX_LEVEL),
                  increasing=bool(fields.get('inc', 1)))
  if policy.num_layers < 1 or not 0 <= policy.magnitude <= policy.magnitude_max:
    raise ValueError(f'randaugment spec {spec!r}: needs n >= 1 and 0 <= m <= mmax')
  return policy


# ---- Ops on float32 images with integer values in 0..255 ---------------------------------------

def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL's ImageEnhance: degenerate + factor * (image - degenerate), clipped to 0..255, rounded."""
  return tf.round(tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0))


def _grey(image: tf.Tensor) -> tf.Tensor:
  """PIL's convert('L'): 0.299 R + 0.587 G + 0.114 B, rounded."""
  return tf.round(tf.reduce_sum(image * tf.constant([0.299, 0.587, 0.114]), -1, keepdims=True))


def auto_contrast(image: tf.Tensor) -> tf.Tensor:
  """Stretches each channel's [min, max] to [0, 255] (unchanged where min == max)."""
  low = tf.reduce_min(image, axis=(0, 1), keepdims=True)
  high = tf.reduce_max(image, axis=(0, 1), keepdims=True)
  scale = tf.where(high > low, 255.0 / tf.maximum(high - low, 1.0), 1.0)
  offset = tf.where(high > low, low, 0.0)
  return tf.round(tf.clip_by_value((image - offset) * scale, 0.0, 255.0))


def _equalize_channel(channel: tf.Tensor) -> tf.Tensor:
  """PIL's ImageOps.equalize for one channel of integer values."""
  values = tf.cast(channel, tf.int32)
  histogram = tf.math.bincount(tf.reshape(values, [-1]), minlength=256, maxlength=256)
  nonzero = tf.boolean_mask(histogram, histogram > 0)
  step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
  lut = (tf.cumsum(histogram) + step // 2) // tf.maximum(step, 1)
  lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
  return tf.where(step > 0, tf.cast(tf.gather(lut, values), tf.float32), channel)


def equalize(image: tf.Tensor) -> tf.Tensor:
  return tf.stack([_equalize_channel(image[..., c]) for c in range(image.shape[-1])], -1)


def invert(image: tf.Tensor) -> tf.Tensor:
  return 255.0 - image


def posterize(image: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
  """Keeps the `bits` high bits of each value (bits >= 8: unchanged)."""
  shift = tf.cast(tf.clip_by_value(8 - bits, 0, 8), tf.uint8)
  values = tf.cast(image, tf.uint8)
  return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(values, shift), shift), tf.float32)


def solarize(image: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
  return tf.where(image >= threshold, 255.0 - image, image)


def solarize_add(image: tf.Tensor, addition: tf.Tensor, threshold: float = 128.0) -> tf.Tensor:
  return tf.where(image < threshold, tf.minimum(image + addition, 255.0), image)


def color(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  return _blend(tf.broadcast_to(_grey(image), tf.shape(image)), image, factor)


def contrast(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  mean = tf.floor(tf.reduce_mean(_grey(image)) + 0.5)  # PIL: int(mean of the grey image + 0.5)
  return _blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  return _blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """Blend with PIL's SMOOTH filter (1 1 1 / 1 5 1 / 1 1 1) / 13; the border keeps its pixels."""
  kernel = tf.constant([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13.0
  channels = image.shape[-1]
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
  smooth = tf.round(tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], 'VALID')[0])
  degenerate = tf.pad(smooth - image[1:-1, 1:-1], [[1, 1], [1, 1], [0, 0]]) + image
  return _blend(degenerate, image, factor)


def affine(image: tf.Tensor, matrix: tf.Tensor, fill: Sequence[float]) -> tf.Tensor:
  """PIL's Image.transform(AFFINE): output pixel (x, y) reads the input at matrix @ (x, y, 1)."""
  fill = tf.constant(fill, tf.float32)
  transform = tf.concat([tf.reshape(matrix, [6]), tf.zeros([2])], 0)[None]
  # Fill per channel: transform the image minus the fill colour with zeros outside, add it back.
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=(image - fill)[None], transforms=transform, output_shape=tf.shape(image)[:2],
      fill_value=0.0, interpolation='BILINEAR', fill_mode='CONSTANT')[0]
  return tf.round(out + fill)


def _rotation(degrees: tf.Tensor, height: int, width: int) -> tf.Tensor:
  """PIL's rotate(degrees) about the centre, as an output->input affine matrix."""
  angle = -degrees * math.pi / 180.0
  cos, sin = tf.cos(angle), tf.sin(angle)
  cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
  return tf.stack([cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy])


def apply_op(name: str, image: tf.Tensor, magnitude: tf.Tensor, sign: tf.Tensor,
             fill: Sequence[float]) -> tf.Tensor:
  """One op at `magnitude` (0..10) with `sign` (+-1 for the signed ops), on 0..255 values."""
  level = tf.cast(magnitude, tf.float32) / MAX_LEVEL
  height, width = image.shape[0], image.shape[1]
  one, zero = tf.constant(1.0), tf.constant(0.0)
  if name == 'AutoContrast':
    return auto_contrast(image)
  if name == 'Equalize':
    return equalize(image)
  if name == 'Invert':
    return invert(image)
  if name == 'Rotate':
    return affine(image, _rotation(sign * 30.0 * level, height, width), fill)
  if name in ('ShearX', 'ShearY'):
    shear = sign * 0.3 * level
    matrix = ([one, shear, zero, zero, one, zero] if name == 'ShearX'
              else [one, zero, zero, shear, one, zero])
    return affine(image, tf.stack(matrix), fill)
  if name in ('TranslateXRel', 'TranslateYRel'):
    shift = sign * 0.45 * level
    matrix = ([one, zero, shift * width, zero, one, zero] if name == 'TranslateXRel'
              else [one, zero, zero, zero, one, shift * height])
    return affine(image, tf.stack(matrix), fill)
  if name == 'Posterize':
    return posterize(image, tf.cast(level * 4, tf.int32))
  if name == 'PosterizeIncreasing':
    return posterize(image, 4 - tf.cast(level * 4, tf.int32))
  if name == 'Solarize':
    return solarize(image, tf.floor(level * 256))
  if name == 'SolarizeIncreasing':
    return solarize(image, 256 - tf.floor(level * 256))
  if name == 'SolarizeAdd':
    return solarize_add(image, tf.floor(level * 110))
  enhance = {'Color': color, 'Contrast': contrast, 'Brightness': brightness,
             'Sharpness': sharpness}
  if name.endswith('Increasing') and name[:-len('Increasing')] in enhance:
    return enhance[name[:-len('Increasing')]](image, 1.0 + sign * 0.9 * level)
  if name in enhance:
    return enhance[name](image, 0.1 + 1.8 * level)
  raise ValueError(f"unknown RandAugment op {name!r}; valid: {', '.join(sorted(set(INCREASING_OPS + ORIGINAL_OPS)))}")


def randaugment(image: tf.Tensor, seed: tf.Tensor, policy: Policy,
                fill: Sequence[float] = (0.5, 0.5, 0.5)) -> tf.Tensor:
  """RandAugment of a float32 HxWxC image on the 0..1 scale; `fill` (0..1) for uncovered pixels."""
  fill = [min(255.0, round(255.0 * f)) for f in fill]
  x = tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0)
  seeds = tf.random.experimental.stateless_split(seed, policy.num_layers)
  ops = policy.ops
  for layer in range(policy.num_layers):
    op_seed, apply_seed, magnitude_seed, sign_seed = tf.unstack(
        tf.random.experimental.stateless_split(seeds[layer], 4))
    index = tf.random.stateless_uniform([], op_seed, 0, len(ops), dtype=tf.int32)
    apply = tf.random.stateless_uniform([], apply_seed) < OP_PROB
    magnitude = policy.magnitude
    if policy.magnitude_std > 0:
      magnitude = magnitude + policy.magnitude_std * tf.random.stateless_normal([], magnitude_seed)
    magnitude = tf.clip_by_value(tf.cast(magnitude, tf.float32), 0.0, policy.magnitude_max)
    sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
    branches = [functools.partial(apply_op, name, x, magnitude, sign, fill) for name in ops]
    augmented = tf.switch_case(index, branches)
    x = tf.ensure_shape(tf.where(apply, augmented, x), image.shape)
  return x / 255.0
