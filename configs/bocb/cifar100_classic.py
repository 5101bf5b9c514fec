"""The coupling study's CIFAR-100 protocol, classic recipe: 20 backbones x 20 optimizers (accelerators).

  python -m jaxlab.study --config=configs/bocb/cifar100_classic.py --workdir=workdirs/bocb_classic

For accelerators: 400 backbone/optimizer pairs x a 3-point lr grid = 1200 cells of 200 epochs
(100k steps of batch 100 each). Each pair's 3 learning rates train as one vmapped program, its cells
sharded over the devices (`cells_at_once="auto"`: vmapped on GPUs/TPUs, looped on a CPU).
Needs TFDS cifar100 (downloaded on first use). Reference result (arXiv 2410.06373, classic
recipe): top-1 from roughly 60-80% depending on the pair, and strong coupling: classic CNNs
(VGG, ResNet) are robust across optimizers, while the transformers and MetaFormers collapse with
SGD-family optimizers and need adaptive ones. Not run here (no accelerator).

Recipe: configs/cifar100_classic.py (random crop with 4-pixel padding + horizontal flip,
cross-entropy, cosine lr without warm-up, 200 epochs, batch 100); backbones in their CIFAR form
(`cifar=True`: 32x32 input, small-image stem), named as in timm. Optimizers are 20 of
`jaxlab.optim.available()` under their registry names, with PyTorch keyword names; fixed
hyperparameters and lr grids are centred on the usual values for each (a 3x step), not the
paper's per-optimizer tuned values.
"""

import pathlib

import ml_collections

from jaxlab.config import load_config_file

BACKBONES = (
    "alexnet", "vgg13", "resnet18", "densenet121", "mobilenetv2_100", "efficientnet_b0",
    "repvgg_a1", "deit_small_patch16_224", "mixer_s16_224", "swin_tiny_patch4_window7_224",
    "convnext_tiny", "convnextv2_tiny", "moganet_small", "unireplknet_tiny", "transnext_tiny",
    "identityformer_s12", "poolformerv2_s12", "convformer_s12", "attentionformer_s12",
    "caformer_s12")

# name -> (fixed keywords, lr grid)
OPTIMIZERS = {
    "sgd": ({"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}, (0.03, 0.1, 0.3)),
    "sgdp": ({"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}, (0.03, 0.1, 0.3)),
    "lion": ({"weight_decay": 0.5}, (1e-4, 3e-4, 1e-3)),
    "adam": ({"weight_decay": 0.0}, (3e-4, 1e-3, 3e-3)),
    "adamax": ({"weight_decay": 0.0}, (1e-3, 2e-3, 6e-3)),
    "nadam": ({"weight_decay": 0.0}, (3e-4, 1e-3, 3e-3)),
    "adamw": ({"weight_decay": 0.05}, (3e-4, 1e-3, 3e-3)),
    "lamb": ({"weight_decay": 0.05}, (1e-3, 3e-3, 1e-2)),
    "radam": ({"weight_decay": 0.0}, (3e-4, 1e-3, 3e-3)),
    "adamp": ({"weight_decay": 0.05}, (3e-4, 1e-3, 3e-3)),
    "adan": ({"weight_decay": 0.02}, (3e-4, 1e-3, 3e-3)),
    "adabound": ({"weight_decay": 5e-4}, (3e-4, 1e-3, 3e-3)),
    "lars": ({"momentum": 0.9, "weight_decay": 5e-4}, (0.1, 0.3, 1.0)),
    "adafactor": ({"weight_decay": 0.0}, (3e-4, 1e-3, 3e-3)),
    "adabelief": ({"weight_decay": 0.05, "decoupled_decay": True}, (3e-4, 1e-3, 3e-3)),
    "novograd": ({"weight_decay": 0.0}, (3e-4, 1e-3, 3e-3)),
    "sophia": ({"weight_decay": 0.1}, (1e-4, 3e-4, 1e-3)),
    "adagrad": ({"weight_decay": 0.0}, (3e-3, 1e-2, 3e-2)),
    "adadelta": ({"weight_decay": 0.0}, (0.3, 1.0, 3.0)),
    "rmsprop": ({"weight_decay": 0.0, "momentum": 0.9}, (1e-4, 3e-4, 1e-3)),
}


def _recipe(name: str):
  """The training recipe `configs/NAME.py` (its backbone is replaced cell by cell)."""
  return load_config_file(str(pathlib.Path(__file__).parents[1] / f"{name}.py"))


def get_config(arg=None):
  """ARG: the recipe config in configs/ (default cifar100_classic; cifar100_modern for the modern one)."""
  recipe = arg or "cifar100_classic"
  study = ml_collections.ConfigDict()
  study.title = "CIFAR-100 coupling study, classic recipe"
  study.recipe = _recipe(recipe)
  # A cosine to 0, so that each pair's lr grid is one program (the schedule is then its peak
  # times a fixed shape); the recipes' optimizer is replaced cell by cell.
  study.recipe.optim.end_lr = 0.0
  study.dataset = study.recipe.dataset
  study.budget = ml_collections.ConfigDict({"total_steps": None, "num_epochs": 200.0})
  study.backbones = ml_collections.ConfigDict({name: {"cifar": True} for name in BACKBONES})
  study.optimizers = ml_collections.ConfigDict(
      {name: {"hparams": hparams, "grid": {"lr": lrs}} for name, (hparams, lrs) in OPTIMIZERS.items()})
  study.grid = ml_collections.ConfigDict()
  study.seeds = (0,)
  study.vmap = True
  study.cells_at_once = "auto"  # 0 (vmapped) on accelerators, 1 (looped) on CPUs
  study.max_cells_per_program = 0
  study.diagnostics = True
  return study
