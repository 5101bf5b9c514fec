"""CIFAR-10 32x32 with the EDM recipe (Karras et al. 2022), for accelerators.

  python -m jaxlab.train --config=configs/cifar10_edm.py:cond --workdir=workdirs/cifar10_edm_cond
  python -m jaxlab.sample --workdir=workdirs/cifar10_edm_cond --num=50000 --sampler=heun --steps=18 --ema

ARG: `cond` (class-conditional) or `uncond` (default). EDM's preconditioning and loss (P_mean
-1.2, P_std 1.2, sigma_data 0.5), Adam lr 1e-3 with a 10 Mimg linear warm-up, batch 512,
200 Mimg (390,625 steps), dropout 0.13, x-flips, EMA with a 0.5 Mimg half-life (momentum
0.5^(512/500000) = 0.99929 per step); sampling with Heun, 18 steps = 35 network evaluations.

Reference (the paper's, not reproduced here): FID 1.97 unconditional / 1.79 conditional at 35 NFE,
with EDM's DDPM++ network (56M parameters, 8 V100s for about 2 days). jaxlab's `unet` follows
ADM's blocks (scale-shift conditioning, no skip rescaling) with DDPM++'s widths: 57M parameters;
expect numbers near, not equal to, the paper's. Without a GPU/TPU this config is impractical: a
2-core CPU does ~1 training image/s at this size. FID of the 50k samples, with pytorch-fid's
InceptionV3 weights file (downloaded once by the user; see README "FID vs FD-<extractor>"):

  python -m jaxlab.metrics.sample_quality --samples=workdirs/cifar10_edm_cond/samples/samples.npz \
      --inception=pt_inception-2015-12-05-6726825d.pth --reference=cifar10:train
"""

import ml_collections

from jaxlab.config import base_config
from jaxlab import tasks

BATCH = 512
TRAIN_IMAGES = 200_000_000
WARMUP_IMAGES = 10_000_000
EMA_HALF_LIFE_IMAGES = 500_000


def get_config(arg="uncond"):
  if arg not in ("cond", "uncond"):
    raise ValueError(f"configs/cifar10_edm.py takes cond or uncond, got '{arg}'")
  config = base_config()
  config.task = tasks.default_config("diffusion")  # EDM
  config.task.conditional = arg == "cond"
  config.task.label_dropout = 0.0  # EDM trains conditional models without dropping labels
  config.task.sampler, config.task.sample_steps, config.task.guidance = "heun", 18, 1.0
  config.model = ml_collections.ConfigDict({
      "name": "unet", "channels": 128, "channel_mult": (2, 2, 2), "num_res_blocks": 4,
      "attention_resolutions": (16,), "num_heads": 1, "dropout": 0.13, "norm_groups": 32})
  config.dataset.name = "cifar10"
  config.dataset.mean, config.dataset.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
  config.dataset.augment, config.dataset.crop_padding, config.dataset.flip = "crop_flip", 0, True
  config.batch_size = BATCH
  config.total_steps = TRAIN_IMAGES // BATCH
  config.log_every_steps = 500
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 10_000
  config.compute_dtype = "bfloat16"
  config.optim.name = "adam"
  config.optim.lr = 1e-3
  config.optim.schedule = "constant"
  config.optim.warmup_steps = WARMUP_IMAGES // BATCH
  config.optim.hparams = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
  config.optim.averaging.name = "ema"
  config.optim.averaging.hparams = {"momentum": 0.5 ** (BATCH / EMA_HALF_LIFE_IMAGES)}
  return config
