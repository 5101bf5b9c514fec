"""Fine-tune a timm checkpoint on the embedded digits: convnext_tiny, ImageNet RGB → 1-channel.

  python -m jaxlab.train --config=configs/finetune_timm.py --workdir=workdirs/finetune_timm \
      --config.init_from.path=convnext_tiny.safetensors

`init_from.path` takes a timm/PyTorch weights file (.safetensors, .npz; .pth/.bin with torch
installed) as well as another run's workdir. Get one where you have network access, e.g.
`timm.create_model("convnext_tiny", pretrained=True)` and
`safetensors.torch.save_file(model.state_dict(), "convnext_tiny.safetensors")`, or the
`model.safetensors` of the `timm/convnext_tiny.in12k_ft_in1k` repository on the Hugging Face Hub.
What happens to it (`jaxlab.convert.timm`):
- the 1000-class head is skipped (the digits have 10 classes): the head starts fresh;
- the stem's RGB filters are summed into one grey filter (timm's `adapt_input_conv`), because the
  digits have 1 channel (the model is built with the dataset's `in_chans`);
- every other array must fit by name and shape, or the run stops with one line listing them all.
convnext_tiny downsamples by 32, so the 8x8 digits are upsampled to 32x32 (`dataset.image_size`).
Model keywords (`drop_path_rate`, ...) go in `config.model` as for any run.
"""

from jaxlab.config import base_config


def get_config(arg=None):
  del arg
  config = base_config()
  config.model.name = "convnext_tiny"
  config.model.drop_path_rate = 0.1
  config.dataset.image_size = 32
  config.dataset.crop_padding = 4
  config.batch_size = 64
  config.total_steps = 300
  config.log_every_steps = 20
  config.eval_every_steps = 100
  config.checkpoint_every_steps = 100
  config.optim.name = "adamw"
  config.optim.lr = 2e-4  # fine-tuning: well below a from-scratch learning rate
  config.optim.warmup_steps = 20
  config.optim.hparams = {"weight_decay": 0.05}
  config.init_from.path = ""  # set on the command line: the weights file
  return config
