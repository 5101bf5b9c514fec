"""Orbax checkpoints of the TrainState: periodic async saves, resume from the latest.

The state is saved as a plain nested dict (`flax.serialization.to_state_dict`), so checkpoints do
not depend on Python class names, and restored onto an abstract target that carries the target
shardings: every process reads only the shards it owns.

Each step also carries, as Orbax step metadata, the run's resolved config and the data position
(`saved_run_info(step_dir)`): the rng is in the state, and the data pipeline restarts exactly at
batch `state.step` from the seed, so a step directory alone says how to continue or reproduce it.

Nothing good is ever set aside. A workdir whose checkpoints hold another run's state (another
model or optimizer) is refused before anything is touched (`check_same_run`); only a step that a
fresh reader fails to read twice is renamed to `damaged-N`, one step at a time.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import pathlib
import sys

import jax
import orbax.checkpoint as ocp
from absl import logging
from flax import serialization

from jaxlab.errors import first_line
from jaxlab.state import TrainState

_ITEM = "default"  # Orbax's item directory inside a step


class CheckpointError(RuntimeError):
  """No checkpoint in the directory can be read; the message names it."""


class CheckpointMismatch(CheckpointError):
  """The workdir's checkpoints belong to another run (another model, optimizer or task)."""


@contextlib.contextmanager
def quiet_orbax():
  """Orbax logs warnings for ordinary read-only access (read-only managers, item metadata)."""
  level = logging.get_verbosity()
  logging.set_verbosity(min(level, logging.ERROR))  # absl: lower is quieter
  try:
    yield
  finally:
    logging.set_verbosity(level)


@contextlib.contextmanager
def _failed_reads_quiet():
  """A failed Orbax read leaves its other reads' coroutines to the garbage collector, and each
  prints "Exception ignored in ..." with a page of traceback: the same failure, which the caller
  reports in one line. Collect them here, with that printing off."""
  previous = sys.unraisablehook
  sys.unraisablehook = lambda unraisable: None
  try:
    yield
  finally:
    gc.collect()
    sys.unraisablehook = previous


def _read_only(directory: pathlib.Path) -> ocp.CheckpointManager:
  with quiet_orbax():
    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))


def saved_steps(directory: str | pathlib.Path) -> list[int]:
  """Finished steps in a checkpoint directory, newest first (none if it does not exist)."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return []
  manager = _read_only(directory)
  try:
    return sorted(manager.all_steps(), reverse=True)
  finally:
    manager.close()


def _shapes(tree) -> dict[str, tuple]:
  """'['params']['conv1']['kernel']' -> (shape, dtype) of every array in a state dict or metadata."""
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return {jax.tree_util.keystr(path): (tuple(leaf.shape), str(leaf.dtype)) for path, leaf in leaves}


def saved_shapes(step_dir: pathlib.Path) -> dict[str, tuple]:
  """Shapes and dtypes of one step's arrays, from its metadata (no array is read)."""
  with quiet_orbax():
    return _shapes(ocp.PyTreeCheckpointer().metadata(step_dir / _ITEM).item_metadata.tree)


def _config_diff(saved: dict, current: dict, prefix: str = "") -> list[str]:
  """Dotted config keys whose values differ between two config dicts."""
  keys = []
  for key in sorted(set(saved) | set(current)):
    a, b = saved.get(key), current.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      keys += _config_diff(a, b, f"{prefix}{key}.")
    elif a != b:
      keys.append(f"{prefix}{key}")
  return keys


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
  manager = _read_only(step_dir.parent)
  try:
    with quiet_orbax():
      return dict(manager.metadata(int(step_dir.name)).custom_metadata or {})
  finally:
    manager.close()


def restore_step(directory: pathlib.Path, step: int, abstract_state: TrainState) -> TrainState:
  """One step onto `abstract_state` (jax.ShapeDtypeStruct leaves carrying the shardings to
  restore onto), with a reader of its own: a failed read leaves nothing behind that fails the
  next one."""
  manager = _read_only(directory)
  try:
    target = serialization.to_state_dict(abstract_state)
    with quiet_orbax():
      restored = manager.restore(step, args=ocp.args.StandardRestore(target))
  finally:
    manager.close()
  return serialization.from_state_dict(abstract_state, restored)


