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

from jaxlab.config import load_config_file

_HERE = pathlib.Path(__file__).parent


def get_config(tokenizer_workdir=None):
  # configs/diffusion_digits.py's recipe (EDM, U-Net, Adam, EMA, batch 64, 1500 steps) on latents.
  config = load_config_file(str(_HERE / "diffusion_digits.py"))
  stage1 = load_config_file(str(_HERE / "tokenizer_digits.py"))
  config.dataset = stage1.dataset  # same images, same [-1, 1] scaling
  config.task.autoencoder = stage1.model
  config.task.latent_scale = 0.0  # 1 / std of the first batch's latents
  config.task.sigma_data = 1.0  # the scaled latents' std
  # The U-Net twice as wide for the 16 latent channels (a DiT, e.g. {"name": "dit", "patch_size":
  # 1, "hidden_size": 128, "depth": 4, "num_heads": 4}, also runs, but learns the
  # class-conditional structure more slowly: ~20% accuracy at 1200 steps).
  config.model.channels = 64
  # The frozen autoencoder: every array of the stage-1 autoencoder becomes model state (no
  # discriminator, no optimizer state).
  config.init_from.path = tokenizer_workdir
  config.init_from.include = ("^params/autoencoder/", "^model_state/autoencoder/")
  config.init_from.rename = ((r"^(params|model_state)/autoencoder/", "model_state/autoencoder/"),)
  # An average of the model state would hold a second copy of the frozen autoencoder.
  config.optim.averaging.average_model_state = False
  return config
