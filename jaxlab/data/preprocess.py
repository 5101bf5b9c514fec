"""The per-example train and eval transforms that a dataset config asks for.

Train: crop/flip as `augment` says, then RandAugment (`randaugment`, a timm spec string), then
normalization, then random erasing (`random_erasing`, its probability) -- timm's order. Both take a decoded uint8 HxWxC image and return float32 normalized to the config's mean/std,
with the shape `output_image_shape` reports. Eval never augments:

  image_size None          native size, untouched.
  image_size set           resized to image_size x image_size, except after
                           'random_resized_crop' training, where eval follows the Inception
                           recipe: resize the shorter side to image_size / 0.875, center-crop.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections
import tensorflow as tf

from jaxlab.data import augment, randaugment

# Fraction of the resized image that the eval center crop keeps (the ImageNet 224/256 convention).
CENTER_CROP_FRACTION = 0.875

Shape = tuple[int, int, int]


def output_image_shape(cfg: ml_collections.ConfigDict,
                       native_shape: tuple[int | None, ...]) -> Shape:
  """(H, W, C) of the images the pipeline yields for a dataset with `native_shape` images."""
  height, width, channels = native_shape
  if cfg.image_size is not None:
    return (cfg.image_size, cfg.image_size, channels)
  if height is None or width is None:
    raise ValueError(f'{cfg.name} images vary in size; set dataset.image_size')
  return (height, width, channels)


def train_transform(cfg: ml_collections.ConfigDict,
                    shape: Shape) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  """(uint8 image, shape-[2] seed) -> augmented, normalized float32 image of `shape`."""
  size = shape[:2]
  pad_mode = cfg.get('pad_mode', 'zero')
  policy = randaugment.parse(cfg.randaugment) if cfg.get('randaugment') else None
  erasing = cfg.get('random_erasing', 0.0)

  def transform(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    # Four streams: the crop and flip seeds are the ones of the two-way split before RandAugment
    # and erasing existed, so configs without them produce the same images as before.
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    rand_seed, erase_seed = tf.unstack(tf.random.experimental.stateless_split(flip_seed, 2))
    image = augment.to_float(image)
    if cfg.augment == 'random_resized_crop':
      image = augment.random_resized_crop(image, crop_seed, size)
    else:
      image = _resize_if_needed(image, size)
      if cfg.augment == 'crop_flip':
        image = augment.pad_and_crop(image, crop_seed, cfg.crop_padding, pad_mode)
    if cfg.flip and cfg.augment != 'none':
      image = augment.random_flip(image, flip_seed)
    if policy is not None:
      # Decoded JPEGs (ImageNet) have no static shape; RandAugment's per-channel ops need one.
      image = tf.ensure_shape(image, shape)
      image = randaugment.randaugment(image, rand_seed, policy, fill=cfg.mean)
    image = augment.normalize(image, cfg.mean, cfg.std)
    if erasing > 0:
      image = augment.random_erasing(image, erase_seed, erasing)
    return tf.ensure_shape(image, shape)

  return transform


def eval_transform(cfg: ml_collections.ConfigDict,
                   shape: Shape) -> Callable[[tf.Tensor], tf.Tensor]:
  """uint8 image -> normalized float32 image of `shape`, deterministic."""
  size = shape[:2]

  def transform(image: tf.Tensor) -> tf.Tensor:
    image = augment.to_float(image)
    if cfg.image_size is not None and cfg.augment == 'random_resized_crop':
      image = augment.resize_shorter_side(image, round(cfg.image_size / CENTER_CROP_FRACTION))
      image = augment.center_crop(image, size)
    else:
      image = _resize_if_needed(image, size)
    return tf.ensure_shape(augment.normalize(image, cfg.mean, cfg.std), shape)

  return transform


def _resize_if_needed(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
  # Skipping the no-op resize keeps native-size pixels bit-exact.
  if tuple(image.shape[:2]) == tuple(size):
    return image
  return augment.resize(image, size)
