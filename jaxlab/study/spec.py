"""A study config, expanded: its cells (one training run each) and the training config of a cell.

A study config (`configs/bocb/*.py`, an `ml_collections.ConfigDict`) has:

  title        the report's heading
  recipe       the training config every cell starts from (`jaxlab.config.base_config()` and
               changes: augmentation, schedule, warmup, label smoothing, eval cadence, ...)
  dataset      replaces `recipe.dataset`
  budget       `total_steps` or `num_epochs` of every cell
  backbones    model names (`jaxlab.models.available()`), or a dict name -> model keywords
  optimizers   dict name -> {"hparams": fixed keywords, "grid": {key: values}} (either optional)
  grid         the default grid, for optimizers without their own: {key: values}
  seeds        seeds of every grid point (model init, data order and dropout)
  vmap         True: cells that differ only in grid values or seed train as one program
  cells_at_once  how many of a device's cells one call of the program computes together:
               0 = all (one vmapped computation; for accelerators), k = k at a time, one call of
               the same compiled step per chunk (one compilation still; on CPUs vmapped
               convolutions become slow grouped convolutions, and 1 avoids them), or "auto":
               0 on GPUs/TPUs, 1 on CPUs (`cells_at_once()` below). In a config that says
               "auto" the field is a string (ConfigDict keeps a field's type): override it as
               `--config.cells_at_once=1`, or assign "1"
  max_cells_per_program   0 = no limit; otherwise groups are split into programs this large
  diagnostics  compute layer-wise spectral diagnostics of the trained weights

Grid keys are `lr` (the schedule's peak, `recipe.optim.lr`) and the optimizer's own keywords
(`weight_decay`, `momentum`, `betas`, ...; checked against `jaxlab.optim`'s registry).
A cell is (backbone, optimizer, one grid point, seed); its id is readable and stable:
`small_cnn/sgd/lr=0.1,weight_decay=0.0005/seed=0`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Any

import ml_collections

from jaxlab import models, optim
from jaxlab.config import ConfigError

_STUDY_KEYS = ("title", "recipe", "dataset", "budget", "backbones", "optimizers", "grid", "seeds",
               "vmap", "cells_at_once", "max_cells_per_program", "diagnostics")


@dataclasses.dataclass(frozen=True)
class Cell:
  """One training run of the study."""
  backbone: str
  optimizer: str
  grid: tuple[tuple[str, Any], ...]  # this cell's grid point, sorted by key
  seed: int

  @property
  def id(self) -> str:
    point = ",".join(f"{k}={_format(v)}" for k, v in self.grid)
    return f"{self.backbone}/{self.optimizer}/{point}/seed={self.seed}"

  @property
  def grid_dict(self) -> dict[str, Any]:
    return dict(self.grid)


def _format(value) -> str:
  if isinstance(value, (list, tuple)):
    return "(" + ",".join(_format(v) for v in value) + ")"
  return f"{value:g}" if isinstance(value, float) else str(value)


def _plain(value):
  """ConfigDict/FrozenConfigDict/tuple values as plain Python (dicts, tuples, numbers)."""
  if isinstance(value, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict, dict)):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return tuple(_plain(v) for v in value)
  return value


def backbones(study: ml_collections.ConfigDict) -> dict[str, dict]:
  """Backbone name -> model keywords."""
  raw = _plain(study.backbones)
  if isinstance(raw, dict):
    return {name: dict(kwargs or {}) for name, kwargs in raw.items()}
  return {name: {} for name in raw}


def optimizers(study: ml_collections.ConfigDict) -> dict[str, dict]:
  """Optimizer name -> {"hparams": fixed keywords, "grid": {key: tuple of values}}."""
  default_grid = _plain(study.get("grid", {})) or {}
  out = {}
  for name, entry in _plain(study.optimizers).items():
    entry = entry or {}
    grid = entry.get("grid", default_grid) or {}
    out[name] = {"hparams": dict(entry.get("hparams", {}) or {}),
                 "grid": {k: tuple(v) for k, v in sorted(grid.items())}}
  return out


def check(study: ml_collections.ConfigDict) -> None:
  """One-line ConfigError for unknown keys, models, optimizers, hyperparameters or an empty grid."""
  unknown = sorted(set(study.keys()) - set(_STUDY_KEYS))
  if unknown:
    raise ConfigError(f"unknown study key(s) {', '.join(unknown)}; valid: {', '.join(_STUDY_KEYS)}")
  for name, kwargs in backbones(study).items():
    try:
      models.check_kwargs(name, kwargs)
    except ValueError as e:
      raise ConfigError(f"study.backbones: {e}") from None
  opts = optimizers(study)
  if not opts or not backbones(study) or not tuple(study.seeds):
    raise ConfigError("a study needs at least one backbone, one optimizer and one seed")
  for name, entry in opts.items():
    try:
      optim.check_hparams(name, {**entry["hparams"], **{k: v for k, v in entry["grid"].items()
                                                        if k != "lr"}})
    except ValueError as e:
      raise ConfigError(f"study.optimizers: {e}") from None
    for key, values in entry["grid"].items():
      if not values:
        raise ConfigError(f"study.optimizers.{name}: grid '{key}' has no values")
  cells_at_once(study.get("cells_at_once", 0), "cpu")  # checks the value's form
  budget = study.budget
  if (budget.get("total_steps") is None) == (budget.get("num_epochs") is None):
    raise ConfigError("study.budget needs exactly one of total_steps and num_epochs")


def cells_at_once(value, platform: str) -> int:
  """A study's `cells_at_once` on devices of `platform` ("cpu", "gpu", "tpu") as a number: 0 = all
  of a device's cells vmapped together, k = k at a time, one call of the compiled step per chunk.

  "auto" decides by the devices' platform: 0 on accelerators (GPU, TPU), where one small model
  leaves most of the chip idle and batching the cells is the point; 1 on CPUs, where a vmapped
  convolution becomes a grouped convolution that XLA:CPU runs several times slower, and vmapped
  small matmuls are no faster than a loop over them (docs/benchmarks.md, "Coupling study").
  """
  if isinstance(value, str):
    if value.strip().lower() == "auto":
      return 1 if platform == "cpu" else 0
    if not value.strip().isdigit():
      raise ConfigError(f"cells_at_once must be 'auto' or a number >= 0, got '{value}'")
    value = int(value)
  if value is None or isinstance(value, bool) or int(value) != value or value < 0:
    raise ConfigError(f"cells_at_once must be 'auto' or a number >= 0, got {value!r}")
  return int(value)


def cells(study: ml_collections.ConfigDict) -> list[Cell]:
  """Every cell, in a fixed order: backbone, optimizer, grid point, seed."""
  out = []
  for backbone in backbones(study):
    for name, entry in optimizers(study).items():
      keys = list(entry["grid"])
      for values in itertools.product(*(entry["grid"][k] for k in keys)):
        for seed in study.seeds:
          out.append(Cell(backbone, name, tuple(zip(keys, values)), int(seed)))
  return out


def cell_config(study: ml_collections.ConfigDict, cell: Cell) -> ml_collections.ConfigDict:
  """The training config of one cell: the recipe with the cell's model, optimizer, grid and seed."""
  config = study.recipe.copy_and_resolve_references()
  config.dataset = study.dataset.copy_and_resolve_references()
  config.total_steps = study.budget.get("total_steps")
  config.num_epochs = study.budget.get("num_epochs")
  config.seed = cell.seed
  config.model = ml_collections.ConfigDict({"name": cell.backbone, **backbones(study)[cell.backbone]})
  entry = optimizers(study)[cell.optimizer]
  grid = cell.grid_dict
  config.optim.name = cell.optimizer
  if "lr" in grid:
    config.optim.lr = float(grid["lr"])
  hparams = {**entry["hparams"], **{k: v for k, v in grid.items() if k != "lr"}}
  config.optim.hparams = ml_collections.ConfigDict(hparams)
  return config


def hparams_of(study: ml_collections.ConfigDict, cell: Cell) -> dict[str, Any]:
  """The optimizer keywords of a cell (fixed ones and its grid point, not lr)."""
  entry = optimizers(study)[cell.optimizer]
  return {**entry["hparams"], **{k: v for k, v in cell.grid if k != "lr"}}


def describe(study: ml_collections.ConfigDict) -> str:
  """One line: how many backbones, optimizers, grid points and seeds, and the cell count."""
  opts = optimizers(study)
  points = {name: max(1, len(list(itertools.product(*e["grid"].values())))) for name, e in opts.items()}
  return (f"{len(backbones(study))} backbones x {len(opts)} optimizers x "
          f"{json.dumps(points)} grid points x {len(tuple(study.seeds))} seeds = "
          f"{len(cells(study))} cells")
