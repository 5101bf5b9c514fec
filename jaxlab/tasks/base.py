"""What a task is: the part of training that knows what is learned.

The trainer, sharding and checkpointing only see this interface, so classification, diffusion and
tokenizer training differ here and nowhere else.

- `init(config, info, rngs)` builds the nnx module (in any mode; the trainer switches modes).
- `loss(model, batch, rng)` runs in train mode and returns `(scalar loss, {name: scalar})`.
  Mutable model state (batch statistics, codebook EMAs) is updated in place on `model`; the step
  collects it afterwards. `rng` is fresh for every step and microbatch.
- optional `sampled_loss(model, batch, rng)`: the loss on targets sampled from the model's own
  prediction, for optimizers that estimate the Hessian's Gauss-Newton diagonal (SophiaG).
- `evaluate(model, batch)` runs in eval mode and returns per-batch *sums* over real examples
  (`batch['mask']` marks padding), always including `count`; the trainer adds them over the
  eval set and divides by `count`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import jax
import ml_collections
from flax import nnx

from jaxlab import models

Batch = dict[str, jax.Array]


class Task(Protocol):

  def init(self, config: ml_collections.ConfigDict, info: Any, rngs: nnx.Rngs) -> nnx.Module:
    ...

  def loss(self, model: nnx.Module, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    ...

  def evaluate(self, model: nnx.Module, batch: Batch) -> dict[str, jax.Array]:
    ...


def plain(value: Any) -> Any:
  """A ConfigDict as a plain dict (task dataclasses hold dicts); anything else unchanged."""
  return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value


def dataclass_from_config(cls, task_config: ml_collections.ConfigDict, task_name: str):
  """`cls(**task_config)` for a task dataclass; unknown keys give one line naming the valid ones."""
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(task_config.keys()) - known - {"name"})
  if unknown:
    raise ValueError(f"unknown key(s) {', '.join(unknown)} for task '{task_name}'; valid: "
                     f"{', '.join(sorted(known))}")
  return cls(**{k: plain(task_config[k]) for k in known if k in task_config})


def stage1_model(model_config: dict, info: Any, rngs: nnx.Rngs, dtype) -> nnx.Module:
  """The stage-1 model (a tokenizer, an autoencoder) a stage-2 task holds frozen, built from that
  run's `config.model`; its weights come from the run by init_from. Input channels default to the
  dataset's."""
  kwargs = {k: plain(v) for k, v in model_config.items()}
  kwargs.setdefault("in_channels", info.image_shape[-1])
  return models.create(kwargs.pop("name"), num_classes=info.num_classes, rngs=rngs, dtype=dtype, **kwargs)
