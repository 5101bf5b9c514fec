"""pytorch-fid's InceptionV3 (FID variant) in NNX against pytorch-fid itself; FID vs FD labels.

Reference numbers come from tests/inception_reference/make_fixture.py (pytorch-fid 0.3.0,
torchvision 0.29.1, torch 2.14.1 CPU): the package's `InceptionV3([3])` with
use_fid_inception=True, its weights download replaced by the synthetic weights of
inception_reference/synthetic.py, eval mode, two 32x40 images. Here the same synthetic weights go
through a .safetensors file (keys of pytorch-fid's .pth, its 1008-class fc included) into
jaxlab's network.
"""

import json
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx
from inception_reference.synthetic import (
    small_image,
    synthetic_images,
    synthetic_inception_weights,
)
from safetensors.numpy import save_file

from jaxlab.metrics import frechet, inception
from jaxlab.metrics.features import InceptionFeatures
from jaxlab.metrics.sample_quality import score

FIXTURE = pathlib.Path(__file__).parent / "inception_reference" / "pt_inception_fid"


@pytest.fixture(scope="module")
def reference():
  info = json.loads(FIXTURE.with_suffix(".json").read_text())
  with np.load(FIXTURE.with_suffix(".npz")) as arrays:
    info.update({key: arrays[key] for key in arrays.files})
  return info


@pytest.fixture(scope="module")
def weights(reference):
  return synthetic_inception_weights(reference["state_dict"], reference["seed"])


@pytest.fixture(scope="module")
def features(reference, weights, tmp_path_factory):
  """InceptionFeatures on the synthetic weights, read from a .safetensors file of the .pth's keys."""
  path = tmp_path_factory.mktemp("inception") / "pt_inception.safetensors"
  save_file(weights, str(path))
  return InceptionFeatures(path, batch_size=2)


def _abstract_model():
  with nnx.use_eager_sharding(False):
    return nnx.eval_shape(lambda: inception.InceptionV3(rngs=nnx.Rngs(0)))


def test_parameters_are_pytorch_fids_with_logical_axes(reference):
  model = _abstract_model()
  params = nnx.state(model, nnx.Param)
  count = sum(leaf.size for leaf in jax.tree.leaves(params))
  # pytorch-fid's InceptionV3([3]).parameters(): 21,785,568 (its .pth adds the unused 1008-class fc).
  assert count == reference["param_count"] == 21_785_568
  statistics = [k for k, _ in reference["state_dict"] if k.endswith(("running_mean", "running_var"))]
  assert len(jax.tree.leaves(nnx.state(model, nnx.BatchStat))) == len(statistics)
  for path, param in nnx.to_flat_state(params):
    axes = param.get_metadata().get("out_sharding")
    assert isinstance(axes, tuple) and len(axes) == param.ndim, (path, axes)


def test_features_equal_pytorch_fids(features, reference):
  images = synthetic_images(reference["seed"], *reference["image_size"])
  ours, theirs = features(images), reference["features"]
  assert ours.shape == (2, inception.FEATURES) and ours.dtype == np.float64
  scale = np.abs(theirs).max()
  np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3 * scale)
  # The two images' features differ far beyond the tolerance: the comparison sees the input.
  assert np.abs(theirs[0] - theirs[1]).max() > 0.1 * scale


def test_resize_equals_torch_interpolate_up_and_down(reference):
  image = small_image(reference["seed"] + 1, *reference["resize_input"])
  for name, size in reference["resize_sizes"].items():
    resized = np.asarray(inception.resize_bilinear(image, tuple(size)))
    np.testing.assert_allclose(resized, reference[f"resize_{name}"], atol=1e-6, err_msg=name)


def test_npz_with_the_wrapper_keys_loads_the_same_weights(features, reference, weights, tmp_path):
  """pytorch-fid's InceptionV3 wrapper names the same modules `blocks.<i>.<j>.`; no fc."""
  file_keys = [key for key, _ in reference["state_dict"] if not key.startswith("fc.")]
  wrapper_keys = reference["wrapper_keys"]
  assert len(wrapper_keys) == len(file_keys)
  renamed = {}
  for wrapper_key, file_key in zip(wrapper_keys, file_keys):
    assert wrapper_key.split(".")[3:] == file_key.split(".")[1:], (wrapper_key, file_key)
    renamed[wrapper_key] = weights[file_key]
  path = tmp_path / "inception_wrapper.npz"
  np.savez(path, **renamed)
  loaded = nnx.state(inception.inception_fid(path))
  expected = features._state  # pylint: disable=protected-access
  jax.tree.map(np.testing.assert_array_equal, loaded, expected)


