"""Writes the timm reference fixtures of the transformer and MetaFormer backbones.

Same files and format as `make_fixtures.py` (NAME.json: keys, shapes, parameter count; NAME.npz:
eval-mode logits for `synthetic_images(SEED, 2, size)`), with the weights of `synthetic_vit.py`.
Run offline where torch and timm are installed:

    python tests/timm_reference/make_fixtures_vit.py            # every model below
    python tests/timm_reference/make_fixtures_vit.py caformer_s12

References: timm's registered models where timm has the name. For the MetaFormer names timm lacks
(identityformer_s12, convformer_s12, caformer_s12, attentionformer_s12), timm's `MetaFormer` class
built with the authors' definitions (sail-sg/metaformer `metaformer_baselines.py`) in the S12
layout; see jaxlab/models/backbones/metaformer.py.

`vit_tiny_patch16_224_img64` is the position-embedding resampling check: the 224 checkpoint loaded
into timm's vit_tiny built for 64x64 inputs (timm's checkpoint filter resamples the embeddings),
logits on 64x64 images; the json notes the size the model is built for.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import timm
import torch
from timm.models import metaformer as timm_metaformer
from timm.models import vision_transformer as timm_vit

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # tests/, for timm_reference

from make_fixtures import BATCH, FIXTURES, IMAGE_SIZE, SEED
from synthetic import synthetic_images

from timm_reference.synthetic_vit import synthetic_state_dict

_S12 = dict(depths=(2, 2, 6, 2), dims=(64, 128, 320, 512))
_LN2D, _LN = timm_metaformer.LayerNorm2dNoBias, timm_metaformer.LayerNormNoBias
_SEP, _ATTN = timm_metaformer.SepConv, timm_metaformer.Attention
METAFORMER_S12 = {
    "identityformer_s12": dict(token_mixers=torch.nn.Identity,
                               norm_layers=timm_metaformer.GroupNorm1NoBias, use_mlp_head=False),
    "convformer_s12": dict(token_mixers=_SEP, norm_layers=_LN2D),
    "caformer_s12": dict(token_mixers=[_SEP, _SEP, _ATTN, _ATTN],
                         norm_layers=[_LN2D] * 2 + [_LN] * 2),
    "attentionformer_s12": dict(token_mixers=_ATTN, norm_layers=_LN),
}
TIMM = ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224",
        "deit_small_patch16_224", "mixer_s16_224", "swin_tiny_patch4_window7_224",
        "poolformerv2_s12", "convformer_s18", "caformer_s18")
RESAMPLED = {"vit_tiny_patch16_224_img64": ("vit_tiny_patch16_224", 64)}
MODELS = TIMM + tuple(METAFORMER_S12) + tuple(RESAMPLED)


def write_fixture(name: str) -> None:
  torch.manual_seed(0)
  size = IMAGE_SIZE
  if name in METAFORMER_S12:
    model = timm_metaformer.MetaFormer(**_S12, **METAFORMER_S12[name])
    source = f"timm {timm.__version__} MetaFormer class, S12 layout of the authors' definition"
  elif name in RESAMPLED:
    base, size = RESAMPLED[name]
    model = timm.create_model(base, pretrained=False, img_size=size)
    source = f"timm {timm.__version__} {base}(img_size={size}) loading the 224 checkpoint"
  else:
    model = timm.create_model(name, pretrained=False)
    source = f"timm {timm.__version__}"
  if name in RESAMPLED:
    reference = timm.create_model(RESAMPLED[name][0], pretrained=False)
    spec = [(key, list(value.shape)) for key, value in reference.state_dict().items()]
    weights = {k: torch.from_numpy(v) for k, v in synthetic_state_dict(spec).items()}
    weights = timm_vit.checkpoint_filter_fn(weights, model)  # resamples pos_embed
  else:
    spec = [(key, list(value.shape)) for key, value in model.state_dict().items()]
    weights = {k: torch.from_numpy(v) for k, v in synthetic_state_dict(spec).items()}
  model.load_state_dict(weights, strict=True)
  model.eval()
  images = synthetic_images(SEED, BATCH, size)
  with torch.no_grad():
    logits = model(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()).numpy()
  assert np.all(np.isfinite(logits)), name
  info = {
      "model": name,
      "reference": f"{source}, torch {torch.__version__}",
      "param_count": sum(p.numel() for p in model.parameters()),
      "image_size": size, "batch": BATCH, "seed": SEED,
      "weights": "tests/timm_reference/synthetic_vit.py",  # not synthetic.py's values
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
