"""TFDS -> tf.data -> NumPy batches for training and evaluation, one process's share of them.

Determinism is the contract of `train_batches`: for a given (seed, process_index, process_count)
the stream of batches is fixed, and `start_step=k` yields exactly what `start_step=0` yields after
its first k batches, without decoding the examples it skips. How:

  * The process reads its slice of the split (`tfds.even_splits`) in file order, images still
    encoded (`tfds.decode.SkipDecoding`). That slice holds n examples.
  * The stream is a sequence of epochs, epoch e a permutation of the n records: consecutive
    blocks of `shuffle_buffer` records, each shuffled with a stateless seed from
    (seed, process, e, block). A block as large as the slice makes it a uniform permutation.
    (TFDS already stores examples in a shuffled order.)
  * Example number c of the stream (counting from 0 across epochs) sits in epoch c // n at
    position c % n. Resuming at step k starts at c = k * batch: the pipeline starts directly in
    that epoch, skips the whole blocks before the position without shuffling them, skips the
    rest inside the block, and decodes only what comes after.
  * Augmentation randomness is a stateless seed from (seed, process, c): independent of tf.data
    parallelism and of where the run resumed.
  * Repeated augmentation (`repeated_augmentation=k`, DeiT's RASampler): each record is
    yielded k times in a row, each copy augmented with its own seed; the stream's example count c
    advances k times per record, so a run's `num_epochs` counts examples seen, as in DeiT (an
    epoch of n examples holds n / k distinct images). The copies share a batch and a process
    (DeiT spreads them over GPUs; for a model without batch statistics the gradient is the same).
  * Batches run across epoch boundaries (epochs roll over continuously), so no example is
    dropped at the end of an epoch. Slices of different processes may differ by one example,
    and so their epochs by one example in length.

TF stays on the CPU (its GPU visibility is removed at import) with a bounded thread pool, so
it does not compete with JAX for accelerators.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxlab.data import digits
from jaxlab.data import preprocess
from jaxlab.data.config import check_dataset_config
from jaxlab.errors import first_line
from jaxlab.names import Pattern
from jaxlab.names import matching

EMBEDDED_DATASETS = (digits.NAME,)
_EXAMPLE_NAMES = ('cifar10', 'cifar100', 'mnist', 'fashion_mnist', 'imagenet2012')
# Fixed rather than AUTOTUNE/core-count dependent: the TFDS file interleave order, and so the
# stream, must not change with the machine a run resumes on.
_INTERLEAVE_CYCLE_LENGTH = 16

Batch = dict[str, np.ndarray]


def _keep_tf_off_accelerators() -> None:
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:
    pass  # TF already initialized its devices (someone used it first); nothing to undo here.


_keep_tf_off_accelerators()


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and the trainer need to know about a dataset config.

  image_shape is (H, W, C) as the pipeline yields it; num_train/num_eval count whole splits
  (all processes together).
  """
  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  num_train: int
  num_eval: int
  train_split: str
  eval_split: str


def available_datasets(pattern: Pattern = None, *, every_builder: bool = False) -> list[str]:
  """Datasets a config can train on: the embedded ones first, then the TFDS image-classification
  builders that fit the pipeline (an image and a class label: `supervised_keys`, else 'image' and
  'label'), sorted. `pattern` filters the names: `available_datasets('cifar*')`,
  `available_datasets(['*mnist*', 'imagenet*'])` (fnmatch, case-insensitive).

  `every_builder=True` lists every TFDS builder instead (text, audio, ... too: what
  `check_dataset_name` accepts). Checking the features reads each candidate's builder info
  (offline; a few seconds for all of them, once per process), so a pattern narrows first.
  """
  builders = sorted(set(tfds.list_builders(with_community_datasets=False)) -
                    set(EMBEDDED_DATASETS))
  embedded = matching(EMBEDDED_DATASETS, pattern)
  if every_builder:
    return embedded + matching(builders, pattern)
  candidates = matching([n for n in builders if _image_classification(n)], pattern)
  return embedded + [n for n in candidates if _fits_pipeline(n)]


# TFDS files builders by task: in a category package (the older layout), or with tags (newer).
_IMAGE_CLASSIFICATION_PACKAGE = 'tensorflow_datasets.image_classification.'
_IMAGE_CLASSIFICATION_TAG = 'ml.task.image-classification'


def _image_classification(name: str) -> bool:
  """Whether TFDS files builder `name` under image classification (no builder info is read)."""
  try:
    builder_cls = tfds.builder_cls(name)
  except Exception:  # pylint: disable=broad-except  # its module needs a package not installed
    return False
  if builder_cls.__module__.startswith(_IMAGE_CLASSIFICATION_PACKAGE):
    return True
  try:
    return _IMAGE_CLASSIFICATION_TAG in builder_cls.get_metadata().tags
  except Exception:  # pylint: disable=broad-except  # no metadata: not filed as one
    return False


