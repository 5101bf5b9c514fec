"""Fréchet distance and KID against closed forms; FD-<classifier> grows with noise on real digits."""

import numpy as np
import pytest
import scipy.linalg
import tensorflow_datasets as tfds

from jaxlab import trainer
from jaxlab.config import load_config_file
from jaxlab.metrics import frechet
from jaxlab.metrics.features import ClassifierFeatures


def test_frechet_distance_of_commuting_gaussians_has_the_closed_form():
  rng = np.random.default_rng(0)
  rotation, _ = np.linalg.qr(rng.normal(size=(5, 5)))
  a, b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
  mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
  s1, s2 = rotation @ np.diag(a) @ rotation.T, rotation @ np.diag(b) @ rotation.T
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  assert frechet.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
  assert frechet.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-10)


def test_frechet_distance_of_general_gaussians_equals_the_sqrtm_formula():
  rng = np.random.default_rng(1)
  m1, m2 = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
  s1, s2 = m1 @ m1.T + 0.1 * np.eye(8), m2 @ m2.T  # non-commuting, the second nearly singular
  mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
  # pytorch-fid's formula, with scipy's matrix square root of the (non-symmetric) product.
  expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
  assert frechet.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_of_samples_approaches_the_population_value():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(20000, 3)) * [1.0, 2.0, 0.5]
  y = rng.normal(size=(20000, 3)) * [1.5, 1.0, 0.5] + [1.0, 0.0, 0.0]
  expected = 1.0 + (1 - np.sqrt(1.5**2)) ** 2 + (2 - 1) ** 2  # |dmu|^2 + sum (s1 - s2)^2 for stds
  assert frechet.frechet_distance_of_features(x, y) == pytest.approx(expected, abs=0.05)


def _cubic_kernel_mean(a, b):
  """E[(x y + 1)^3] for independent x ~ N(a, 1), y ~ N(b, 1) (1-D features): moments multiply."""
  m1, m2, m3 = (lambda m: m, lambda m: m * m + 1, lambda m: m**3 + 3 * m)
  return m3(a) * m3(b) + 3 * m2(a) * m2(b) + 3 * m1(a) * m1(b) + 1


def test_kid_is_unbiased_for_the_cubic_kernel_mmd():
  """Subsets of a large sample are nearly independent draws: their mean estimates the population MMD^2."""
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(40000, 1)), rng.normal(size=(40000, 1)) + 0.5
  expected = _cubic_kernel_mean(0, 0) + _cubic_kernel_mean(0.5, 0.5) - 2 * _cubic_kernel_mean(0, 0.5)
  mean, std = frechet.kernel_inception_distance(x, y, subsets=40, subset_size=1000)
  # The cubic kernel is heavy-tailed: one subset's estimate has std ~1 here, the mean of 40 ~0.16.
  assert mean == pytest.approx(expected, abs=3.5 * std / np.sqrt(40)) and 0.5 < std < 2.0
  same, same_std = frechet.kernel_inception_distance(x, rng.normal(size=(40000, 1)), subsets=20)
  assert abs(same) < 3.5 * same_std / np.sqrt(20)


def test_bad_inputs_fail_in_one_line():
  with pytest.raises(ValueError, match=r"means \[D\] and covariances \[D, D\]"):
    frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
  with pytest.raises(ValueError, match=r"KID needs \[N, D\] and \[M, D\] features"):
    frechet.kernel_inception_distance(np.zeros((5, 3)), np.zeros((5, 2)))
  assert frechet.distance_name("small_cnn") == "FD-small_cnn" and frechet.distance_name("inception_v3_fid") == "FID"


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory):
  """A quick-start classifier trained for a few steps: enough for features that see digits."""
  config = load_config_file("configs/quickstart.py")
  config.total_steps, config.eval_every_steps, config.log_every_steps = 40, 40, 40
  config.checkpoint_every_steps = 40
  workdir = tmp_path_factory.mktemp("classifier")
  trainer.train_and_evaluate(config, workdir)
  return ClassifierFeatures(workdir)


def test_fd_and_kid_grow_as_noise_is_added_to_real_digits(digits_classifier):
  train = tfds.as_numpy(tfds.load("digits", split="train", batch_size=-1))["image"]
  test = tfds.as_numpy(tfds.load("digits", split="test", batch_size=-1))["image"]
  reference = digits_classifier(train)
  assert reference.shape == (len(train), 128) and reference.dtype == np.float64  # small_cnn's head input
  rng = np.random.default_rng(0)
  distances, kids = [], []
  for noise in (0, 24, 64, 128):
    noisy = np.clip(test + rng.normal(0, noise, test.shape), 0, 255).astype(np.uint8)
    features = digits_classifier(noisy)
    distances.append(frechet.frechet_distance_of_features(reference, features))
    kids.append(frechet.kernel_inception_distance(reference, features, subsets=20, subset_size=300)[0])
  assert distances == sorted(distances) and distances[-1] > 5 * distances[0], distances
  assert kids == sorted(kids), kids
  with pytest.raises(ValueError, match=r"small_cnn features take uint8 images of shape \(N, 8, 8, 1\)"):
    digits_classifier(test.astype(np.float32))
