"""Orbax checkpoints of the TrainState: periodic async saves, resume from the latest.

The state is saved as a plain nested dict (`flax.serialization.to_state_dict`), so checkpoints do
not depend on Python class names, and restored onto an abstract target that carries the target
shardings: every process reads only the shards it owns.
"""

from __future__ import annotations

import pathlib

import orbax.checkpoint as ocp
from flax import serialization

from jaxlab.state import TrainState


class Checkpointer:
  """Saves every `every_steps` steps (and when forced), keeps the newest `keep`."""

  def __init__(self, directory: str | pathlib.Path, *, every_steps: int, keep: int):
    self.directory = pathlib.Path(directory).absolute()
    self._every = every_steps
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def maybe_save(self, step: int, state: TrainState, *, force: bool = False) -> bool:
    """Starts an async save when due; training goes on while it is written.

    `step` is passed as a Python int so that checking it does not wait for the device.
    """
    if not force and step % self._every:
      return False
    if step in self._manager.all_steps():
      return False
    return self._manager.save(step, args=ocp.args.StandardSave(serialization.to_state_dict(state)),
                              force=True)

  def restore(self, step: int, abstract_state: TrainState) -> TrainState:
    """`abstract_state`: jax.ShapeDtypeStruct leaves carrying the shardings to restore onto."""
    target = serialization.to_state_dict(abstract_state)
    restored = self._manager.restore(step, args=ocp.args.StandardRestore(target))
    return serialization.from_state_dict(abstract_state, restored)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
