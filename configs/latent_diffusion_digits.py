"""Stage 2 of the tokenizer → generator pipeline, the latent diffusion way: a small class-conditional
U-Net on the latents of the frozen digits tokenizer (configs/tokenizer_digits.py), restored from
its run with init_from.

  python -m jaxlab.train --config=configs/latent_diffusion_digits.py:workdirs/tokenizer \\
      --workdir=workdirs/latent_diffusion
  python -m jaxlab.sample --workdir=workdirs/latent_diffusion --num=100 --ema

The argument is the tokenizer's workdir. The latent is the tokenizer's encoder output before
quantization, 4x4x16 per digit, scaled to unit variance by 1/std of the first batch (LDM's
scale_by_std; EDM's sigma_data is 1 accordingly); samples are quantized and decoded by the
tokenizer. EMA of the weights; the model state (the frozen tokenizer) is not averaged, which
would store it twice.

Measured (2-core CPU shared with other jobs, load average 5-9, 2026-11-23; the latent stage of
scripts/tokenizer_to_generator.sh): ~10 min for 1500 steps (~175 images/s), eval loss 0.32;
100 samples (Heun, 35 network evaluations, guidance 2) are recognisable digits: the quick-start
classifier labels all of them as the class they were drawn for (1.00 on every class),
FD-small_cnn 1.13 against the train split (not FID).
"""

import pathlib

import ml_collections

from jaxlab.config import base_config, load_config_file
from jaxlab.diffusion.config import diffusion_task_config


def get_config(tokenizer_workdir=None):
  stage1 = load_config_file(str(pathlib.Path(__file__).with_name("tokenizer_digits.py")))
  config = base_config()
  config.dataset = stage1.dataset  # same images, same [-1, 1] scaling
  config.task = diffusion_task_config()  # EDM, class-conditional, 10% label dropout
  config.task.autoencoder = stage1.model
  config.task.latent_scale = 0.0  # 1 / std of the first batch's latents
  config.task.sigma_data = 1.0  # the scaled latents' std
  config.task.sample_steps = 18  # Heun: 35 network evaluations
  config.task.guidance = 2.0
  # The U-Net of configs/diffusion_digits.py, twice as wide for the 16 latent channels (a DiT,
  # e.g. {"name": "dit", "patch_size": 1, "hidden_size": 128, "depth": 4, "num_heads": 4}, also
  # runs, but learns the class-conditional structure more slowly: ~20% accuracy at 1200 steps).
  config.model = ml_collections.ConfigDict({
      "name": "unet", "channels": 64, "channel_mult": (1, 2), "num_res_blocks": 1,
      "attention_resolutions": (4,), "num_heads": 2, "dropout": 0.0, "norm_groups": 8})
  # The frozen autoencoder: every array of the stage-1 autoencoder becomes model state (no
  # discriminator, no optimizer state).
  config.init_from.path = tokenizer_workdir
  config.init_from.include = ("^params/autoencoder/", "^model_state/autoencoder/")
  config.init_from.rename = ((r"^(params|model_state)/autoencoder/", "model_state/autoencoder/"),)
  config.batch_size = 64
  config.total_steps = 1500
  config.log_every_steps = 100
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 1
  config.optim.name = "adam"
  config.optim.lr = 2e-3
  config.optim.schedule = "cosine"
  config.optim.warmup_steps = 100
  config.optim.end_lr = 1e-4
  config.optim.hparams = {}
  config.optim.averaging.name = "ema"
  config.optim.averaging.hparams = {"momentum": 0.99}
  config.optim.averaging.average_model_state = False
  return config
