"""Class-conditional MaskGIT on ImageNet 256x256, on the frozen f16 tokenizer of
`configs/vqgan_cifar10.py:imagenet256` (16x16 = 256 codes from 1024).

  python -m jaxlab.train --config=configs/maskgit_imagenet256.py:workdirs/vqgan_in256 \
      --workdir=workdirs/maskgit_in256
  python -m jaxlab.sample --workdir=workdirs/maskgit_in256 --num=50000

For accelerators (not run here). The paper's reference (Chang et al. 2022, MaskGIT, not
reproduced here): FID 6.18, IS 182.1 on ImageNet 256 with 8 decoding steps, after 300 epochs at
batch 256 with this transformer (24 layers, width 768, 16 heads), AdamW β = (0.9, 0.96),
weight decay 0.045, lr 1e-4, label smoothing 0.1, choice temperature 4.5; its own tokenizer had
rFID 2.28. `python -m jaxlab.metrics.sample_quality --inception=...` computes FID on pytorch-fid's
InceptionV3 features (README, "FID vs FD-<extractor>"), but it loads its `--reference` TFDS split
into memory as one array, which suits CIFAR-10 and not ImageNet: FID against ImageNet statistics
is not wired up here.
"""

import pathlib

import ml_collections

from jaxlab.config import base_config, load_config_file
from jaxlab import tasks


def get_config(tokenizer_workdir=None):
  stage1 = load_config_file(str(pathlib.Path(__file__).with_name("vqgan_cifar10.py")) + ":imagenet256")
  config = base_config()
  config.dataset = stage1.dataset
  config.task = tasks.default_config("maskgit")
  config.task.tokenizer = stage1.model
  config.task.label_dropout = 0.1
  config.task.sampling.steps = 8
  config.task.sampling.choice_temperature = 4.5
  config.model = ml_collections.ConfigDict(
      {"name": "maskgit_transformer", "width": 768, "depth": 24, "num_heads": 16})
  config.init_from.path = tokenizer_workdir
  config.init_from.include = ("^params/autoencoder/", "^model_state/autoencoder/")
  config.init_from.rename = ((r"^(params|model_state)/autoencoder/", "model_state/tokenizer/"),)
  config.compute_dtype = "bfloat16"
  config.batch_size = 256
  config.num_epochs = 300.0
  config.log_every_steps = 100
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 10_000
  config.optim.name = "adamw"
  config.optim.lr = 1e-4
  config.optim.warmup_steps = 5_000
  config.optim.hparams = {"betas": (0.9, 0.96), "weight_decay": 0.045}
  return config
