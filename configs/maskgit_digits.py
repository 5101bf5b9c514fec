"""Stage 2 of the tokenizer → generator pipeline: class-conditional MaskGIT on the codes of the
frozen digits tokenizer (configs/tokenizer_digits.py), restored from its run with init_from.

  python -m jaxlab.train --config=configs/maskgit_digits.py:workdirs/tokenizer --workdir=workdirs/maskgit
  python -m jaxlab.sample --workdir=workdirs/maskgit --num=100

The argument is the tokenizer's workdir. 4x4 = 16 codes per digit, a 4-layer transformer of width
128, 8 decoding steps. Measured (2-core CPU shared with other jobs, 2026-11-23): ~5 min for 600
steps; masked-code accuracy 0.14 on the test split (512-code tokenizer; 0.22 with 128 codes);
the samples (WORKDIR/samples/grid.png, one column per class) are blurry but mostly the requested
digit: the quick-start classifier labels 97 of 100 as the class they were drawn for
(`python -m jaxlab.metrics.sample_quality --samples=workdirs/maskgit/samples/samples.npz
--classifier=CLASSIFIER_WORKDIR`; scripts/tokenizer_to_generator.sh does all of this).
"""

import pathlib

import ml_collections

from jaxlab.config import base_config, load_config_file
from jaxlab import tasks


def get_config(tokenizer_workdir=None):
  stage1 = load_config_file(str(pathlib.Path(__file__).with_name("tokenizer_digits.py")))
  config = base_config()
  config.dataset = stage1.dataset  # same images, same [-1, 1] scaling
  config.task = tasks.default_config("maskgit")
  config.task.tokenizer = stage1.model
  config.model = ml_collections.ConfigDict(
      {"name": "maskgit_transformer", "width": 128, "depth": 4, "num_heads": 4})
  # The frozen tokenizer: every array of the stage-1 autoencoder becomes model state (no
  # discriminator, no optimizer state).
  config.init_from.path = tokenizer_workdir
  config.init_from.include = ("^params/autoencoder/", "^model_state/autoencoder/")
  config.init_from.rename = ((r"^(params|model_state)/autoencoder/", "model_state/tokenizer/"),)
  config.batch_size = 128
  config.total_steps = 600
  config.log_every_steps = 50
  config.eval_every_steps = 300
  config.checkpoint_every_steps = 300
  config.optim.name = "adamw"
  config.optim.lr = 1e-3
  config.optim.warmup_steps = 100
  config.optim.hparams = {"betas": (0.9, 0.96), "weight_decay": 0.045}  # MaskGIT's AdamW
  config.task.sampling.steps = 8
  config.task.sampling.choice_temperature = 2.0
  return config
