"""VQGAN tokenizer on CIFAR-10 (32x32 → 8x8 codes), or `:imagenet256` Taming's f16 VQGAN on
ImageNet at 256x256 (→ 16x16 codes), the stage 1 of configs/maskgit_imagenet256.py.

  python -m jaxlab.train --config=configs/vqgan_cifar10.py --workdir=workdirs/vqgan_cifar10
  python -m jaxlab.train --config=configs/vqgan_cifar10.py:imagenet256 --workdir=workdirs/vqgan_in256

For accelerators (not run here). Needs the TFDS data (cifar10 downloads itself; imagenet2012
needs the manual download TFDS describes).
CIFAR-10: 1024 EMA codes with k-means init and restarts, L1 + adversarial loss from 20k steps;
no published reference for exactly this setup, so no target number; expected cost: a few GPU hours.
ImageNet 256: the paper's reference (Esser et al. 2021, Taming Transformers, not reproduced here):
f16 VQGAN with 1024 codes, rFID 7.94 on ImageNet validation; these runs report PSNR/SSIM and
codebook usage, not rFID (`jaxlab.metrics.sample_quality --inception` scores a samples.npz, but
no command writes a tokenizer's reconstructions to one). Perceptual loss: set
task.perceptual_weight (a frozen classifier from another run, see jaxlab/tasks/tokenizer.py).
"""

import ml_collections

from jaxlab.config import base_config
from jaxlab import tasks


def get_config(arg=None):
  if arg not in (None, "", "imagenet256"):
    raise ValueError(f"unknown variant '{arg}'; valid: imagenet256 (default: CIFAR-10)")
  imagenet = arg == "imagenet256"
  config = base_config()
  config.dataset.name = "imagenet2012" if imagenet else "cifar10"
  config.dataset.eval_split = "validation" if imagenet else "test"
  config.dataset.image_size = 256 if imagenet else None
  config.dataset.augment = "random_resized_crop" if imagenet else "crop_flip"
  config.dataset.flip = True
  config.dataset.crop_padding = 0 if imagenet else 2
  config.dataset.mean, config.dataset.std = (0.5,) * 3, (0.5,) * 3  # images in [-1, 1]
  config.dataset.shuffle_buffer = 50_000
  quantizer = {"name": "vq", "codebook_size": 1024, "ema_decay": 0.99, "kmeans_init": True,
               "restart_dead": True, "dead_threshold": 1.0}
  if imagenet:  # Taming's f16: 128-128-256-256-512, 2 res blocks per level, 256-d codes
    config.model = ml_collections.ConfigDict({"name": "vq_autoencoder", "quantizer": quantizer})
  else:
    config.model = ml_collections.ConfigDict({
        "name": "vq_autoencoder", "channels": (128, 256, 256), "num_res_blocks": 2,
        "latent_dim": 64, "quantizer": quantizer})
  config.task = tasks.default_config("tokenizer")
  config.task.adversarial_weight = 0.1  # Taming's discriminator weight 0.8 with its adaptive λ
  config.task.disc_start = 250_000 if imagenet else 20_000
  config.task.lecam_weight = 0.001
  config.task.discriminator = {"channels": 64, "n_layers": 3 if imagenet else 2}
  config.compute_dtype = "bfloat16"
  config.batch_size = 256 if imagenet else 128
  config.total_steps = 500_000 if imagenet else 100_000
  config.log_every_steps = 100
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 10_000
  config.optim.name = "adamw"
  config.optim.lr = 1e-4 if imagenet else 2e-4
  config.optim.warmup_steps = 5_000
  config.optim.schedule = "constant"
  config.optim.hparams = {"betas": (0.5, 0.9), "weight_decay": 0.0}
  return config