def test_bad_weight_files_fail_in_one_line(tmp_path):
  corrupt = tmp_path / "corrupt.safetensors"
  corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json")
  broken_zip = tmp_path / "broken.npz"
  broken_zip.write_bytes(b"PK\x03\x04 truncated")
  for path, message in ((corrupt, "cannot read InceptionV3 weights .*corrupt.safetensors"),
                        (broken_zip, "cannot read InceptionV3 weights .*broken.npz"),
                        (tmp_path / "absent.pth", "cannot read InceptionV3 weights .*no checkpoint file"),
                        (tmp_path / "weights.txt", "unknown checkpoint format '.txt'")):
    if path.suffix == ".txt":
      path.write_text("x")
    with pytest.raises(ValueError, match=message) as error:
      inception.inception_fid(path)
    assert "\n" not in str(error.value)
  # Another network's state dict: its keys, and the parameters left without values, are named.
  resnet = tmp_path / "resnet.npz"
  np.savez(resnet, **{"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)})
  with pytest.raises(ValueError, match=r"1 checkpoint key\(s\) match no parameter: conv1.weight; "
                                       r"470 parameter\(s\) get no value: Conv2d_1a_3x3.bn.bias, ") as error:
    inception.inception_fid(resnet)
  assert "\n" not in str(error.value)


class _FeaturesStandIn:
  """The interface of features.ClassifierFeatures/InceptionFeatures with 8 cheap features.

  (A Fréchet distance on 2048 features takes two 2048x2048 eigendecompositions: seconds each.)
  """

  def __init__(self, name):
    self.name = name

  def __call__(self, images):
    pixels = images.reshape(len(images), -1).astype(np.float64) / 255.0
    return pixels @ np.random.default_rng(0).normal(size=(pixels.shape[1], 8))

  def logits(self, images):
    return np.zeros((len(images), 10))


def test_fid_label_only_with_inception_features(features):
  rng = np.random.default_rng(0)
  reference_images, samples = rng.integers(0, 256, (2, 6, 4, 4, 3), dtype=np.uint8)
  labels = np.full(len(samples), 10)  # unconditional: no accuracy
  classifier = _FeaturesStandIn("small_cnn")
  without = score(samples, labels, classifier, reference_images)
  assert set(without) == {"FD-small_cnn", "KID-small_cnn", "KID-small_cnn_std"}

  assert features.name == inception.NAME  # what InceptionFeatures' distances are labelled by
  inception_features = _FeaturesStandIn(features.name)
  both = score(samples, labels, classifier, reference_images, inception=inception_features)
  assert set(both) == set(without) | {"FID", "KID", "KID_std"}
  assert both["FD-small_cnn"] == without["FD-small_cnn"]
  assert both["FID"] == frechet.frechet_distance_of_features(inception_features(reference_images),
                                                             inception_features(samples)) > 0
  only = score(samples, labels, None, reference_images, inception=inception_features)
  assert only.keys() == {"FID", "KID", "KID_std"} and only["FID"] == both["FID"]


def test_grey_images_are_read_as_rgb(features, reference):
  rgb = synthetic_images(reference["seed"], *reference["image_size"])
  grey = np.round(rgb[..., :1] * 255).astype(np.uint8)
  np.testing.assert_allclose(features(grey), features(np.repeat(grey, 3, axis=-1).astype(np.float32) / 255),
                             rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match=r"InceptionV3 features take uint8 \(0..255\) or float"):
    features(grey[..., 0])


def test_frechet_distance_of_features_computes_in_float64():
  """Features far from 0 with a tiny mean shift: float32 arithmetic gets this FD wrong."""
  rng = np.random.default_rng(0)
  x = (1000.0 + rng.normal(size=(4000, 8))).astype(np.float32)  # features as a network returns them
  y = x.astype(np.float64) + 0.01  # same covariance, every mean 0.01 larger: FD = 8 * 0.01^2
  assert frechet.feature_statistics(x)[1].dtype == np.float64
  assert frechet.frechet_distance_of_features(x, y) == pytest.approx(8e-4, rel=1e-6)
  # The same statistics in float32 (as a float32 pipeline would compute them) miss by far more.
  mu1, mu2 = x.mean(0), y.astype(np.float32).mean(0)
  float32_fd = float(np.sum((mu1 - mu2) ** 2))
  assert abs(float32_fd - 8e-4) > 1e-6
