"""`digits`: scikit-learn's bundled 8x8 handwritten digits, served as a TFDS builder.

It is the dataset every quick start, notebook and test can use without a network: the pixels
ship inside scikit-learn (`sklearn.datasets.load_digits`), so preparing it downloads nothing
and takes about a second. Registering it as a TFDS builder (by defining the class, which
importing `jaxlab.data` does) lets `tfds.load('digits')` and the jaxlab pipeline treat it
like any other TFDS dataset.

Contents: 1797 grayscale images of 8x8 pixels. scikit-learn gives values 0..16; they are stored
as uint8 8x8x1 scaled to 0..255 (`round(v * 255 / 16)`), with labels 0..9.

Splits, fixed once and for all: `train` 1437 and `test` 360 examples, stratified by class
(35 to 37 test examples per class, quotas by largest remainder). The test members are chosen
by NumPy's legacy `RandomState(0)`, whose stream is frozen across NumPy versions, rather than
by `sklearn.model_selection`, whose splitting algorithm may change between releases.
"""

from __future__ import annotations

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

NAME = 'digits'
NUM_TRAIN = 1437
NUM_TEST = 360
NUM_CLASSES = 10
SPLIT_SEED = 0

# Per-channel pixel statistics of the train split on the 0..1 scale; the default dataset config
# normalizes with them (tests recompute them from the prepared split).
TRAIN_MEAN = (0.3058,)
TRAIN_STD = (0.3762,)


def split_indices(labels: np.ndarray, num_test: int = NUM_TEST,
                  seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
  """Returns sorted (train, test) indices: a stratified split with exactly `num_test` test items."""
  counts = np.bincount(labels)
  # Largest-remainder quotas so the per-class test counts sum exactly to num_test.
  exact = num_test * counts / counts.sum()
  quotas = np.floor(exact).astype(int)
  by_remainder = np.argsort(-(exact - quotas), kind='stable')
  quotas[by_remainder[:num_test - quotas.sum()]] += 1
  order = np.random.RandomState(seed).permutation(len(labels))
  test = np.concatenate([order[labels[order] == k][:q] for k, q in enumerate(quotas)])
  is_test = np.zeros(len(labels), bool)
  is_test[test] = True
  return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _load_uint8() -> tuple[np.ndarray, np.ndarray]:
  """The 1797 images as uint8 [N, 8, 8, 1] on 0..255, and int64 labels."""
  from sklearn.datasets import load_digits  # Imported here: only preparing needs scikit-learn.
  raw = load_digits()
  images = np.rint(raw.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  return images, raw.target.astype(np.int64)


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's handwritten digits (8x8x1 uint8, 10 classes); no download needed."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Stratified 1437/360 train/test split of sklearn load_digits.'}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10 derives this with `importlib_resources`, a package it does not require on
    # Python >= 3.9 (tensorflow/datasets#11212), so preparing would fail without it.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1)),
            'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://archive.ics.uci.edu/dataset/80',
        citation='UCI ML hand-written digits (optdigits), as bundled by scikit-learn.',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data ships with scikit-learn.
    images, labels = _load_uint8()
    train, test = split_indices(labels)
    return {
        'train': self._generate_examples(images, labels, train),
        'test': self._generate_examples(images, labels, test),
    }

  def _generate_examples(self, images, labels, indices):
    # The key is the row in sklearn's array: stable, so TFDS's write order is reproducible.
    for i in indices:
      yield int(i), {'image': images[i], 'label': int(labels[i])}
