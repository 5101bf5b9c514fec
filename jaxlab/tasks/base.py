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

from typing import Any, Protocol

import jax
import ml_collections
from flax import nnx

Batch = dict[str, jax.Array]


class Task(Protocol):

  def init(self, config: ml_collections.ConfigDict, info: Any, rngs: nnx.Rngs) -> nnx.Module:
    ...

  def loss(self, model: nnx.Module, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    ...

  def evaluate(self, model: nnx.Module, batch: Batch) -> dict[str, jax.Array]:
    ...
