"""Weight import from timm/PyTorch state dicts (jaxlab.convert): logits equal timm's at 224x224.

Reference logits come from tests/timm_reference/make_fixtures.py (timm 1.0.31 / torchvision 0.29,
torch 2.14 CPU; random-init models loaded with the synthetic weights of synthetic.py, eval mode,
batch 2 at 224x224). Here the same synthetic weights go through a .safetensors file, are read with
`jaxlab.convert.load_state_dict` (no torch) and mapped into the jaxlab model. The structure is built
with nnx.eval_shape (see backbone_harness.py) and one model is built for real through
`models.create(..., pretrained=PATH)`. torch is optional: the .pth test runs only where it is installed.
"""

import json
import pathlib
import sys

import backbone_harness as harness
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file
from timm_reference.synthetic import synthetic_images, synthetic_state_dict

from jaxlab import models
from jaxlab.convert import load_state_dict
from jaxlab.convert import timm as timm_convert

FIXTURES = pathlib.Path(__file__).parent / "timm_reference" / "fixtures"
NAMES = ("alexnet", "vgg13", "resnet18", "resnet34", "resnet50", "resnet101", "densenet121",
         "mobilenetv2_100", "efficientnet_b0", "repvgg_a1", "convnext_tiny", "convnextv2_tiny")
RELATIVE_TOLERANCE = 1e-3


def _fixture(name):
  info = json.loads((FIXTURES / f"{name}.json").read_text())
  return info, np.load(FIXTURES / f"{name}.npz")["logits"]


def _checkpoint(name, directory):
  """The fixture's synthetic weights as a .safetensors file."""
  info, _ = _fixture(name)
  path = directory / f"{name}.safetensors"
  save_file(synthetic_state_dict(info["state_dict"]), str(path))
  return path


def _eval_logits(model, info):
  """Logits of the fixture's first image (CPU time: the second adds nothing the first misses)."""
  harness.materialize(model)  # what the checkpoint does not hold: rng streams of dropout layers
  model.eval()
  images = synthetic_images(info["seed"], info["batch"], info["image_size"])
  return np.asarray(harness.jit_apply(model, jnp.asarray(images[:1])))


def _relative_error(logits, reference):
  reference = reference[:len(logits)]
  return float(np.max(np.abs(logits - reference)) / np.max(np.abs(reference)))


@pytest.mark.parametrize("name", NAMES)
def test_imported_weights_give_timm_logits(name, tmp_path):
  info, reference = _fixture(name)
  model = harness.abstract(name, 1000)
  timm_convert.load_pretrained(model, _checkpoint(name, tmp_path), name=name)
  assert harness.param_count(model) == info["param_count"]
  # Every parameter and batch statistic came from the checkpoint.
  assert not any(isinstance(v, jax.ShapeDtypeStruct)
                 for v in jax.tree.leaves(nnx.state(model, (nnx.Param, nnx.BatchStat))))
  assert _relative_error(_eval_logits(model, info), reference) < RELATIVE_TOLERANCE


def test_create_pretrained_loads_into_a_built_model(tmp_path):
  info, reference = _fixture("resnet18")
  model = models.create("resnet18", num_classes=1000, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")),
                        pretrained=_checkpoint("resnet18", tmp_path))
  assert _relative_error(_eval_logits(model, info), reference) < RELATIVE_TOLERANCE


