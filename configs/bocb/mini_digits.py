"""Mini coupling study on the embedded digits: 3 backbone families x 4 optimizers x 3 learning rates.

  scripts/study_mini.sh       # from a fresh clone: creates .venv, runs the study, writes the report
  python -m jaxlab.study --config=configs/bocb/mini_digits.py --workdir=workdirs/study_mini

36 cells (small_cnn, tiny_vit, tiny_mixer x SGD-momentum, AdamW, LAMB, Lion x a 3-point lr grid
around each optimizer's usual value, seed 0), 500 steps of batch 64 (~22 epochs of the 1437
training digits), cosine schedule with 25 warm-up steps, the classic recipe's pad-and-crop
augmentation (1 pixel, no flip). Each backbone/optimizer pair trains its 3 learning rates as one
compiled program (12 programs); `cells_at_once="auto"` runs the cells of a program one after
another through its compiled step on a CPU (vmapped convolutions are slower there:
docs/benchmarks.md, "Coupling study") and vmapped on an accelerator.

Expected on a 2-core CPU: about 6-7 minutes. Measured: 384 s wall for the whole command (study and
report) on an idle 2-core CPU (910 s while three other jobs shared it, load average 6-8), 1.4 GB
peak memory; the results were identical in both runs. The run and its report (table, heat map, box plots,
layer-wise alpha/entropy/norm) are in docs/study_mini/. Measured result (final top-1, each
optimizer at its best lr; Mean +- Std over the four optimizers): small_cnn 99.6 +- 0.2 % (range
0.6), tiny_mixer 91.9 +- 2.8 % (range 7.2; SGD best at 94.4 %, Lion worst at 87.2 %), tiny_vit
90.4 +- 5.7 % (range 13.9; AdamW best at 94.4 %, SGD worst at 80.6 %): every backbone is trained
by its best optimizer, the CNN by all four alike, while the ViT needs an adaptive one.
"""

import ml_collections

from jaxlab.config import base_config
from jaxlab.data import default_dataset_config


def get_config(arg=None):
  del arg
  study = ml_collections.ConfigDict()
  study.title = "Mini coupling study on the embedded digits"

  recipe = base_config()
  recipe.batch_size = 64
  recipe.log_every_steps = 100
  recipe.eval_every_steps = 100
  recipe.checkpoint_every_steps = 250
  recipe.optim.schedule = "cosine"
  recipe.optim.warmup_steps = 25
  study.recipe = recipe
  study.dataset = default_dataset_config()  # digits, 8x8x1, 1-pixel pad-and-crop
  study.budget = ml_collections.ConfigDict({"total_steps": 500, "num_epochs": None})

  # Three families (a BatchNorm CNN, a ViT, an MLP-Mixer), sized so that each is trained (>= 90%
  # with its best optimizer) within the budget on a CPU: width 64 learns several times faster
  # per step than 32; the ViT takes 4x4 patches (4 tokens + class token), the Mixer 2x2 (16).
  study.backbones = ml_collections.ConfigDict({
      "small_cnn": {},
      "tiny_vit": {"dim": 64, "depth": 2, "num_heads": 4, "patch_size": 4},
      "tiny_mixer": {"dim": 64, "depth": 2, "patch_size": 2},
  })
  # Fixed hyperparameters are the study's (CIFAR-100 classic recipe) choices; lr grids are
  # centred on each optimizer's usual value, a factor ~3 apart.
  study.optimizers = ml_collections.ConfigDict({
      "sgd": {"hparams": {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
              "grid": {"lr": (0.03, 0.1, 0.3)}},
      "adamw": {"hparams": {"weight_decay": 0.05}, "grid": {"lr": (3e-4, 1e-3, 3e-3)}},
      "lamb": {"hparams": {"weight_decay": 0.05}, "grid": {"lr": (3e-3, 1e-2, 3e-2)}},
      "lion": {"hparams": {"weight_decay": 0.5}, "grid": {"lr": (1e-4, 3e-4, 1e-3)}},
  })
  study.grid = ml_collections.ConfigDict()
  study.seeds = (0,)
  study.vmap = True
  study.cells_at_once = "auto"  # looped over the cells on a CPU, vmapped on an accelerator
  study.max_cells_per_program = 0
  study.diagnostics = True
  return study
