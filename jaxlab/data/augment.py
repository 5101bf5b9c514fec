"""Per-example image ops in TensorFlow, random ones driven by stateless ops.

Every random op takes an explicit `seed` (a shape-[2] int32/int64 tensor) instead of drawing from
TF's global or per-op random state: the pipeline derives that seed from the example's position in
the stream, so the result does not depend on tf.data's parallelism or on where a run resumed.
Split one example seed into several with `tf.random.experimental.stateless_split`.

Images are HxWxC tensors. Geometric ops work on any dtype; `normalize` expects float32 on the
0..1 scale (see `to_float`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

PAD_MODES = {'zero': 'CONSTANT', 'reflect': 'REFLECT'}


def to_float(image: tf.Tensor) -> tf.Tensor:
  """uint8 0..255 -> float32 0..1."""
  return tf.image.convert_image_dtype(image, tf.float32)


def pad_and_crop(image: tf.Tensor, seed: tf.Tensor, padding: int,
                 pad_mode: str = 'zero') -> tf.Tensor:
  """CIFAR-style translation: pad `padding` pixels on each side, crop back to the input size.

  `pad_mode='zero'` matches torchvision's `RandomCrop(padding=...)` default; 'reflect' mirrors
  the border instead (needs `padding` smaller than the image side).
  """
  if padding <= 0:
    return image
  padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]],
                  mode=PAD_MODES[pad_mode])
  cropped = tf.image.stateless_random_crop(padded, tf.shape(image), seed=seed)
  cropped.set_shape(image.shape)  # The crop size is dynamic; the shape is not.
  return cropped


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Mirrors left-right with probability 1/2."""
  return tf.image.stateless_random_flip_left_right(image, seed=seed)


def random_resized_crop(image: tf.Tensor, seed: tf.Tensor, size: Sequence[int],
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tf.Tensor:
  """Inception-style crop: a box covering `scale` of the area with aspect `ratio`, resized to `size`.

  Up to 10 box proposals are tried; if none fits, the whole image is used (as TF's and
  torchvision's versions do, the latter with a center crop).
  """
  begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image),
      bounding_boxes=tf.zeros([1, 0, 4], tf.float32),  # No boxes: the whole image is the object.
      seed=seed,
      min_object_covered=0.0,
      aspect_ratio_range=ratio,
      area_range=scale,
      max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  return resize(tf.slice(image, begin, box_size), size)


def resize(image: tf.Tensor, size: Sequence[int]) -> tf.Tensor:
  """Bilinear resize to (height, width), antialiased so downscaling does not alias; float32 out."""
  return tf.image.resize(image, size, method='bilinear', antialias=True)


def resize_shorter_side(image: tf.Tensor, side: int) -> tf.Tensor:
  """Resizes so the shorter side is `side`, keeping the aspect ratio."""
  hw = tf.cast(tf.shape(image)[:2], tf.float32)
  new_hw = tf.cast(tf.round(hw * side / tf.reduce_min(hw)), tf.int32)
  return resize(image, new_hw)


def center_crop(image: tf.Tensor, size: Sequence[int]) -> tf.Tensor:
  """The central (height, width) window."""
  height, width = size
  top = (tf.shape(image)[0] - height) // 2
  left = (tf.shape(image)[1] - width) // 2
  return tf.image.crop_to_bounding_box(image, top, left, height, width)


def normalize(image: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
  """(image - mean) / std per channel, with mean and std on the 0..1 scale."""
  mean = tf.constant(mean, tf.float32)
  std = tf.constant(std, tf.float32)
  return (tf.cast(image, tf.float32) - mean) / std


def random_erasing(image: tf.Tensor, seed: tf.Tensor, probability: float,
                   area: tuple[float, float] = (0.02, 1 / 3),
                   log_aspect: tuple[float, float] = (math.log(0.3), math.log(1 / 0.3)),
                   attempts: int = 10) -> tf.Tensor:
  """timm's RandomErasing(mode='pixel', count 1) on a normalized HxWxC image.

  With `probability`, up to `attempts` boxes of area U(area) * H * W and aspect exp(U(log_aspect))
  are proposed; the first that fits (h < H and w < W) is placed uniformly and filled with N(0, 1)
  noise per pixel and channel. If none fits, the image is unchanged.
  """
  if probability <= 0:
    return image
  shape = tf.shape(image)
  height, width = shape[0], shape[1]
  keys = tf.random.experimental.stateless_split(seed, 6)
  apply = tf.random.stateless_uniform([], keys[0]) < probability
  target = tf.random.stateless_uniform([attempts], keys[1], *area) * tf.cast(height * width,
                                                                              tf.float32)
  aspect = tf.exp(tf.random.stateless_uniform([attempts], keys[2], *log_aspect))
  # round() as Python's: halves to even, which tf.round also does.
  box_h = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)
  box_w = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
  fits = (box_h < height) & (box_w < width)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  h, w = box_h[first], box_w[first]
  top = tf.random.stateless_uniform([], keys[3], 0, height - h + 1, dtype=tf.int32)
  left = tf.random.stateless_uniform([], keys[4], 0, width - w + 1, dtype=tf.int32)
  rows = tf.range(height)[:, None]
  cols = tf.range(width)[None, :]
  inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
  erase = apply & tf.reduce_any(fits) & inside
  noise = tf.random.stateless_normal(shape, keys[5], dtype=image.dtype)
  return tf.where(erase[:, :, None], noise, image)