@functools.cache
def _fits_pipeline(name: str) -> bool:
  """Whether builder `name` has what `_Source` reads: an Image and a ClassLabel feature."""
  try:
    info = tfds.builder(name).info
    image_key, label_key = info.supervised_keys or ('image', 'label')
    features = info.features
    return (isinstance(features[image_key], tfds.features.Image) and
            isinstance(features[label_key], tfds.features.ClassLabel))
  except Exception:  # pylint: disable=broad-except  # info that cannot be read, other keys
    return False


def check_dataset_name(name: str) -> None:
  """Raises a one-line ValueError naming valid choices if TFDS has no builder `name`.

  A config ('/...') or version (':...') suffix is allowed, as in tfds.builder.
  """
  base = name.split('/')[0].split(':')[0]
  if base not in tfds.list_builders(with_community_datasets=False):
    valid = ', '.join(EMBEDDED_DATASETS + _EXAMPLE_NAMES)
    raise ValueError(f"unknown dataset '{name}'; valid: {valid}, ... "
                     '(any TFDS image-classification builder: jaxlab.data.available_datasets())')


class DataError(ValueError):
  """A dataset that cannot be read or prepared; the message is one line saying what to do."""


def dataset_info(cfg: ml_collections.ConfigDict) -> DatasetInfo:
  """Shapes, classes and split sizes; prepares the embedded dataset if needed (offline)."""
  source = _Source(cfg)
  return DatasetInfo(
      name=cfg.name,
      num_classes=source.num_classes,
      image_shape=source.image_shape,
      num_train=_num_examples(source.records(cfg.train_split)),
      num_eval=_num_examples(source.records(cfg.eval_split)),
      train_split=cfg.train_split,
      eval_split=cfg.eval_split)


def train_batches(cfg: ml_collections.ConfigDict, *, local_batch_size: int, seed: int,
                  start_step: int = 0, process_index: int | None = None,
                  process_count: int | None = None) -> Iterator[Batch]:
  """Endless augmented batches of this process's slice of the train split.

  Yields {'image': float32 [B, H, W, C] normalized, 'label': int32 [B]} with B =
  local_batch_size. process_index/process_count default to JAX's.
  """
  process_index, process_count = _process(process_index, process_count)
  source = _Source(cfg)
  records = source.records(tfds.even_splits(cfg.train_split, process_count)[process_index])
  n = _num_examples(records)
  if n == 0:
    raise ValueError(f'{cfg.name} {cfg.train_split!r} slice {process_index}/{process_count} '
                     'is empty')
  if cfg.cache:
    records = records.cache()

  key = _process_key(seed, process_index)
  shuffle_key = _fold_in(key, 0)
  augment_key = _fold_in(key, 1)
  block = max(1, min(cfg.shuffle_buffer, n))

  def epoch(e, first_block):
    # Epoch e's permutation, from block `first_block` on; skipping happens on encoded records.
    if block == 1:
      return records.skip(first_block)
    epoch_key = _fold_in(shuffle_key, e)
    blocks = records.skip(first_block * block).batch(block).enumerate(start=first_block)
    return blocks.map(lambda b, x: _shuffle_block(x, _fold_in(epoch_key, b))).unbatch()

  # With repeated augmentation each record of the stream appears `repeats` times in a row;
  # example c (what batches count) is then repeat c % repeats of record c // repeats.
  repeats = cfg.get('repeated_augmentation', 1)
  first_example = start_step * local_batch_size
  first_record, first_repeat = divmod(first_example, repeats)
  first_epoch, offset = divmod(first_record, n)
  stream = epoch(first_epoch, offset // block).skip(offset % block)
  stream = stream.concatenate(
      tf.data.Dataset.counter(first_epoch + 1).flat_map(lambda e: epoch(e, 0)))
  if repeats > 1:
    stream = stream.flat_map(lambda r: tf.data.Dataset.from_tensors(r).repeat(repeats))
    stream = stream.skip(first_repeat)

  transform = preprocess.train_transform(cfg, source.image_shape)

  def example(c, record):
    image = transform(source.decode_image(record['image']), _fold_in(augment_key, c))
    return {'image': image, 'label': tf.cast(record['label'], tf.int32)}

  ds = stream.enumerate(start=first_example)
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch_size, drop_remainder=True)
  return _numpy_batches(ds)


