"""Writes the pytorch-fid reference fixture that tests/test_inception_fid.py compares against.

Run offline, where torch, torchvision and pytorch-fid are installed (not needed by the tests):

    pip install torch torchvision pytorch-fid==0.3.0
    python tests/inception_reference/make_fixture.py

pytorch-fid's `InceptionV3([3])` (use_fid_inception=True) builds torchvision's Inception3 with the
FID blocks and loads `pt_inception-2015-12-05-6726825d.pth` from the release URL. Here the
download is replaced by the synthetic weights of synthetic.py (numpy, seeded by each key), so the package's own code path builds and loads the model with
`load_state_dict(strict=True)` and nothing is downloaded. Written next to this script:
  pt_inception_fid.json  the .pth state dict's keys and shapes (in order; the file the users load),
                         the keys of the `InceptionV3` wrapper's own state dict, parameter counts,
                         versions;
  pt_inception_fid.npz   `features`: [2, 2048] pool3 features of `synthetic_images()`; `resize_*`:
                         F.interpolate(bilinear, align_corners=False) of a small image, up and down.
The test rebuilds the same weights from the JSON, loads them into jaxlab's InceptionV3 through a
.safetensors file and compares features.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytorch_fid
import torch
import torch.nn.functional as F
import torchvision
from pytorch_fid import inception as fid_inception

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE.parent))  # tests/, as pytest puts it on the path
from inception_reference.synthetic import (
    small_image,
    synthetic_images,
    synthetic_inception_weights,
)

SEED = 0
IMAGE_SIZE = (32, 40)  # small non-square images, as diffusion samples are small
RESIZE_INPUT = (7, 9)
RESIZE_SIZES = {"up": (11, 13), "down": (5, 4)}


def fid_inception_spec() -> list[tuple[str, list[int]]]:
  """Keys and shapes of the state dict in pt_inception-2015-12-05-6726825d.pth.

  That file is the state dict of `fid_inception_v3()`'s model; it is built here the way the
  package builds it, minus the download (whose strict load below checks this spec).
  """
  model = fid_inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
  model.Mixed_5b = fid_inception.FIDInceptionA(192, pool_features=32)
  model.Mixed_5c = fid_inception.FIDInceptionA(256, pool_features=64)
  model.Mixed_5d = fid_inception.FIDInceptionA(288, pool_features=64)
  model.Mixed_6b = fid_inception.FIDInceptionC(768, channels_7x7=128)
  model.Mixed_6c = fid_inception.FIDInceptionC(768, channels_7x7=160)
  model.Mixed_6d = fid_inception.FIDInceptionC(768, channels_7x7=160)
  model.Mixed_6e = fid_inception.FIDInceptionC(768, channels_7x7=192)
  model.Mixed_7b = fid_inception.FIDInceptionE_1(1280)
  model.Mixed_7c = fid_inception.FIDInceptionE_2(2048)
  return [(key, list(value.shape)) for key, value in model.state_dict().items()]


def main() -> None:
  torch.manual_seed(0)
  spec = fid_inception_spec()
  weights = synthetic_inception_weights(spec, seed=SEED)
  # fid_inception_v3() loads whatever this returns with load_state_dict (strict).
  fid_inception.load_state_dict_from_url = lambda *args, **kwargs: {
      k: torch.from_numpy(v) for k, v in weights.items()}
  model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
  images = synthetic_images(SEED, *IMAGE_SIZE)
  with torch.no_grad():
    features = model(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())[0]
  features = features[:, :, 0, 0].numpy()
  assert features.shape == (2, 2048) and np.all(np.isfinite(features))

  small = torch.from_numpy(small_image(SEED + 1, *RESIZE_INPUT)).permute(0, 3, 1, 2)
  resized = {f"resize_{name}": F.interpolate(small, size=size, mode="bilinear", align_corners=False)
             .permute(0, 2, 3, 1).numpy() for name, size in RESIZE_SIZES.items()}

  info = {
      "reference": (f"pytorch-fid {pytorch_fid.__version__} InceptionV3([3]) with use_fid_inception=True, "
                    f"torchvision {torchvision.__version__}, torch {torch.__version__}; synthetic weights"),
      "param_count": sum(p.numel() for p in model.parameters()),
      "pth_param_count": sum(int(np.prod(shape)) for key, shape in spec
                             if not key.endswith(("running_mean", "running_var", "num_batches_tracked"))),
      "seed": SEED, "image_size": IMAGE_SIZE,
      "resize_input": RESIZE_INPUT, "resize_sizes": RESIZE_SIZES,
      "state_dict": spec,
      "wrapper_keys": list(model.state_dict().keys()),
  }
  (HERE / "pt_inception_fid.json").write_text(json.dumps(info, separators=(",", ":")) + "\n")
  np.savez_compressed(HERE / "pt_inception_fid.npz", features=features.astype(np.float32), **resized)
  print(f"InceptionV3 (FID): {info['param_count']:,} parameters ({info['pth_param_count']:,} in the .pth "
        f"with its 1008-class fc); features mean {features.mean():.4g}, std {features.std():.4g}, "
        f"max {features.max():.4g}")


if __name__ == "__main__":
  torch.set_num_threads(2)
  main()
