"""Tests of jaxlab.data: the embedded digits builder, the deterministic pipeline, augmentations."""

import collections
import itertools
import socket
from unittest import mock

import chex
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import jaxlab.data as data
from jaxlab.data import augment
from jaxlab.data import digits


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A data_dir with digits prepared while every network connection fails."""
  path = str(tmp_path_factory.mktemp('tfds'))
  offline = OSError('network access during dataset preparation')
  with mock.patch.object(socket.socket, 'connect', side_effect=offline), \
       mock.patch.object(socket, 'getaddrinfo', side_effect=offline):
    data.dataset_info(_digits_config(path))
  return path


def _digits_config(data_dir, **overrides):
  cfg = data.default_dataset_config()
  cfg.data_dir = data_dir
  cfg.update(overrides)
  return cfg


def _take(iterator, n):
  return list(itertools.islice(iterator, n))


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def _raw_split(data_dir, split):
  """(uint8 images, labels) of a digits split straight from TFDS."""
  ds = tfds.load(digits.NAME, split=split, data_dir=data_dir, batch_size=-1)
  return tfds.as_numpy(ds['image']), tfds.as_numpy(ds['label'])


def _to_uint8(images, cfg):
  """Undoes the normalization of unaugmented native-size images, back to stored pixels."""
  pixels = (images * np.asarray(cfg.std) + np.asarray(cfg.mean)) * 255
  return np.rint(pixels).astype(np.uint8)


def _examples(batches, n):
  """The first n examples of a batch stream, concatenated."""
  images = np.concatenate([b['image'] for b in batches])[:n]
  labels = np.concatenate([b['label'] for b in batches])[:n]
  assert len(labels) == n
  return images, labels


# ---- the embedded builder -----------------------------------------------------------------------

def test_digits_builder_is_registered_and_prepared_offline(data_dir):
  assert digits.NAME in tfds.list_builders(with_community_datasets=False)
  builder = tfds.builder(digits.NAME, data_dir=data_dir)
  assert builder.is_prepared()
  assert builder.info.splits['train'].num_examples == digits.NUM_TRAIN == 1437
  assert builder.info.splits['test'].num_examples == digits.NUM_TEST == 360
  for split, size in (('train', 1437), ('test', 360)):
    images, labels = _raw_split(data_dir, split)
    chex.assert_shape(images, (size, 8, 8, 1))
    chex.assert_type(images, np.uint8)
    assert images.max() == 255  # 16 on sklearn's scale.
    assert set(labels) == set(range(10))


def test_digits_split_is_stratified_and_disjoint():
  labels = np.arange(1797) % 10
  train, test = digits.split_indices(labels)
  assert len(train) == 1437 and len(test) == 360
  assert not set(train) & set(test)
  np.testing.assert_array_equal(np.bincount(labels[test]), [36] * 10)


def test_default_config_normalization_matches_train_split(data_dir):
  images, _ = _raw_split(data_dir, 'train')
  pixels = images / 255.0
  cfg = data.default_dataset_config()
  np.testing.assert_allclose(cfg.mean, [pixels.mean()], atol=1e-4)
  np.testing.assert_allclose(cfg.std, [pixels.std()], atol=1e-4)
  assert cfg.flip is False


def test_dataset_info_digits(data_dir):
  info = data.dataset_info(_digits_config(data_dir))
  assert info == data.DatasetInfo(
      name='digits', num_classes=10, image_shape=(8, 8, 1), num_train=1437, num_eval=360,
      train_split='train', eval_split='test')
  resized = data.dataset_info(_digits_config(data_dir, image_size=12))
  assert resized.image_shape == (12, 12, 1)


# ---- names --------------------------------------------------------------------------------------

def test_unknown_dataset_error_is_one_line_naming_choices():
  with pytest.raises(ValueError) as error:
    data.check_dataset_name('not_a_dataset')
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith("unknown dataset 'not_a_dataset'; valid: digits, cifar10, ")
  assert 'mnist' in message and 'TFDS image-classification builder' in message
  data.check_dataset_name('cifar10:3.0.2')  # Known names pass, versions allowed.
  assert data.available_datasets()[0] == 'digits'
  assert 'cifar100' in data.available_datasets()


def test_train_batches_rejects_unknown_dataset(data_dir):
  with pytest.raises(ValueError, match="unknown dataset 'digitz'"):
    data.train_batches(_digits_config(data_dir, name='digitz'), local_batch_size=8, seed=0,
                       process_index=0, process_count=1)


# ---- train_batches ------------------------------------------------------------------------------

def test_train_batches_shapes_and_types(data_dir):
  batches = _take(data.train_batches(_digits_config(data_dir), local_batch_size=32, seed=0,
                                     process_index=0, process_count=1), 3)
  for batch in batches:
    assert set(batch) == {'image', 'label'}
    chex.assert_shape(batch['image'], (32, 8, 8, 1))
    chex.assert_type(batch['image'], np.float32)
    chex.assert_shape(batch['label'], (32,))
    chex.assert_type(batch['label'], np.int32)
    assert batch['label'].min() >= 0 and batch['label'].max() <= 9


def test_process_defaults_come_from_jax(data_dir):
  cfg = _digits_config(data_dir)
  implicit = _take(data.train_batches(cfg, local_batch_size=16, seed=3), 2)
  explicit = _take(data.train_batches(cfg, local_batch_size=16, seed=3, process_index=0,
                                      process_count=1), 2)
  _assert_same_batches(implicit, explicit)


def test_same_seed_same_batches_different_seed_different(data_dir):
  cfg = _digits_config(data_dir)
  def first(seed):
    return _take(data.train_batches(cfg, local_batch_size=64, seed=seed, process_index=0,
                                    process_count=1), 3)
  a, b, c = first(0), first(0), first(1)
  _assert_same_batches(a, b)
  assert not np.array_equal(a[0]['label'], c[0]['label'])
  assert not np.array_equal(a[0]['image'], c[0]['image'])


@pytest.mark.parametrize('shuffle_buffer', [10_000, 100])  # Whole-split and block shuffles.
def test_start_step_equals_dropping_steps(data_dir, shuffle_buffer):
  cfg = _digits_config(data_dir, shuffle_buffer=shuffle_buffer)
  batch = 64  # 1437 examples: epoch 1 starts inside batch 22; batch 23 lies wholly in it.
  def stream(start_step, n):
    return _take(data.train_batches(cfg, local_batch_size=batch, seed=7, start_step=start_step,
                                    process_index=0, process_count=1), n)
  reference = stream(0, 28)
  for k in (1, 22, 23):
    _assert_same_batches(stream(k, 4), reference[k:k + 4])


def test_repeated_augmentation_copies_each_image_with_its_own_augmentation(data_dir):
  # Unshuffled, with 3 repeats: examples 3i, 3i+1, 3i+2 are record i under three different crops.
  repeats, batch = 3, 12
  plain = _digits_config(data_dir, augment='none', shuffle_buffer=0)
  repeated = _digits_config(data_dir, augment='none', shuffle_buffer=0,
                            repeated_augmentation=repeats)
  def first(cfg, start_step=0, n=2):
    return _take(data.train_batches(cfg, local_batch_size=batch, seed=0, start_step=start_step,
                                    process_index=0, process_count=1), n)
  (records,) = first(plain, n=1)
  images, labels = _examples(first(repeated), 2 * batch)
  np.testing.assert_array_equal(labels, np.repeat(records['label'][:8], repeats))
  np.testing.assert_array_equal(images, np.repeat(records['image'][:8], repeats, axis=0))
  augmented = _digits_config(data_dir, shuffle_buffer=0, repeated_augmentation=repeats)
  (copies,) = first(augmented, n=1)
  triples = copies['image'].reshape(batch // repeats, repeats, -1)
  assert not all(np.array_equal(t[0], t[1]) and np.array_equal(t[1], t[2]) for t in triples)
  # Resuming mid-record (12 * 5 = 60 examples = record 20, copy 0; batch 16: copy 1 of record 5).
  shuffled = _digits_config(data_dir, repeated_augmentation=repeats)
  reference = _take(data.train_batches(shuffled, local_batch_size=16, seed=3, process_index=0,
                                       process_count=1), 6)
  resumed = _take(data.train_batches(shuffled, local_batch_size=16, seed=3, start_step=1,
                                     process_index=0, process_count=1), 5)
  _assert_same_batches(resumed, reference[1:])


def test_repeated_augmentation_must_be_a_positive_integer():
  cfg = data.default_dataset_config()
  cfg.repeated_augmentation = 0
  with pytest.raises(ValueError, match='repeated_augmentation=0 must be an integer >= 1'):
    data.check_augmentation_config(cfg)


def test_epochs_are_permutations_that_differ(data_dir):
  cfg = _digits_config(data_dir, augment='none')
  n = digits.NUM_TRAIN
  batches = _take(data.train_batches(cfg, local_batch_size=100, seed=0, process_index=0,
                                     process_count=1), 29)  # 2900 > 2 epochs.
  images, labels = _examples(batches, 2 * n)
  pixels = _to_uint8(images, cfg)
  raw_images, raw_labels = _raw_split(cfg.data_dir, 'train')
  expected = collections.Counter(x.tobytes() for x in raw_images)
  for epoch in (slice(0, n), slice(n, 2 * n)):
    assert collections.Counter(x.tobytes() for x in pixels[epoch]) == expected
  assert not np.array_equal(labels[:n], labels[n:])  # Reshuffled per epoch.
  assert not np.array_equal(labels[:n], raw_labels)  # Shuffled at all.


@pytest.mark.parametrize('crop_padding,flip,changed', [(0, False, False), (0, True, True),
                                                         (1, False, True)])
def test_crop_flip_config_reaches_the_images(data_dir, crop_padding, flip, changed):
  cfg = _digits_config(data_dir, augment='crop_flip', crop_padding=crop_padding, flip=flip)
  batches = _take(data.train_batches(cfg, local_batch_size=100, seed=0, process_index=0,
                                     process_count=1), 15)
  images, _ = _examples(batches, digits.NUM_TRAIN)
  seen = collections.Counter(x.tobytes() for x in _to_uint8(images, cfg))
  raw_images, _ = _raw_split(data_dir, 'train')
  assert (seen != collections.Counter(x.tobytes() for x in raw_images)) == changed


def test_resume_far_ahead_jumps_epochs_without_reading_them(data_dir):
  # Unshuffled and unaugmented, example c of the stream is record c mod n in stored order;
  # a resume 10**8 examples in must land there without reading ~70000 epochs.
  cfg = _digits_config(data_dir, augment='none', shuffle_buffer=0, cache=False)
  start_step, batch, n = 10**6, 100, digits.NUM_TRAIN
  (resumed,) = _take(data.train_batches(cfg, local_batch_size=batch, seed=0,
                                        start_step=start_step, process_index=0,
                                        process_count=1), 1)
  stored = tfds.load(digits.NAME, split='train', data_dir=cfg.data_dir, batch_size=-1,
                     shuffle_files=False)
  positions = (start_step * batch + np.arange(batch)) % n
  np.testing.assert_array_equal(_to_uint8(resumed['image'], cfg),
                                tfds.as_numpy(stored['image'])[positions])
  np.testing.assert_array_equal(resumed['label'], tfds.as_numpy(stored['label'])[positions])


def test_process_slices_are_disjoint_and_cover_train(data_dir):
  cfg = _digits_config(data_dir, augment='none')
  slices = []
  for index, size in ((0, 719), (1, 718)):  # even_splits gives the odd example to slice 0.
    batches = _take(data.train_batches(cfg, local_batch_size=64, seed=0, process_index=index,
                                       process_count=2), 12)
    images, _ = _examples(batches, size)
    slices.append(collections.Counter(x.tobytes() for x in _to_uint8(images, cfg)))
  raw_images, _ = _raw_split(data_dir, 'train')
  assert not slices[0] & slices[1]
  assert slices[0] + slices[1] == collections.Counter(x.tobytes() for x in raw_images)


# ---- eval_batches -------------------------------------------------------------------------------

def test_eval_batches_cover_test_once_with_padding(data_dir):
  cfg = _digits_config(data_dir)
  batches = list(data.eval_batches(cfg, local_batch_size=64, process_index=0, process_count=1))
  assert len(batches) == 6  # 360 = 5 * 64 + 40.
  for batch in batches:
    chex.assert_shape(batch['image'], (64, 8, 8, 1))
    chex.assert_type(batch['image'], np.float32)
    chex.assert_type(batch['label'], np.int32)
    chex.assert_shape(batch['mask'], (64,))
    chex.assert_type(batch['mask'], np.float32)
  np.testing.assert_array_equal(batches[-1]['mask'], [1.0] * 40 + [0.0] * 24)
  raw_images, raw_labels = _raw_split(data_dir, 'test')
  mask = np.concatenate([b['mask'] for b in batches]) == 1
  images = np.concatenate([b['image'] for b in batches])[mask]
  labels = np.concatenate([b['label'] for b in batches])[mask]
  np.testing.assert_array_equal(np.bincount(labels), np.bincount(raw_labels))
  assert (collections.Counter(x.tobytes() for x in _to_uint8(images, cfg)) ==
          collections.Counter(x.tobytes() for x in raw_images))


def test_eval_batches_same_count_on_every_process(data_dir):
  # 360 over 7 processes: slices of 52, 52, 52, 51, 51, 51, 51. With 17 per batch the first
  # three need 4 batches, the others 3 plus one of pure padding.
  cfg = _digits_config(data_dir)
  per_process = [list(data.eval_batches(cfg, local_batch_size=17, process_index=i,
                                        process_count=7)) for i in range(7)]
  assert [len(b) for b in per_process] == [4] * 7
  assert [sum(b['mask'].sum() for b in batches) for batches in per_process] == \
      [52] * 3 + [51] * 4
  assert per_process[6][-1]['mask'].sum() == 0
  labels = np.concatenate([b['label'][b['mask'] == 1] for bs in per_process for b in bs])
  _, raw_labels = _raw_split(data_dir, 'test')
  np.testing.assert_array_equal(np.bincount(labels), np.bincount(raw_labels))


# ---- another TFDS dataset through the same path -------------------------------------------------

def _cifar10_config(**overrides):
  cfg = data.default_dataset_config()
  cfg.update(name='cifar10', augment='crop_flip', flip=True, crop_padding=4,
             mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26), cache=False)
  cfg.update(overrides)
  return cfg


def test_mock_cifar10_train_and_eval():
  with tfds.testing.mock_data(num_examples=20):
    cfg = _cifar10_config()
    info = data.dataset_info(cfg)
    assert (info.num_classes, info.image_shape, info.num_train) == (10, (32, 32, 3), 20)
    def stream(start_step, n):
      return _take(data.train_batches(cfg, local_batch_size=8, seed=0, start_step=start_step,
                                      process_index=0, process_count=1), n)
    reference = stream(0, 6)
    chex.assert_shape(reference[0]['image'], (8, 32, 32, 3))
    chex.assert_type(reference[0]['image'], np.float32)
    _assert_same_batches(stream(3, 3), reference[3:])  # Starts in epoch 1, 4 examples in.
    # The mock serves the same 20 examples to every process: only their seeds tell them apart.
    (other,) = _take(data.train_batches(cfg, local_batch_size=8, seed=0, process_index=1,
                                        process_count=2), 1)
    assert not np.array_equal(other['image'], reference[0]['image'])
    batches = list(data.eval_batches(cfg, local_batch_size=8, process_index=0,
                                     process_count=1))
    assert len(batches) == 3 and sum(b['mask'].sum() for b in batches) == 20


def test_mock_cifar10_random_resized_crop():
  with tfds.testing.mock_data(num_examples=20):
    cfg = _cifar10_config(augment='random_resized_crop', image_size=24)
    assert data.dataset_info(cfg).image_shape == (24, 24, 3)
    (train,) = _take(data.train_batches(cfg, local_batch_size=8, seed=0, process_index=0,
                                        process_count=1), 1)
    chex.assert_shape(train['image'], (8, 24, 24, 3))
    evals = list(data.eval_batches(cfg, local_batch_size=8, process_index=0, process_count=1))
    chex.assert_shape([b['image'] for b in evals], (8, 24, 24, 3))


def test_mean_std_must_match_channels():
  with tfds.testing.mock_data(num_examples=20):
    with pytest.raises(ValueError, match='one value per channel'):
      data.dataset_info(_cifar10_config(mean=(0.5,), std=(0.25,)))


# ---- augmentation ops ---------------------------------------------------------------------------

def _seeds(n):
  return [tf.constant([i, 0], tf.int64) for i in range(n)]


def test_pad_and_crop_is_a_shifted_window():
  image = tf.reshape(tf.range(1, 6 * 5 * 2 + 1, dtype=tf.float32), (6, 5, 2))
  padded = np.pad(image.numpy(), ((2, 2), (2, 2), (0, 0)))
  offsets = set()
  for seed in _seeds(30):
    out = augment.pad_and_crop(image, seed, padding=2).numpy()
    assert out.shape == (6, 5, 2)
    matches = [(dy, dx) for dy in range(5) for dx in range(5)
               if np.array_equal(out, padded[dy:dy + 6, dx:dx + 5])]
    assert len(matches) == 1
    offsets.add(matches[0])
  assert len(offsets) > 5


def test_pad_modes_zero_and_reflect():
  ones = tf.ones((8, 8, 1))
  zero = [augment.pad_and_crop(ones, s, 2, 'zero').numpy().min() for s in _seeds(20)]
  reflect = [augment.pad_and_crop(ones, s, 2, 'reflect').numpy().min() for s in _seeds(20)]
  assert min(zero) == 0.0
  assert min(reflect) == 1.0


def test_random_flip_flips_or_keeps():
  image = tf.reshape(tf.range(12, dtype=tf.float32), (2, 6, 1))
  flipped = image.numpy()[:, ::-1]
  outcomes = []
  for seed in _seeds(20):
    out = augment.random_flip(image, seed).numpy()
    if np.array_equal(out, flipped):
      outcomes.append('flipped')
    else:
      np.testing.assert_array_equal(out, image.numpy())
      outcomes.append('kept')
  assert set(outcomes) == {'flipped', 'kept'}


def test_normalize_constant_image():
  image = tf.fill((4, 4, 3), 0.5)
  out = augment.normalize(image, mean=(0.25, 0.5, 0.75), std=(0.5, 0.25, 0.25)).numpy()
  np.testing.assert_allclose(out.mean(axis=(0, 1)), [0.5, 0.0, -1.0], rtol=1e-6)
  np.testing.assert_allclose(out.std(axis=(0, 1)), 0.0, atol=1e-6)


def test_random_resized_crop_shape_and_range():
  image = tf.random.stateless_uniform((20, 40, 3), seed=[0, 1])
  boxes = set()
  for seed in _seeds(10):
    out = augment.random_resized_crop(image, seed, (16, 16)).numpy()
    assert out.shape == (16, 16, 3)
    assert 0.0 <= out.min() and out.max() <= 1.0
    boxes.add(out.tobytes())
  assert len(boxes) == 10


def test_eval_resize_and_center_crop():
  image = tf.ones((30, 60, 3))
  shorter = augment.resize_shorter_side(image, 16)
  assert tuple(shorter.shape) == (16, 32, 3)
  crop = augment.center_crop(tf.reshape(tf.range(36.0), (6, 6, 1)), (2, 2))
  np.testing.assert_array_equal(crop.numpy()[..., 0], [[14, 15], [20, 21]])


def test_unprepared_dataset_without_download_is_one_line(tmp_path):
  cfg = data.default_dataset_config()
  cfg.name, cfg.data_dir, cfg.download = 'mnist', str(tmp_path), False
  with pytest.raises(data.DataError, match=r"dataset 'mnist' is not prepared in .* and "
                                           r"config.dataset.download is False; prepare it there with "
                                           r"`tfds build mnist") as e:
    data.dataset_info(cfg)
  assert '\n' not in str(e.value)