def eval_batches(cfg: ml_collections.ConfigDict, *, local_batch_size: int,
                 process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[Batch]:
  """One ordered, unaugmented pass over this process's slice of the eval split.

  Yields {'image', 'label', 'mask'}: mask float32 [B] is 1.0 for real examples, 0.0 for padding
  that fills the last batch to local_batch_size. Every process yields the same number of
  batches (all-padding ones where its slice is shorter), because eval steps are collective.
  """
  process_index, process_count = _process(process_index, process_count)
  source = _Source(cfg)
  slices = tfds.even_splits(cfg.eval_split, process_count)
  records = source.records(slices[process_index])
  n = _num_examples(records)
  # even_splits hands the remainder to the first slices, so slice 0 is the largest.
  largest = max(n, _num_examples(source.records(slices[0])))
  num_batches = math.ceil(largest / local_batch_size)

  transform = preprocess.eval_transform(cfg, source.image_shape)
  ds = records.map(
      lambda r: {'image': transform(source.decode_image(r['image'])),
                 'label': tf.cast(r['label'], tf.int32),
                 'mask': tf.constant(1.0, tf.float32)},
      num_parallel_calls=tf.data.AUTOTUNE)
  padding = {'image': tf.zeros(source.image_shape, tf.float32),
             'label': tf.constant(0, tf.int32),
             'mask': tf.constant(0.0, tf.float32)}
  ds = ds.concatenate(
      tf.data.Dataset.from_tensors(padding).repeat(num_batches * local_batch_size - n))
  return _numpy_batches(ds.batch(local_batch_size))


class _Source:
  """A checked config's TFDS builder: encoded records of a split, and how to decode images."""

  def __init__(self, cfg: ml_collections.ConfigDict):
    check_dataset_name(cfg.name)
    self._builder = tfds.builder(cfg.name, data_dir=cfg.data_dir)
    if not self._builder.is_prepared():
      where = f"dataset '{cfg.name}' is not prepared in {self._builder.data_dir}"
      how = (f"prepare it there with `tfds build {cfg.name} --data_dir=DIR` on a machine that can "
             "download it and set config.dataset.data_dir=DIR")
      if cfg.name not in EMBEDDED_DATASETS and not cfg.get('download', True):
        raise DataError(f"{where} and config.dataset.download is False; {how}")
      try:
        # The embedded datasets are generated from local data; the others are downloaded by TFDS.
        self._builder.download_and_prepare()
      except FileExistsError:
        # Another process (a second host, a parallel run) prepared it first; TFDS's final rename
        # is atomic, so the finished copy that beat us is complete.
        self._builder = tfds.builder(cfg.name, data_dir=cfg.data_dir)
        if not self._builder.is_prepared():
          raise
      except Exception as e:  # pylint: disable=broad-except  # offline, no access: one line
        raise DataError(f"{where} and downloading it failed "
                        f"({type(e).__name__}: {first_line(e, 160)}); "
                        f"{how}") from None
    features = self._builder.info.features
    self._image_key, self._label_key = self._builder.info.supervised_keys or ('image', 'label')
    self._image_feature = features[self._image_key]
    self.num_classes = features[self._label_key].num_classes
    native_shape = self._image_feature.shape
    check_dataset_config(cfg, num_channels=native_shape[-1])
    self.image_shape = preprocess.output_image_shape(cfg, native_shape)

  def records(self, split) -> tf.data.Dataset:
    """{'image': encoded bytes, 'label': int64} in stored order."""
    read_config = tfds.ReadConfig(
        options=_options(),
        try_autocache=False,  # `cache` in the config decides.
        interleave_cycle_length=_INTERLEAVE_CYCLE_LENGTH)
    ds = self._builder.as_dataset(
        split=split, shuffle_files=False, read_config=read_config,
        decoders={self._image_key: tfds.decode.SkipDecoding()})
    return ds.map(lambda x: {'image': x[self._image_key], 'label': x[self._label_key]})

  def decode_image(self, encoded: tf.Tensor) -> tf.Tensor:
    return self._image_feature.decode_example(encoded)


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  # A modest private pool: TF should feed the accelerators, not take the host's cores from JAX.
  options.threading.private_threadpool_size = max(2, (os.cpu_count() or 2) // 2)
  options.threading.max_intra_op_parallelism = 1
  return options


def _numpy_batches(ds: tf.data.Dataset) -> Iterator[Batch]:
  return ds.prefetch(tf.data.AUTOTUNE).with_options(_options()).as_numpy_iterator()


def _num_examples(ds: tf.data.Dataset) -> int:
  n = int(ds.cardinality())
  if n < 0:
    raise ValueError('the number of examples of a TFDS split is unknown')
  return n


def _process(index: int | None, count: int | None) -> tuple[int, int]:
  if index is None or count is None:
    import jax  # Only for the defaults: the data package does not otherwise need JAX.
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
  if not 0 <= index < count:
    raise ValueError(f'process_index={index} not in [0, process_count={count})')
  return index, count


def _process_key(seed: int, process_index: int) -> tf.Tensor:
  """A stateless-RNG key for (seed, process): any Python int seed, 64 bits of it used."""
  seed %= 2**64
  key = tf.constant([seed >> 32, seed & 0xFFFFFFFF], tf.int64)
  return _fold_in(key, process_index)


def _fold_in(key: tf.Tensor, data) -> tf.Tensor:
  # Philox explicitly: 'auto_select' may pick a device-dependent algorithm.
  return tf.random.experimental.stateless_fold_in(key, tf.cast(data, tf.int64), alg='philox')


def _shuffle_block(block: dict[str, tf.Tensor], key: tf.Tensor) -> dict[str, tf.Tensor]:
  size = tf.shape(block['label'])[0]
  order = tf.random.experimental.stateless_shuffle(tf.range(size), seed=key, alg='philox')
  return {k: tf.gather(v, order) for k, v in block.items()}
