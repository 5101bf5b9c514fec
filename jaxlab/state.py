"""TrainState, the one pytree a step carries, and ModelGraph, the static half of an nnx model.

Params and model state are kept as plain nested dicts of arrays (`nnx.to_pure_dict`): optax,
Orbax and the sharding rules see ordinary pytrees, and nothing in the state is an nnx object.
The module is rebuilt inside the step from the static graph definition (`nnx.merge`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct


class TrainState(struct.PyTreeNode):
  step: jax.Array  # int32 scalar: number of optimizer updates applied
  params: dict  # nnx.Param values
  model_state: dict  # other mutable module variables (batch statistics, codebook EMAs, ...)
  opt_state: optax.OptState
  rng: jax.Array  # uint32[2] base key; each step folds in its step number
  # With weight averaging: the same average of `model_state` (batch statistics), else None.
  averaged_model_state: dict | None = None

  @classmethod
  def create(cls, model: nnx.Module, tx: optax.GradientTransformation, rng: jax.Array,
             average_model_state: bool = False) -> TrainState:
    """Step 0 of a run: the module's values, a fresh optimizer state, the run's base key."""
    params, model_state = ModelGraph.state_of(model)
    return cls(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
               opt_state=tx.init(params), rng=rng,
               averaged_model_state=model_state if average_model_state else None)


def step_rng(state: TrainState) -> jax.Array:
  """The step's randomness: a resumed run draws the same numbers as an uninterrupted one."""
  return jax.random.fold_in(state.rng, state.step)


@dataclasses.dataclass(frozen=True)
class ModelGraph:
  """Graph definitions of a module in train and eval mode, and its rng-stream layout.

  RNG streams (dropout, stochastic depth) are not carried in TrainState: each step reseeds them
  from the state's rng, so checkpoints hold only plain arrays and resumes are exact.
  """
  train_def: Any
  eval_def: Any
  rng_layout: dict  # pure dict of the module's RngState, used for its structure only

  @classmethod
  def of(cls, module: nnx.Module) -> "ModelGraph":
    module.train()
    train_def, _, rng_state, _ = nnx.split(module, nnx.Param, nnx.RngState, ...)
    module.eval()
    eval_def, *_ = nnx.split(module, nnx.Param, nnx.RngState, ...)
    return cls(train_def, eval_def, nnx.to_pure_dict(rng_state))

  @staticmethod
  def state_of(module: nnx.Module) -> tuple[dict, dict]:
    """(params, model_state) of a module as pure dicts."""
    _, params, _, rest = nnx.split(module, nnx.Param, nnx.RngState, ...)
    return nnx.to_pure_dict(params), nnx.to_pure_dict(rest)

  def _fresh_rngs(self, rng: jax.Array) -> dict:
    leaves, treedef = jax.tree.flatten(self.rng_layout)
    fresh = []
    for i, leaf in enumerate(leaves):
      if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        fresh.append(jax.random.wrap_key_data(jax.random.fold_in(rng, i)))
      else:  # the stream's call counter
        fresh.append(jnp.zeros(leaf.shape, leaf.dtype))
    return jax.tree.unflatten(treedef, fresh)

  def merge(self, params: dict, model_state: dict, *, train: bool, rng: jax.Array | None = None) -> nnx.Module:
    """The module in train or eval mode with these values; rng seeds its random streams."""
    rng = jax.random.PRNGKey(0) if rng is None else rng
    graphdef = self.train_def if train else self.eval_def
    return nnx.merge(graphdef, params, self._fresh_rngs(rng), model_state)
