"""The dataset config: its fields, defaults (the embedded `digits`) and consistency checks.

Fields of `config.dataset` (an `ml_collections.ConfigDict`):

  name            TFDS builder name, e.g. 'digits' (embedded), 'cifar10', 'imagenet2012'.
  data_dir        TFDS data directory; None = TFDS default (~/tensorflow_datasets or $TFDS_DATA_DIR).
  train_split     split to train on ('train').
  eval_split      split to evaluate on: 'test' where the dataset has one; datasets without it
                  name theirs here (imagenet2012: 'validation'). Any TFDS split string works
                  ('train[:10%]', ...).
  image_size      square side the pipeline outputs; None = the dataset's native size.
  augment         'none' | 'crop_flip' (pad-and-crop, then flip if `flip`) |
                  'random_resized_crop' (Inception-style crop to image_size, then flip if `flip`).
  flip            random horizontal flip (with 'crop_flip' / 'random_resized_crop'); keep it off
                  for digits and text-like data.
  crop_padding    pixels of padding for 'crop_flip'.
  pad_mode        'zero' (torchvision's default) or 'reflect', for 'crop_flip'.
  randaugment     '' (off) or a timm RandAugment spec, e.g. 'rand-m9-mstd0.5-inc1' (see
                  jaxlab/data/randaugment.py); after crop/flip, before normalization.
  random_erasing  probability of timm's RandomErasing (mode 'pixel': N(0, 1) noise in one box of
                  2%-33% of the image), after normalization; 0 = off.
  repeated_augmentation
                  k >= 1: every training image appears k times in a row, each copy augmented
                  independently (DeiT's repeated augmentation uses 3); 1 = off.
  mean, std       per-channel normalization on the 0..1 pixel scale.
  shuffle_buffer  examples shuffled together; >= the split size gives a uniform permutation per
                  epoch; <= 1 turns shuffling off. Holds up to ~2x that many encoded examples
                  in memory (a block being shuffled and the next being read).
  cache           keep the (still encoded) train split in memory after the first epoch.
"""

from __future__ import annotations

import ml_collections

from jaxlab.data import digits

AUGMENTATIONS = ('none', 'crop_flip', 'random_resized_crop')


def default_dataset_config() -> ml_collections.ConfigDict:
  """The embedded `digits` dataset at its native 8x8x1, shifted by up to 1 pixel, not flipped."""
  return ml_collections.ConfigDict({
      'name': digits.NAME,
      'data_dir': ml_collections.FieldReference(None, field_type=str),
      'train_split': 'train',
      'eval_split': 'test',
      'image_size': ml_collections.FieldReference(None, field_type=int),
      'augment': 'crop_flip',
      'flip': False,  # A mirrored 2 or 5 is not the same digit.
      'crop_padding': 1,
      'pad_mode': 'zero',
      'randaugment': '',
      'random_erasing': 0.0,
      'repeated_augmentation': 1,
      'mean': digits.TRAIN_MEAN,
      'std': digits.TRAIN_STD,
      'shuffle_buffer': 10_000,  # Covers digits' 1437 train examples: a full permutation.
      'cache': True,
      'download': True,  # TFDS downloads and prepares a dataset that is not there yet.
  })


def check_augmentation_config(cfg: ml_collections.ConfigDict) -> None:
  """RandAugment and random erasing settings; a one-line ValueError naming the field."""
  if cfg.get('randaugment'):
    from jaxlab.data import randaugment  # pylint: disable=import-outside-toplevel
    try:
      randaugment.parse(cfg.randaugment)
    except ValueError as e:
      raise ValueError(f'dataset.randaugment: {e}') from None
  repeats = cfg.get('repeated_augmentation', 1)
  if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
    raise ValueError(f'dataset.repeated_augmentation={repeats!r} must be an integer >= 1 '
                     '(copies of each training image; 1 = off)')
  erasing = cfg.get('random_erasing', 0.0)
  if not isinstance(erasing, (int, float)) or not 0 <= erasing <= 1:
    raise ValueError(f'dataset.random_erasing={erasing!r} must be a probability in [0, 1]')


def check_dataset_config(cfg: ml_collections.ConfigDict, num_channels: int) -> None:
  """Raises ValueError, naming the field, where the config cannot describe a valid pipeline."""
  check_augmentation_config(cfg)
  if cfg.get('randaugment') and num_channels != 3:
    raise ValueError(f'dataset.randaugment needs RGB images; {cfg.name} images have '
                     f'{num_channels} channel(s)')
  if cfg.augment not in AUGMENTATIONS:
    raise ValueError(f"dataset.augment={cfg.augment!r}; valid: {', '.join(AUGMENTATIONS)}")
  pad_mode = cfg.get('pad_mode', 'zero')
  if pad_mode not in ('zero', 'reflect'):
    raise ValueError(f"dataset.pad_mode={pad_mode!r}; valid: zero, reflect")
  if cfg.crop_padding < 0:
    raise ValueError(f'dataset.crop_padding={cfg.crop_padding} must be >= 0')
  if cfg.image_size is not None and cfg.image_size <= 0:
    raise ValueError(f'dataset.image_size={cfg.image_size} must be positive or None')
  for field in ('mean', 'std'):
    if len(cfg[field]) != num_channels:
      raise ValueError(f'dataset.{field}={tuple(cfg[field])} needs one value per channel: '
                       f'{cfg.name} images have {num_channels}')
  if min(cfg.std) <= 0:
    raise ValueError(f'dataset.std={tuple(cfg.std)} must be positive')
