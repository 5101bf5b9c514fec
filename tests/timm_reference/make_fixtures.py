"""Writes the timm/torchvision reference fixtures the weight-import tests compare against.

Run offline, where torch, torchvision and timm are installed (not needed by the tests):

    python tests/timm_reference/make_fixtures.py            # every model below
    python tests/timm_reference/make_fixtures.py resnet50   # some of them

For each model it builds the reference (random init, no download), loads the synthetic weights of
`synthetic.py` with `load_state_dict(strict=True)`, and writes into fixtures/:
  NAME.json  the state dict's keys and shapes (in order), the parameter count, versions;
  NAME.npz   `logits`: eval-mode logits (float32, all classes) for `synthetic_images(SEED, 2, 224)`.
The tests rebuild the same weights from the JSON, load them into the jaxlab model through a
.safetensors file and compare logits.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import timm
import torch
import torchvision
from synthetic import synthetic_images, synthetic_state_dict  # this script's directory

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
IMAGE_SIZE = 224
BATCH = 2
SEED = 0

# name -> builder of the reference model. timm has no AlexNet: torchvision's is the reference.
TORCHVISION = {"alexnet": torchvision.models.alexnet}
MODELS = ("alexnet", "vgg13", "resnet18", "resnet34", "resnet50", "resnet101", "densenet121",
          "mobilenetv2_100", "efficientnet_b0", "repvgg_a1", "convnext_tiny", "convnextv2_tiny")


def reference_model(name: str) -> tuple[torch.nn.Module, str]:
  if name in TORCHVISION:
    return TORCHVISION[name](weights=None), f"torchvision {torchvision.__version__}"
  return timm.create_model(name, pretrained=False), f"timm {timm.__version__}"


def write_fixture(name: str) -> None:
  torch.manual_seed(0)
  model, source = reference_model(name)
  spec = [(key, list(value.shape)) for key, value in model.state_dict().items()]
  weights = synthetic_state_dict(spec)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
  model.eval()
  images = synthetic_images(SEED, BATCH, IMAGE_SIZE)
  with torch.no_grad():
    logits = model(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()).numpy()
  assert np.all(np.isfinite(logits)), name
  info = {
      "model": name,
      "reference": f"{source}, torch {torch.__version__}",
      "param_count": sum(p.numel() for p in model.parameters()),
      "image_size": IMAGE_SIZE, "batch": BATCH, "seed": SEED,
      "state_dict": spec,
  }
  FIXTURES.mkdir(exist_ok=True)
  (FIXTURES / f"{name}.json").write_text(json.dumps(info, separators=(",", ":")) + "\n")
  np.savez_compressed(FIXTURES / f"{name}.npz", logits=logits.astype(np.float32))
  print(f"{name}: {info['param_count']:,} params, |logits| max {np.abs(logits).max():.3g}, "
        f"std {logits.std():.3g}")


if __name__ == "__main__":
  torch.set_num_threads(2)
  for model_name in sys.argv[1:] or MODELS:
    write_fixture(model_name)
