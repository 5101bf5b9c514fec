"""Stage 2 of scripts/two_stages.sh: fine-tune a pretrained small_cnn on digits upsampled to 16x16.

  python -m jaxlab.train --config=configs/finetune_digits.py --workdir=workdirs/finetune \
      --config.init_from.path=workdirs/quickstart

Everything but the classification head comes from the pretrained run (`init_from.skip`); the head
starts fresh, as it would for a new label set. Expected: test accuracy ≥ 0.97 in 300 steps.
"""

from jaxlab.config import base_config


def get_config(arg=None):
  del arg
  config = base_config()
  config.model.name = "small_cnn"
  config.dataset.image_size = 16
  config.dataset.crop_padding = 2
  config.batch_size = 128
  config.total_steps = 300
  config.log_every_steps = 20
  config.eval_every_steps = 100
  config.checkpoint_every_steps = 100
  config.optim.name = "sgd"
  config.optim.lr = 0.02  # lower than from scratch: the features are already trained
  config.optim.warmup_steps = 10
  config.optim.hparams = {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
  config.init_from.path = ""  # set on the command line: the pretraining workdir
  config.init_from.skip = ("^params/head/",)
  return config
