"""ImageNet-1k, the DeiT recipe (Touvron et al., arXiv 2012.12877, Table 9): AdamW with lr
5e-4 * batch / 512, weight decay 0.05, 300 epochs, 5 warm-up epochs and a cosine decay to 1e-5,
RandAugment m9 ('rand-m9-mstd0.5-inc1'), Mixup 0.8 / CutMix 1.0 (switch 0.5) on device, label
smoothing 0.1, random erasing 0.25, drop path 0.1, 224x224 random-resized crops + flip,
repeated augmentation (3 copies of each image, `dataset.repeated_augmentation`) and an EMA of the
weights (decay 0.99996, DeiT's `--model-ema-decay`; evaluated as `eval_ema/*`).
The backbone is the argument, default deit_small_patch16_224 (DeiT-S):

  python -m jaxlab.train --config=configs/imagenet_deit.py --workdir=workdirs/deit_s
  python -m jaxlab.train --config=configs/imagenet_deit.py:swin_tiny_patch4_window7_224 ...

Needs TFDS imagenet2012 prepared (manual download). Time (reference, not measured here): DeiT-S
trains 300 epochs in about 3 days on 8 V100s at batch 1024 (the paper). Expected: 79.8% top-1 for
DeiT-S (the paper's Table; reference, not measured in jaxlab). Not reproduced from DeiT: the
3-augment and distillation variants; the repeated copies share a process (DeiT's sampler spreads
them over GPUs, which only matters for models with batch statistics).
"""

from jaxlab import models
from jaxlab.config import base_config

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_config(arg=None):
  config = base_config()
  config.model.name = arg or "deit_small_patch16_224"
  try:
    models.check_kwargs(config.model.name, {"drop_path_rate": 0.1})
    config.model.drop_path_rate = 0.1
  except ValueError:
    models.check_kwargs(config.model.name, {})
  config.dataset.name = "imagenet2012"
  config.dataset.eval_split = "validation"
  config.dataset.image_size = 224
  config.dataset.augment = "random_resized_crop"
  config.dataset.flip = True
  config.dataset.mean = IMAGENET_MEAN
  config.dataset.std = IMAGENET_STD
  config.dataset.shuffle_buffer = 100_000
  config.dataset.cache = False
  config.dataset.download = False
  config.dataset.randaugment = "rand-m9-mstd0.5-inc1"
  config.dataset.random_erasing = 0.25
  config.dataset.repeated_augmentation = 3
  config.batch_size = 1024
  config.num_epochs = 300.0
  config.log_every_steps = 200
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 5_000
  config.compute_dtype = "bfloat16"
  config.task.label_smoothing = 0.1
  config.task.mixup.mixup_alpha = 0.8
  config.task.mixup.cutmix_alpha = 1.0
  config.task.mixup.switch_prob = 0.5
  config.optim.name = "adamw"
  config.optim.lr = 5e-4 * config.batch_size / 512
  config.optim.warmup_epochs = 5.0
  config.optim.end_lr = 1e-5
  config.optim.clip_grad_norm = None
  config.optim.hparams = {"betas": (0.9, 0.999), "weight_decay": 0.05}
  config.optim.averaging.name = "ema"
  config.optim.averaging.hparams = {"momentum": 0.99996}
  return config
