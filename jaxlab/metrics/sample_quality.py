"""Scores generated digits (or any images) with an in-project classifier run and/or InceptionV3.

  python -m jaxlab.metrics.sample_quality --samples=DIR/samples.npz --classifier=WORKDIR
  python -m jaxlab.metrics.sample_quality --samples=DIR/samples.npz --inception=pt_inception-2015-12-05-6726825d.pth \
      --reference=cifar10:train

Prints, with --classifier, for class-conditional samples the classifier's accuracy on each class
(the share of samples of class c that it labels c) and overall; and FD-<classifier> and
KID-<classifier> between the classifier's penultimate features of the samples and of the
reference images. These are not FID (see jaxlab/metrics/frechet.py). With --inception=PATH
(pytorch-fid's weights file, see jaxlab/metrics/inception.py) it also prints FID and KID on
InceptionV3 pool3 features. The reference images are the TFDS split --reference=NAME[:SPLIT]
(default: the classifier's dataset, train split). Writes the same as JSON with --json=FILE.
"""

from __future__ import annotations

import json

import numpy as np
from absl import app, flags

from jaxlab.cli import fail

# allow_override: the CLIs share flag names (workdir, step, out, ...) and tests import several of
# them into one process; only the module run as __main__ parses its flags.
_SAMPLES = flags.DEFINE_string("samples", None, "samples.npz written by jaxlab.sample.", allow_override=True)
_CLASSIFIER = flags.DEFINE_string("classifier", None, "Workdir of a classification run on the same data.", allow_override=True)
_JSON = flags.DEFINE_string("json", None, "Also write the scores to this JSON file.", allow_override=True)
_INCEPTION = flags.DEFINE_string("inception", None, "pytorch-fid's InceptionV3 weights (.pth, or the same state dict "
                                 "as .safetensors/.npz): adds FID and KID.", allow_override=True)
_REFERENCE = flags.DEFINE_string("reference", None, "Reference images, a TFDS split NAME[:SPLIT] (default: the "
                                 "classifier's dataset, train split).", allow_override=True)


def kid_name(extractor: str) -> str:
  """'KID' on pytorch-fid's InceptionV3 features (next to FID), 'KID-<extractor>' on any other."""
  from jaxlab.metrics import frechet  # pylint: disable=import-outside-toplevel
  return "KID" if frechet.distance_name(extractor) == "FID" else f"KID-{extractor}"


def score(images: np.ndarray, labels: np.ndarray, classifier, reference: np.ndarray, inception=None) -> dict:
  """Scores `images` against `reference` with each extractor given (`classifier` may be None).

  With the classifier: per-class and overall accuracy (labels < number of classes),
  FD-<name> and KID-<name>; with `inception` (features.InceptionFeatures): FID and KID.
  """
  from jaxlab.metrics import frechet  # pylint: disable=import-outside-toplevel
  result = {}
  if classifier is not None:
    predicted = classifier.logits(images).argmax(-1)
    conditional = labels < classifier.logits(images[:1]).shape[-1]
    if conditional.any():
      per_class = {int(c): float(np.mean(predicted[labels == c] == c)) for c in np.unique(labels[conditional])}
      result["accuracy_per_class"] = per_class
      result["accuracy"] = float(np.mean(predicted[conditional] == labels[conditional]))
  for extractor in (classifier, inception):
    if extractor is None:
      continue
    features, reference_features = extractor(images), extractor(reference)
    result[frechet.distance_name(extractor.name)] = frechet.frechet_distance_of_features(reference_features,
                                                                                         features)
    kid, kid_std = frechet.kernel_inception_distance(reference_features, features,
                                                     subset_size=min(1000, len(images), len(reference)))
    key = kid_name(extractor.name)
    result[key], result[key + "_std"] = kid, kid_std
  return result


def load_reference(spec: str, data_dir: str | None = None) -> np.ndarray:
  """All images of the TFDS split 'NAME[:SPLIT]' (split default: train), uint8 NHWC."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  import jaxlab.data  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import  (registers `digits`)
  name, _, split = spec.partition(":")
  return tfds.as_numpy(tfds.load(name, split=split or "train", data_dir=data_dir, batch_size=-1))["image"]


def main(argv):
  if len(argv) > 1 or not _SAMPLES.value or not (_CLASSIFIER.value or _INCEPTION.value):
    fail("usage: python -m jaxlab.metrics.sample_quality --samples=FILE.npz [--classifier=WORKDIR] "
         "[--inception=WEIGHTS --reference=DATASET[:SPLIT]]")
  if not _CLASSIFIER.value and not _REFERENCE.value:
    fail("--inception without --classifier needs --reference=DATASET[:SPLIT] (e.g. cifar10:train)")
  from absl import logging  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS["verbosity"].present:  # TFDS and Orbax note every file they open at INFO
    logging.set_verbosity(logging.ERROR)
  from jaxlab.metrics.features import ClassifierFeatures, InceptionFeatures  # pylint: disable=import-outside-toplevel
  from jaxlab.stages import InitFromError  # pylint: disable=import-outside-toplevel
  try:
    data = np.load(_SAMPLES.value)
    classifier = ClassifierFeatures(_CLASSIFIER.value) if _CLASSIFIER.value else None
    inception = InceptionFeatures(_INCEPTION.value) if _INCEPTION.value else None
    if _REFERENCE.value:
      reference_name, reference = _REFERENCE.value, load_reference(_REFERENCE.value)
    else:
      ds = classifier.dataset
      reference_name = f"{ds.name}:{ds.train_split}"
      reference = load_reference(reference_name, ds.data_dir)
  except (OSError, InitFromError, ValueError) as e:
    fail(str(e).splitlines()[0])
  result = score(data["images"], data["labels"], classifier, reference, inception=inception)
  if "accuracy" in result:
    print("per-class accuracy: " + "  ".join(f"{c}: {a:.2f}" for c, a in result["accuracy_per_class"].items()))
    print(f"accuracy of the classifier on the conditional samples: {result['accuracy']:.4f}")
  for key, value in result.items():
    if key.startswith(("FD-", "FID")):
      print(f"{key} (vs {reference_name}, {len(reference)} images): {value:.4f}")
  for extractor in (classifier, inception):
    if extractor is not None:
      kid_key = kid_name(extractor.name)
      print(f"{kid_key}: {result[kid_key]:.5f} ± {result[kid_key + '_std']:.5f}")
  if _JSON.value:
    with open(_JSON.value, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  app.run(main)
