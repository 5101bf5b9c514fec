"""docs/reference.md is what scripts/gen_reference.py generates now (it cannot go stale), and the
name filters it documents: `available(pattern)` of models, optimizers and datasets,
`jaxlab.optim.describe` and `help(jaxlab.optim.create)`."""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest
import tensorflow_datasets as tfds

from jaxlab import data, models, optim
from jaxlab.names import matching

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "scripts" / "gen_reference.py")
gen_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_reference)

STALE = "docs/reference.md is stale: run `python scripts/gen_reference.py` and commit the page"


@pytest.fixture(scope="module")
def parts() -> dict[str, str]:
  return gen_reference.render()


def _sections(page: str) -> dict[str, str]:
  """A page cut at its '## ' headings (losslessly), by the heading's first word."""
  chunks = re.split(r"(?m)^(?=## )", page)
  return {"header": chunks[0], **{chunk.split()[1].lower(): chunk for chunk in chunks[1:]}}


def _tfds_version(datasets_section: str) -> str:
  found = re.search(r"builders of TFDS (\S+) ", datasets_section)
  assert found, "the datasets section names the TFDS version whose builders it lists"
  return found.group(1)


def test_committed_page_is_what_the_generator_writes(parts):
  committed = _sections(gen_reference.PAGE.read_text())
  regenerated = _sections(gen_reference.page(parts))
  assert list(committed) == ["header", "models", "optimizers", "schedules", "weight", "tasks", "datasets"]
  assert list(committed) == list(regenerated), STALE
  for name, text in committed.items():
    if name == "datasets" and _tfds_version(text) != tfds.__version__:
      continue  # another TFDS release has other builders; the rest must match all the same
    assert text == regenerated[name], f"section {name}: {STALE}"


def test_page_lists_every_name(parts):
  from jaxlab.models import registry  # pylint: disable=import-outside-toplevel
  for name in models.available():  # jaxlab's: other tests register toy models in this process
    if registry.factory_of(name).__module__.startswith("jaxlab."):
      assert f"| `{name}` |" in parts["models"]
  for name in optim.available():
    assert f"| `{name}` |" in parts["optimizers"]
  assert "`lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.01, amsgrad=False`" in parts["optimizers"]
  for name in optim.available_schedules():
    assert f"    {name} " in parts["schedules"]
  for name in set(optim.available_averaging()) - {"none"}:
    assert f"| `{name}` |" in parts["averaging"]
  assert "| `config.task.label_smoothing` | `0.0` |" in parts["tasks"]
  assert "`digits`, " in parts["datasets"] and "`cifar10`" in parts["datasets"]


def test_matching_is_fnmatch_any_of_several_and_case_insensitive():
  names = ["convnext_tiny", "convnextv2_tiny", "resnet18", "resnet18_cifar", "vit_tiny"]
  assert matching(names) == names
  assert matching(names, "convnext*") == ["convnext_tiny", "convnextv2_tiny"]
  assert matching(names, ["RESNET*", "*tiny"]) == ["convnext_tiny", "convnextv2_tiny", "resnet18",
                                                    "resnet18_cifar", "vit_tiny"]
  assert matching(names, "resnet18") == ["resnet18"]  # no wildcard: that name only
  assert matching(names, "nothing*") == []
  with pytest.raises(TypeError, match="pattern must be a string or a list of strings"):
    matching(names, 3)


def test_model_and_optimizer_filters():
  assert models.available("convnext*") == ["convnext_tiny", "convnextv2_tiny"]
  assert models.available(["resnet*_cifar", "small_cnn"]) == ["resnet18_cifar", "resnet34_cifar", "small_cnn"]
  assert set(models.available("dit_*")) < set(models.available())
  assert optim.available("adam*") == ["adam", "adamax", "adamp", "adamw"]
  assert optim.available(["sgd*", "lamb"]) == ["lamb", "sgd", "sgdp"]
  assert optim.available() == sorted(optim.available())


def test_datasets_are_image_classification_that_fit():
  names = data.available_datasets()
  assert names[0] == "digits" and {"cifar10", "cifar100", "mnist", "imagenet2012"} <= set(names)
  every = data.available_datasets(every_builder=True)
  assert set(names) < set(every) and len(every) > 2 * len(names)
  # Text, audio and detection builders are left out (TFDS has them all).
  assert not {"imdb_reviews", "librispeech", "coco", "glue"} & set(names)
  assert {"imdb_reviews", "coco"} <= set(every)
  assert data.available_datasets("cifar10*") == [n for n in names if n.startswith("cifar10")]
  assert data.available_datasets(["DIGITS", "*mnist"]) == ["digits", "emnist", "fashion_mnist", "kmnist",
                                                          "mnist", "pneumonia_mnist"]


def test_describe_and_help_list_hyperparameters_and_defaults():
  assert optim.describe("adamw") == ("adamw — torch.optim.AdamW: lr=0.001, betas=(0.9, 0.999), eps=1e-08, "
                                     "weight_decay=0.01, amsgrad=False")
  assert "hessian_every: the train step's" in optim.describe("sophia")
  assert "hyperparameters of the base_optimizer it wraps" in optim.describe("sam")
  with pytest.raises(ValueError, match=r"^unknown optimizer 'adamx'; valid: adabelief, "):
    optim.describe("adamx")
  doc = optim.create.__doc__
  for name in optim.available():
    assert f"\n  - {optim.describe(name)}\n" in doc
  assert "entry(name).defaults" in doc
