"""DiT-XL/2 on ImageNet 256x256 latents (Peebles & Xie 2023), for accelerators.

  python -m jaxlab.train --config=configs/imagenet256_dit.py:BUILDER --workdir=workdirs/dit_xl_2
  python -m jaxlab.sample --workdir=workdirs/dit_xl_2 --num=50000 --sampler=ddpm --steps=250 \\
      --guidance=1.5 --ema

The network sees 32x32x4 latents of the Stable Diffusion VAE (stabilityai/sd-vae-ft-ema, scaled
by 0.18215), not pixels. jaxlab does not provide them: encode ImageNet with that VAE yourself and
serve the latents as a TFDS builder named BUILDER (default `imagenet256_sd_vae_latents`, which does
not exist until you write it), with float32 `image` (32, 32, 4) features and `label`; the
samples then need the VAE decoder to become images. jaxlab's image pipeline decodes uint8 images,
so such a builder also needs a float-feature path in jaxlab/data that does not exist yet: this
config documents the recipe and the model; it does not run as is.

Recipe as the paper: DDPM linear schedule, 1000 steps, epsilon prediction (the paper's learned
variance / VLB term is not implemented: `learn_sigma` only keeps the parameter count), class
labels dropped 10% of the time, AdamW lr 1e-4 without weight decay, batch 256, EMA 0.9999,
7M steps for the headline result; sampling with 250 DDPM steps.
Reference (the paper's, not reproduced here): FID-50K 2.27 with guidance 1.5, 9.62 without.
675M parameters (tests/test_diffusion_models.py checks the count against the paper).
"""

import ml_collections

from jaxlab.config import base_config
from jaxlab.diffusion.config import diffusion_task_config


def get_config(arg="imagenet256_sd_vae_latents"):
  config = base_config()
  config.task = diffusion_task_config()
  config.task.formulation, config.task.schedule, config.task.prediction = "ddpm", "linear", "epsilon"
  config.task.label_dropout = 0.1
  config.task.sampler, config.task.sample_steps, config.task.guidance = "ddpm", 250, 1.5
  config.model = ml_collections.ConfigDict({"name": "dit_xl_2", "learn_sigma": True})
  config.dataset.name = arg
  config.dataset.mean, config.dataset.std = (0.0,) * 4, (1.0,) * 4  # latents are used as stored
  config.dataset.augment = "none"
  config.batch_size = 256
  config.total_steps = 7_000_000
  config.log_every_steps = 1000
  config.eval_every_steps = 50_000
  config.checkpoint_every_steps = 50_000
  config.compute_dtype = "bfloat16"
  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  config.optim.name = "adamw"
  config.optim.lr = 1e-4
  config.optim.schedule = "constant"
  config.optim.hparams = {"betas": (0.9, 0.999), "weight_decay": 0.0}
  config.optim.averaging.name = "ema"
  config.optim.averaging.hparams = {"momentum": 0.9999}
  return config
