"""A trained run's model back from its workdir, for sampling, scoring and feature extraction.

`restore_run(workdir, step=None, ema=False)` reads the config the checkpoint step recorded
(Orbax step metadata, see jaxlab.checkpoint), rebuilds the task and its sharded abstract state on
this host's devices, and restores the parameters (or their weight average with `ema`) directly
into their shards. The run's mesh is kept if it fits the devices here; otherwise data
parallelism over all of them.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable

import jax
import ml_collections
from flax import nnx

from jaxlab import optim, stages, trainer
from jaxlab.checkpoint import restore_step, saved_run_info
from jaxlab.config import ConfigError, mesh_shape


@dataclasses.dataclass(frozen=True)
class RestoredRun:
  config: ml_collections.ConfigDict
  setup: trainer.Setup
  checkpoint: pathlib.Path
  step: int
  params: dict  # sharded like the run's parameters
  model_state: dict

  def model(self) -> nnx.Module:
    """The module in eval mode holding these values (use it inside jit, or eagerly)."""
    return self.setup.graph.merge(self.params, self.model_state, train=False)


def _device_mesh(config: ml_collections.ConfigDict) -> None:
  try:
    mesh_shape(config.mesh, jax.device_count())
  except ConfigError:
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})


def restore_run(workdir: str | pathlib.Path, step: int | None = None, ema: bool = False,
                before_restore: Callable[[trainer.Setup], None] | None = None) -> RestoredRun:
  """Raises ValueError (one line) when there is no checkpoint, no config, or no average for `ema`.

  `before_restore(setup)` runs once the run is rebuilt, before any array is read (to check a
  caller's options against the task cheaply)."""
  checkpoint = stages.resolve_checkpoint(workdir, step)
  info = saved_run_info(checkpoint)
  if "config" not in info:
    raise ValueError(f"{checkpoint} records no config (written by an older jaxlab?)")
  config = ml_collections.ConfigDict(info["config"])
  _device_mesh(config)
  setup = trainer.build(config)
  if before_restore is not None:
    before_restore(setup)
  state = restore_step(checkpoint.parent, int(checkpoint.name), setup.abstract_state)
  params = optim.evaluation_params(state.params, state.opt_state)
  model_state = state.model_state
  if ema:
    params = optim.averaged_params(state.opt_state)
    if params is None:
      raise ValueError(f"{checkpoint} holds no weight average: the run used no ema/sema/swa "
                       "(config.optim.averaging); drop --ema")
    model_state = state.averaged_model_state if state.averaged_model_state is not None else model_state
  return RestoredRun(config, setup, checkpoint, int(checkpoint.name), params, model_state)
