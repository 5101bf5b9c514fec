"""Scores generated digits (or any images) with an in-project classifier run.

  python -m jaxlab.metrics.sample_quality --samples=DIR/samples.npz --classifier=WORKDIR

Prints, for class-conditional samples, the classifier's accuracy on each class (the share of
samples of class c that it labels c) and overall; and FD-<classifier> and KID between the
classifier's penultimate features of the samples and of the classifier's training split. These
are not FID (see jaxlab/metrics/frechet.py). Writes the same as JSON with --json=FILE.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from absl import app, flags

# allow_override: the CLIs share flag names (workdir, step, out, ...) and tests import several of
# them into one process; only the module run as __main__ parses its flags.
_SAMPLES = flags.DEFINE_string("samples", None, "samples.npz written by jaxlab.sample.", allow_override=True)
_CLASSIFIER = flags.DEFINE_string("classifier", None, "Workdir of a classification run on the same data.", allow_override=True)
_JSON = flags.DEFINE_string("json", None, "Also write the scores to this JSON file.", allow_override=True)


def score(images: np.ndarray, labels: np.ndarray, classifier, reference: np.ndarray) -> dict:
  """Per-class and overall accuracy (labels < number of classes), FD-<name> and KID vs `reference`."""
  from jaxlab.metrics import frechet  # pylint: disable=import-outside-toplevel
  result = {}
  predicted = classifier.logits(images).argmax(-1)
  conditional = labels < classifier.logits(images[:1]).shape[-1]
  if conditional.any():
    per_class = {int(c): float(np.mean(predicted[labels == c] == c)) for c in np.unique(labels[conditional])}
    result["accuracy_per_class"] = per_class
    result["accuracy"] = float(np.mean(predicted[conditional] == labels[conditional]))
  features, reference_features = classifier(images), classifier(reference)
  result[frechet.distance_name(classifier.name)] = frechet.frechet_distance_of_features(reference_features, features)
  kid, kid_std = frechet.kernel_inception_distance(reference_features, features,
                                                   subset_size=min(1000, len(images), len(reference)))
  result[f"KID-{classifier.name}"], result[f"KID-{classifier.name}_std"] = kid, kid_std
  return result


def main(argv):
  if len(argv) > 1 or not _SAMPLES.value or not _CLASSIFIER.value:
    print("error: usage: python -m jaxlab.metrics.sample_quality --samples=FILE.npz --classifier=WORKDIR",
          file=sys.stderr)
    sys.exit(2)
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  from jaxlab.metrics.features import ClassifierFeatures  # pylint: disable=import-outside-toplevel
  from jaxlab.stages import InitFromError  # pylint: disable=import-outside-toplevel
  try:
    data = np.load(_SAMPLES.value)
    classifier = ClassifierFeatures(_CLASSIFIER.value)
  except (OSError, InitFromError, ValueError) as e:
    print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
    sys.exit(2)
  ds = classifier.dataset
  reference = tfds.as_numpy(tfds.load(ds.name, split=ds.train_split, data_dir=ds.data_dir, batch_size=-1))["image"]
  result = score(data["images"], data["labels"], classifier, reference)
  if "accuracy" in result:
    print("per-class accuracy: " + "  ".join(f"{c}: {a:.2f}" for c, a in result["accuracy_per_class"].items()))
    print(f"accuracy of the classifier on the conditional samples: {result['accuracy']:.4f}")
  for key, value in result.items():
    if key.startswith(("FD-", "FID")):
      print(f"{key} (vs the {ds.train_split} split, {len(reference)} images): {value:.4f}")
  kid_key = f"KID-{classifier.name}"
  print(f"{kid_key}: {result[kid_key]:.5f} ± {result[kid_key + '_std']:.5f}")
  if _JSON.value:
    with open(_JSON.value, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  app.run(main)