def run_info(config) -> dict:
  """What every checkpoint of a run records besides the state (JSON-able)."""
  return {"config": json.loads(config.to_json_best_effort()),
          "data_position": {"seed": config.seed, "batch_size": config.batch_size}}


class Checkpointer:
  """Saves every `every_steps` steps (and when forced), keeps the newest `keep`.

  The directory is created by the first save: reading (`check_same_run`, `restore_latest`)
  writes nothing.
  """

  def __init__(self, directory: str | pathlib.Path, *, every_steps: int, keep: int,
               run_info: dict | None = None):
    self.directory = pathlib.Path(directory).absolute()
    self._every, self._keep = every_steps, keep
    self._run_info = run_info
    self._manager_instance = None

  @property
  def _manager(self) -> ocp.CheckpointManager:
    if self._manager_instance is None:
      self._manager_instance = _async_manager(self.directory, self._keep)
    return self._manager_instance

  def latest_step(self) -> int | None:
    steps = saved_steps(self.directory)
    return steps[0] if steps else None

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
    return restore_step(self.directory, step, abstract_state)

  def check_same_run(self, abstract_state: TrainState, config=None) -> None:
    """Raises CheckpointMismatch (one line, nothing touched) when the newest step whose metadata
    reads holds arrays other than this run's state: another model, optimizer or task."""
    expected = _shapes(serialization.to_state_dict(abstract_state))
    for step in saved_steps(self.directory):
      try:
        saved = saved_shapes(self.directory / str(step))
      except Exception:  # pylint: disable=broad-except  # unreadable metadata: restore_latest decides
        continue
      if saved == expected:
        return
      differ = sorted(set(saved) ^ set(expected)) or [k for k in saved if saved[k] != expected[k]]
      what = f"{len(differ)} array(s) differ, e.g. {differ[0]}"
      if config is not None:
        try:
          keys = _config_diff(saved_run_info(self.directory / str(step)).get("config", {}),
                              json.loads(config.to_json_best_effort()))
          what = f"config keys that differ from it: {', '.join(keys[:8]) or 'none'}"
        except Exception:  # pylint: disable=broad-except  # no recorded config: name the arrays
          pass
      raise CheckpointMismatch(
          f"{self.directory} holds checkpoints of another run (step {step}: its state does not fit "
          f"this config; {what}); nothing was changed: use a new --workdir, or start from them "
          f"with --config.init_from.path={self.directory.parent}")

  def restore_latest(self, abstract_state: TrainState, report=print) -> TrainState | None:
    """The newest checkpoint that reads back whole; a damaged one is named and set aside.

    Call `check_same_run` first: after it, a step that fails to restore is damage, not another
    run's. Each attempt uses a fresh reader, and a step is set aside only when a second fresh
    reader fails too. (Orbax never lists a save that did not finish: it writes to a temporary
    directory and renames it at the end.) Returns None when there is no checkpoint at all.
    """
    steps = saved_steps(self.directory)
    for step in steps:
      error = None
      for _ in range(2):  # a second fresh reader must fail too before the step is called damaged
        try:
          with _failed_reads_quiet():
            return self.restore(step, abstract_state)
        except Exception as e:  # pylint: disable=broad-except  # any read failure
          error = e
      kept = self._set_aside(step)
      report(f"checkpoint {self.directory / str(step)} is damaged ({type(error).__name__}: "
             f"{first_line(error)}); moved to {kept}, falling back to the previous one")
    if steps:
      raise CheckpointError(f"no readable checkpoint in {self.directory} (tried steps "
                            f"{', '.join(map(str, steps))}); move them away to start afresh")
    return None

  def _set_aside(self, step: int) -> pathlib.Path:
    """Renames a damaged step out of Orbax's view (kept for inspection, never deleted)."""
    kept = self.directory / f"damaged-{step}"
    if jax.process_index() == 0:
      (self.directory / str(step)).rename(kept)
    if self._manager_instance is not None:
      self._manager_instance.reload()
    return kept

  def wait(self) -> None:
    if self._manager_instance is not None:
      self._manager_instance.wait_until_finished()

  def close(self) -> None:
    if self._manager_instance is not None:
      self._manager_instance.wait_until_finished()
      self._manager_instance.close()


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
