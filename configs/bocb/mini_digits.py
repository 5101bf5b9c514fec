"""Mini coupling study on the embedded digits: 3 backbone families x 4 optimizers x 3 learning rates.

  scripts/study_mini.sh       # from a fresh clone: creates .venv, runs the study, writes the report
  python -m jaxlab.study --config=configs/bocb/mini_digits.py --workdir=workdirs/study_mini

36 cells (small_cnn, tiny_vit, tiny_mixer x SGD-momentum, AdamW, LAMB, Lion x a 3-point lr grid
around each optimizer's usual value, seed 0), 100 steps of batch 128 (~9 epochs of the 1437
training digits), cosine schedule with 10 warm-up steps, the classic recipe's pad-and-crop
augmentation (1 pixel, no flip). Each backbone/optimizer pair trains its 3 learning rates as one
compiled program (12 programs); `cells_at_once=1` runs the cells of a program one after another
inside it, because on a CPU vmapped convolutions are slower than separate ones
(docs/benchmarks.md, "Coupling study"); on an accelerator leave it at 0.

Expected on a 2-core CPU: about 10 minutes (measured: 613 s wall for the whole command, study
and report, on a 2-core CPU shared with other jobs; 1.4 GB peak memory). The run and its report
(table, heat map, box plots, layer-wise alpha/entropy/norm) are in docs/study_mini/. Measured
result (final top-1, each optimizer at its best lr): small_cnn 98.1 +- 1.2 % over the four
optimizers (range 3.1), tiny_mixer 42.5 +- 18.8 % (range 49.4, AdamW best at 70.3 %, SGD worst at
20.8 %), tiny_vit 17.8 +- 5.3 % (AdamW best at 24.2 %): the CNN trains with every optimizer, the
Mixer and the ViT need an adaptive one and are still far from converged after 100 steps (their best
lr is the top of the grid), a strong backbone-optimizer coupling even at this scale.
"""

import ml_collections

from jaxlab.config import base_config
from jaxlab.data import default_dataset_config


def get_config(arg=None):
  del arg
  study = ml_collections.ConfigDict()
  study.title = "Mini coupling study on the embedded digits"

  recipe = base_config()
  recipe.batch_size = 128
  recipe.log_every_steps = 50
  recipe.eval_every_steps = 50
  recipe.checkpoint_every_steps = 50
  recipe.optim.schedule = "cosine"
  recipe.optim.warmup_steps = 10
  study.recipe = recipe
  study.dataset = default_dataset_config()  # digits, 8x8x1, 1-pixel pad-and-crop
  study.budget = ml_collections.ConfigDict({"total_steps": 100, "num_epochs": None})

  # Three families (a BatchNorm CNN, a ViT, an MLP-Mixer), sized so each trains in seconds here.
  study.backbones = ml_collections.ConfigDict({
      "small_cnn": {},
      "tiny_vit": {"dim": 32, "depth": 2, "num_heads": 2},
      "tiny_mixer": {"dim": 32, "depth": 2},
  })
  # Fixed hyperparameters are the study's (CIFAR-100 classic recipe) choices; lr grids are
  # centred on each optimizer's usual value, a factor ~3 apart.
  study.optimizers = ml_collections.ConfigDict({
      "sgd": {"hparams": {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
              "grid": {"lr": (0.03, 0.1, 0.3)}},
      "adamw": {"hparams": {"weight_decay": 0.05}, "grid": {"lr": (3e-4, 1e-3, 3e-3)}},
      "lamb": {"hparams": {"weight_decay": 0.05}, "grid": {"lr": (1e-3, 3e-3, 1e-2)}},
      "lion": {"hparams": {"weight_decay": 0.5}, "grid": {"lr": (1e-4, 3e-4, 1e-3)}},
  })
  study.grid = ml_collections.ConfigDict()
  study.seeds = (0,)
  study.vmap = True
  study.cells_at_once = 1
  study.max_cells_per_program = 0
  study.diagnostics = True
  return study