def test_other_num_classes_skips_the_head_with_a_note(tmp_path, capsys):
  path = _checkpoint("resnet18", tmp_path)
  model = harness.materialize(harness.abstract("resnet18", 10))  # random values everywhere
  head_before = np.asarray(model.fc.kernel[...])
  timm_convert.load_pretrained(model, path, name="resnet18")
  assert "checkpoint head has 1000 classes, the model 10" in capsys.readouterr().err
  chex.assert_trees_all_equal(np.asarray(model.fc.kernel[...]), head_before)  # kept
  weights = load_state_dict(path)
  # The body is loaded, in jaxlab's layout (OIHW -> HWIO).
  np.testing.assert_array_equal(model.layer4[1].conv2.kernel[...],
                                weights["layer4.1.conv2.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(model.layer1[0].bn1.var[...], weights["layer1.0.bn1.running_var"])


def test_mismatches_are_one_line_naming_every_problem(tmp_path):
  info, _ = _fixture("resnet18")
  weights = synthetic_state_dict(info["state_dict"])
  weights["layer1.0.conv1.weight"] = weights["layer1.0.conv1.weight"][:32]  # 32 instead of 64
  weights["layer9.0.conv1.weight"] = np.zeros((1,), np.float32)  # no such module
  del weights["bn1.running_var"]
  with pytest.raises(ValueError) as error:
    timm_convert.load_timm_state_dict(harness.abstract("resnet18", 1000), weights, name="resnet18")
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith("cannot load state dict into resnet18: ")
  assert "1 checkpoint key(s) match no parameter: layer9.0.conv1.weight" in message
  assert "1 parameter(s) get no value: bn1.var" in message
  assert "layer1.0.conv1.weight (3, 3, 64, 32) vs (3, 3, 64, 64)" in message


def test_a_cifar_checkpoint_does_not_load_into_the_imagenet_form(tmp_path):
  # Same names, another stem: a shape mismatch, not a silent partial load.
  info, _ = _fixture("resnet18")
  weights = synthetic_state_dict(info["state_dict"])
  weights["conv1.weight"] = np.zeros((64, 3, 3, 3), np.float32)
  with pytest.raises(ValueError, match=r"conv1.weight \(3, 3, 3, 64\) vs \(7, 7, 3, 64\)"):
    timm_convert.load_timm_state_dict(harness.abstract("resnet18", 1000), weights)


class _Tiny(nnx.Module):
  """Exercises the generic rules no convnet above needs."""

  def __init__(self, rngs):
    self.proj = nnx.Conv(4, 6, (1, 1), rngs=rngs)  # receives a Linear's (6, 4) weight
    self.fc = nnx.Linear(6, 3, rngs=rngs)  # receives a 1x1 conv's (3, 6, 1, 1) weight
    self.token = nnx.Param(jnp.zeros((5,)))  # receives timm's (1, 1, 5)
    self.blocks = nnx.Sequential(nnx.LayerNorm(6, rngs=rngs))


def test_generic_rules_linear_conv_unit_dims_and_hooks(monkeypatch):
  rng = np.random.default_rng(0)
  weights = {"proj.weight": rng.standard_normal((6, 4)), "proj.bias": np.ones(6),
             "fc.weight": rng.standard_normal((3, 6, 1, 1)), "fc.bias": np.ones(3),
             "cls_token": np.arange(5.0).reshape(1, 1, 5),
             "blocks.0.weight": np.full(6, 2.0), "blocks.0.bias": np.zeros(6)}
  monkeypatch.setattr(timm_convert, "_HOOKS", [])
  seen = []

  @timm_convert.hook("tiny_*")
  def rename_token(state_dict, model):
    seen.append(type(model).__name__)
    state_dict = dict(state_dict)
    state_dict["token"] = state_dict.pop("cls_token")
    return state_dict

  model = timm_convert.load_timm_state_dict(_Tiny(nnx.Rngs(0)), weights, name="tiny_model")
  assert seen == ["_Tiny"]
  np.testing.assert_allclose(model.proj.kernel[...], weights["proj.weight"].T[None, None])
  np.testing.assert_allclose(model.fc.kernel[...], weights["fc.weight"][:, :, 0, 0].T)
  np.testing.assert_allclose(model.token[...], np.arange(5.0))
  np.testing.assert_allclose(model.blocks.layers[0].scale[...], 2.0)
  # Without the hook (another name), cls_token has nowhere to go.
  with pytest.raises(ValueError, match="match no parameter: cls_token"):
    timm_convert.load_timm_state_dict(_Tiny(nnx.Rngs(0)), weights, name="other")


def test_safetensors_reader_strips_data_parallel_prefix(tmp_path):
  path = tmp_path / "w.safetensors"
  save_file({"module.fc.weight": np.ones((2, 3), np.float32)}, str(path))
  assert list(load_state_dict(path)) == ["fc.weight"]


def test_reader_errors_are_one_line(tmp_path, monkeypatch):
  with pytest.raises(ValueError, match="no checkpoint file at"):
    load_state_dict(tmp_path / "missing.safetensors")
  (tmp_path / "w.h5").write_bytes(b"")
  with pytest.raises(ValueError, match=r"unknown checkpoint format '.h5' .*valid: .safetensors, .npz"):
    load_state_dict(tmp_path / "w.h5")
  (tmp_path / "w.npz").write_bytes(b"cut")
  with pytest.raises(ValueError, match=r"^cannot read .*w.npz as .npz arrays \(\w+Error: .*\)$"):
    load_state_dict(tmp_path / "w.npz")
  np.savez(tmp_path / "ok.npz", **{"fc.weight": np.ones((2, 3), np.float32)})
  assert load_state_dict(tmp_path / "ok.npz")["fc.weight"].shape == (2, 3)
  (tmp_path / "w.pth").write_bytes(b"")
  monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
  with pytest.raises(ValueError, match=r"needs torch: pip install jaxlab\[torch\]"):
    load_state_dict(tmp_path / "w.pth")


def test_pth_checkpoint_needs_torch_and_loads_with_it(tmp_path):
  # CI has no torch (the .safetensors path above needs none): there the .pth path must say, in
  # one line, what to install; where torch is installed it must load the tensors.
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    (tmp_path / "w.pth").write_bytes(b"not read without torch")
    with pytest.raises(ValueError, match=r"^reading w.pth needs torch: pip install jaxlab\[torch\]"):
      load_state_dict(tmp_path / "w.pth")
    return
  weights = {"fc.weight": np.arange(6.0, dtype=np.float32).reshape(2, 3)}
  torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in weights.items()}, "epoch": 3},
             tmp_path / "w.pth")
  loaded = load_state_dict(tmp_path / "w.pth")
  assert list(loaded) == ["fc.weight"]
  np.testing.assert_array_equal(loaded["fc.weight"], weights["fc.weight"])
