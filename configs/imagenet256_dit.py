"""DiT-XL/2 on ImageNet 256x256 latents (Peebles & Xie 2023), for accelerators: stage 2 of a
two-stage recipe built from jaxlab's own pieces.

  # stage 1: the f8 VQ autoencoder (32x32x4 latents)
  python -m jaxlab.train --config=configs/vq_f8_imagenet256.py --workdir=workdirs/vq_f8_in256
  # stage 2: DiT-XL/2 on its frozen latents, the autoencoder restored with init_from
  python -m jaxlab.train --config=configs/imagenet256_dit.py:workdirs/vq_f8_in256 --workdir=workdirs/dit_xl_2
  python -m jaxlab.sample --workdir=workdirs/dit_xl_2 --num=50000 --sampler=ddpm --steps=250 \\
      --guidance=1.5 --ema

The argument is the stage-1 workdir. Its autoencoder becomes frozen model state of this run
(`config.task.autoencoder`, jaxlab/diffusion/latent.py): the batch is encoded inside the jitted
step (the encoder's output before quantization, as LDM does with VQ first stages), scaled to unit
variance by 1/std of the first batch, and samples are quantized and decoded to images, so
`jaxlab.sample` writes images. Needs ImageNet through TFDS (`imagenet2012`, manual download).

Recipe as the paper: DDPM linear schedule, 1000 steps, epsilon prediction (the paper's learned
variance / VLB term is not implemented: `learn_sigma` only keeps the parameter count), class
labels dropped 10% of the time, AdamW lr 1e-4 without weight decay, batch 256, EMA 0.9999 of the
weights (not of the model state, which would store the frozen autoencoder twice), 7M steps for
the headline result, horizontal flips only (images resized, not center-cropped, to 256x256);
sampling with 250 DDPM steps.
Reference (the paper's, not reproduced here): FID-50K 2.27 with guidance 1.5, 9.62 without; those
numbers are for Stable Diffusion's KL-regularised VAE latents (sd-vae-ft-ema, scale 0.18215),
not for this VQ autoencoder, whose reconstructions bound what the DiT can reach: expect a
different (likely worse) FID. 675M parameters (tests/test_diffusion_models.py checks the count).
"""

import pathlib

import ml_collections

from jaxlab.config import base_config, load_config_file
from jaxlab import tasks


def get_config(autoencoder_workdir=None):
  stage1 = load_config_file(str(pathlib.Path(__file__).with_name("vq_f8_imagenet256.py")))
  config = base_config()
  config.dataset = stage1.dataset
  # Flips only. The paper center-crops; jaxlab's training pipeline resizes to 256x256 instead.
  config.dataset.augment, config.dataset.crop_padding, config.dataset.flip = "crop_flip", 0, True
  config.task = tasks.default_config("diffusion")
  config.task.formulation, config.task.schedule, config.task.prediction = "ddpm", "linear", "epsilon"
  config.task.label_dropout = 0.1
  config.task.sampler, config.task.sample_steps, config.task.guidance = "ddpm", 250, 1.5
  config.task.autoencoder = stage1.model
  config.task.latent_scale = 0.0  # 1 / std of the first batch's latents (LDM's scale_by_std)
  config.model = ml_collections.ConfigDict({"name": "dit_xl_2", "learn_sigma": True})
  config.init_from.path = autoencoder_workdir
  config.init_from.include = ("^params/autoencoder/", "^model_state/autoencoder/")
  config.init_from.rename = ((r"^(params|model_state)/autoencoder/", "model_state/autoencoder/"),)
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
  config.optim.averaging.average_model_state = False
  return config
