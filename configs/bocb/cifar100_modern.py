"""The coupling study's CIFAR-100 protocol, modern recipe: 20 backbones x 20 optimizers (accelerators).

  python -m jaxlab.study --config=configs/bocb/cifar100_modern.py --workdir=workdirs/bocb_modern

The classic protocol's backbones, optimizers, lr grids and budget (configs/bocb/cifar100_classic.py:
1200 cells of 200 epochs, batch 100; for accelerators) with the modern (DeiT-style) recipe of
configs/cifar100_modern.py: RandAugment m9, Mixup 0.8 / CutMix 1.0 on device, label smoothing 0.1,
random erasing 0.25, 5 warm-up epochs and a cosine lr (here to 0 rather than 1e-5, so that each
pair's lr grid is one program), stochastic depth 0.1 on the backbones that have it.
Reference result (arXiv 2410.06373, modern recipe): higher top-1 than classic for the transformers
and MetaFormers, and a weaker but still present coupling. Not run here (no accelerator).
"""

import pathlib

from jaxlab import models
from jaxlab.config import load_config_file


def get_config(arg=None):
  del arg
  classic = pathlib.Path(__file__).with_name("cifar100_classic.py")
  study = load_config_file(f"{classic}:cifar100_modern")
  study.title = "CIFAR-100 coupling study, modern recipe"
  # (The recipe's own model block, drop path included, is replaced cell by cell.)
  for name in study.backbones:
    try:
      models.check_kwargs(name, {"drop_path_rate": 0.1})
      study.backbones[name].drop_path_rate = 0.1
    except ValueError:
      pass  # no residual branches to drop (AlexNet, VGG, DenseNet)
  return study
