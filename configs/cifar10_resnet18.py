"""CIFAR-10 with the CIFAR-style ResNet-18: SGD-momentum, cosine schedule, pad-and-crop + flip.

  python -m jaxlab.train --config=configs/cifar10_resnet18.py --workdir=workdirs/cifar10_r18

Needs the TFDS cifar10 data (downloaded by TFDS on first use on a machine with internet).
Expected: ~95% test accuracy after 200 epochs (batch 128); about 1.5 h on one modern GPU.
"""

from jaxlab.config import base_config


def get_config(arg=None):
  del arg
  config = base_config()
  config.model.name = "resnet18_cifar"
  config.dataset.name = "cifar10"
  config.dataset.augment = "crop_flip"
  config.dataset.flip = True
  config.dataset.crop_padding = 4
  config.dataset.mean = (0.4914, 0.4822, 0.4465)
  config.dataset.std = (0.2470, 0.2435, 0.2616)
  config.dataset.shuffle_buffer = 50_000
  config.batch_size = 128
  config.num_epochs = 200.0
  config.log_every_steps = 100
  config.eval_every_steps = 2_000
  config.checkpoint_every_steps = 2_000
  config.optim.name = "sgd"
  config.optim.lr = 0.1
  config.optim.hparams = {"momentum": 0.9, "nesterov": False, "weight_decay": 5e-4}
  return config
