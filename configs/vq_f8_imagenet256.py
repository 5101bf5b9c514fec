"""Stage 1 of configs/imagenet256_dit.py: an f8 VQGAN on ImageNet 256x256 whose 32x32x4 latents
(taken before quantization) the DiT learns, the layout of LDM's VQ-f8 first stage (Rombach et al.
2022, `cin-ldm-vq-f8`: 128-256-256-512 channels, 2 res blocks per level, 4 latent channels,
16384 codes; without its attention block at 32x32, which `vq_autoencoder` does not have).

  python -m jaxlab.train --config=configs/vq_f8_imagenet256.py --workdir=workdirs/vq_f8_in256

For accelerators (not run here). Needs ImageNet through TFDS (`imagenet2012`, manual download).
L1 + codebook loss, patch discriminator with adaptive weight and LeCam from 250k steps (as
configs/vqgan_cifar10.py:imagenet256); for LPIPS-like sharpness add task.perceptual_weight with a
classifier run (jaxlab/tasks/tokenizer.py). No reference number is claimed for this exact setup;
the run reports PSNR/SSIM and codebook usage on the validation split.
"""

import ml_collections

from jaxlab.config import base_config
from jaxlab import tasks


def get_config(arg=None):
  del arg
  config = base_config()
  config.dataset.name = "imagenet2012"
  config.dataset.eval_split = "validation"
  config.dataset.image_size = 256
  config.dataset.augment = "random_resized_crop"
  config.dataset.flip = True
  config.dataset.crop_padding = 0
  config.dataset.mean, config.dataset.std = (0.5,) * 3, (0.5,) * 3  # images in [-1, 1]
  config.dataset.shuffle_buffer = 50_000
  config.model = ml_collections.ConfigDict({
      "name": "vq_autoencoder", "channels": (128, 256, 256, 512), "num_res_blocks": 2, "latent_dim": 4,
      "quantizer": {"name": "vq", "codebook_size": 16384, "ema_decay": 0.99, "kmeans_init": True,
                    "restart_dead": True, "dead_threshold": 1.0},
  })
  config.task = tasks.default_config("tokenizer")
  config.task.adversarial_weight = 0.1
  config.task.disc_start = 250_000
  config.task.lecam_weight = 0.001
  config.task.discriminator = {"channels": 64, "n_layers": 3}
  config.compute_dtype = "bfloat16"
  config.batch_size = 256
  config.total_steps = 500_000
  config.log_every_steps = 100
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 10_000
  config.optim.name = "adamw"
  config.optim.lr = 1e-4
  config.optim.warmup_steps = 5_000
  config.optim.schedule = "constant"
  config.optim.hparams = {"betas": (0.5, 0.9), "weight_decay": 0.0}
  return config
