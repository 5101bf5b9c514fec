"""Orbax checkpoints of the TrainState: periodic async saves, resume from the latest.

The state is saved as a plain nested dict (`flax.serialization.to_state_dict`), so checkpoints do
not depend on Python class names, and restored onto an abstract target that carries the target
shardings: every process reads only the shards it owns.

Each step also carries, as Orbax step metadata, the run's resolved config and the data position
(`saved_run_info(step_dir)`): the rng is in the state, and the data pipeline restarts exactly at
batch `state.step` from the seed, so a step directory alone says how to continue or reproduce it.
"""

from __future__ import annotations

import json
import math
import pathlib

import jax
import orbax.checkpoint as ocp
from flax import serialization

from jaxlab.state import TrainState


class CheckpointError(RuntimeError):
  """No checkpoint in the directory can be read; the message names it."""


def _async_manager(directory: pathlib.Path, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True)
  return ocp.CheckpointManager(directory, options=options)


def _save(manager: ocp.CheckpointManager, step: int, state: TrainState, run_info: dict | None) -> bool:
  info = None if run_info is None else {
      **run_info, "data_position": {**run_info.get("data_position", {}), "next_batch": step}}
  return manager.save(step, args=ocp.args.StandardSave(serialization.to_state_dict(state)), force=True,
                      custom_metadata=info)


def saved_run_info(step_dir: str | pathlib.Path) -> dict:
  """{'config': the resolved config as a dict, 'data_position': {...}} stored with one step."""
  step_dir = pathlib.Path(step_dir)
  manager = ocp.CheckpointManager(step_dir.parent, options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    return dict(manager.metadata(int(step_dir.name)).custom_metadata or {})
  finally:
    manager.close()


def run_info(config) -> dict:
  """What every checkpoint of a run records besides the state (JSON-able)."""
  return {"config": json.loads(config.to_json_best_effort()),
          "data_position": {"seed": config.seed, "batch_size": config.batch_size}}


class Checkpointer:
  """Saves every `every_steps` steps (and when forced), keeps the newest `keep`."""

  def __init__(self, directory: str | pathlib.Path, *, every_steps: int, keep: int,
               run_info: dict | None = None):
    self.directory = pathlib.Path(directory).absolute()
    self._every = every_steps
    self._run_info = run_info
    self._manager = _async_manager(self.directory, keep)

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
    return _save(self._manager, step, state, self._run_info)

  def restore(self, step: int, abstract_state: TrainState) -> TrainState:
    """`abstract_state`: jax.ShapeDtypeStruct leaves carrying the shardings to restore onto."""
    target = serialization.to_state_dict(abstract_state)
    restored = self._manager.restore(step, args=ocp.args.StandardRestore(target))
    return serialization.from_state_dict(abstract_state, restored)

  def restore_latest(self, abstract_state: TrainState, report=print) -> TrainState | None:
    """The newest checkpoint that reads back whole; a damaged one is named and skipped.

    (Orbax never lists a save that did not finish: it writes to a temporary directory and
    renames it at the end.) Returns None when there is no checkpoint at all.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    for step in steps:
      try:
        return self.restore(step, abstract_state)
      except Exception as e:  # pylint: disable=broad-except  # any read failure means damaged
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        kept = self._set_aside(step)
        report(f"checkpoint {self.directory / str(step)} is damaged ({type(e).__name__}: "
               f"{reason[:200]}); moved to {kept}, falling back to the previous one")
    if steps:
      raise CheckpointError(f"no readable checkpoint in {self.directory} (tried steps "
                            f"{', '.join(map(str, steps))}); move them away to start afresh")
    return None

  def _set_aside(self, step: int) -> pathlib.Path:
    """Renames a damaged step out of Orbax's view (kept for inspection, never deleted)."""
    kept = self.directory / f"damaged-{step}"
    if jax.process_index() == 0:
      (self.directory / str(step)).rename(kept)
    self._manager.reload()
    return kept

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


class BestCheckpoint:
  """Keeps the one checkpoint with the best value of an eval metric, beside the periodic ones.

  It lives in its own directory (a checkpoint root like `checkpoints/`, so `init_from` and
  `jaxlab.export` take it), with `best.json` naming its step and value; saves happen only when
  the metric improves, so keeping the best costs nothing on other evals.
  """

  def __init__(self, directory: str | pathlib.Path, *, metric: str, mode: str = "max",
               run_info: dict | None = None):
    if mode not in ("max", "min"):
      raise ValueError(f"best checkpoint mode must be 'max' or 'min', got '{mode}'")
    self.directory = pathlib.Path(directory).absolute()
    self.metric, self._sign = metric, 1.0 if mode == "max" else -1.0
    self._run_info = run_info
    self._manager = _async_manager(self.directory, keep=1)
    record = self.directory / "best.json"
    self.best = json.loads(record.read_text())["value"] if record.exists() else None

  def maybe_save(self, step: int, state: TrainState, metrics: dict[str, float]) -> bool:
    value = metrics.get(self.metric)
    if value is None or not math.isfinite(value):
      return False
    if self.best is not None and self._sign * value <= self._sign * self.best:
      return False
    self.best = value
    _save(self._manager, step, state, self._run_info)
    if jax.process_index() == 0:
      (self.directory / "best.json").write_text(
          json.dumps({"step": step, "metric": self.metric, "value": value}) + "\n")
    return True

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
