"""Plain vs EMA vs SEMA weight averaging, for SGD-momentum and AdamW, on the embedded digits.

  python -m jaxlab.train --config=configs/sema_digits.py:sgd,sema,0 --workdir=workdirs/sema/sgd-sema-0

ARG = OPTIMIZER,AVERAGING,SEED with OPTIMIZER in {sgd, adamw}, AVERAGING in {none, ema, sema}.
EMA momentum 0.95 keeps the paper's ratio of averaging horizon to epoch (CIFAR: 0.999 per step,
391 steps an epoch: each switch moves the weights 1 − 0.999^391 ≈ 32% of the way; here
1 − 0.95^11 ≈ 43%).
`python scripts/sema_comparison.py` runs the whole grid (2 × 3 × 3 seeds, about 10 minutes on a
2-core CPU) and writes docs/sema.md with its table and plot. The run is kept short (300 steps,
~27 epochs).
"""

from jaxlab.config import base_config

OPTIMIZERS = {
    "sgd": dict(lr=0.05, hparams={"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}),
    "adamw": dict(lr=2e-3, hparams={"betas": (0.9, 0.999), "weight_decay": 0.05}),
}
AVERAGING = {
    "none": {},
    "ema": {"momentum": 0.95},
    "sema": {"momentum": 0.95, "switch_every_epochs": 1.0},  # the paper switches every epoch
}


def get_config(arg="sgd,sema,0"):
  optimizer, averaging, seed = arg.split(",")
  config = base_config()
  config.seed = int(seed)
  config.model.name = "small_cnn"
  config.batch_size = 128
  config.total_steps = 300
  config.log_every_steps = 25
  config.eval_every_steps = 25
  config.checkpoint_every_steps = 300
  config.optim.name = optimizer
  config.optim.lr = OPTIMIZERS[optimizer]["lr"]
  config.optim.hparams = OPTIMIZERS[optimizer]["hparams"]
  config.optim.warmup_steps = 20
  config.optim.averaging.name = averaging
  config.optim.averaging.hparams = AVERAGING[averaging]
  return config
