"""Starting a run from another run's checkpoint (`config.init_from`): pretrain → fine-tune,
tokenizer → generator.

    config.init_from.path = "workdirs/pretrain"     # a workdir, its checkpoints/ or one step's dir
    config.init_from.step = None                     # default: the latest
    config.init_from.include = ("^params/", "^model_state/")   # regexes on "params/conv1/kernel"
    config.init_from.skip = ("^params/head/",)       # e.g. a new classification head
    config.init_from.rename = (("^params/", "params/backbone/"),)  # (regex, replacement) pairs

Keys are '/'-joined paths into the TrainState (`step`, `params`, `model_state`, `opt_state`,
`rng`). Every selected key must exist in the new state with the same shape and dtype; all
mismatches are reported together, key by key. Only the selected arrays are read, each directly
into its target sharding.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import ml_collections
import orbax.checkpoint as ocp
from flax import serialization
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxlab.checkpoint import quiet_orbax
from jaxlab.state import TrainState

# Orbax stores the TrainState under this item name (CheckpointManager's default).
_ITEM = "default"


class InitFromError(ValueError):
  """The source checkpoint cannot initialise this run; the message lists every problem."""


def resolve_checkpoint(path: str | pathlib.Path, step: int | None = None) -> pathlib.Path:
  """The directory of one checkpoint step, from a workdir, a checkpoints/ dir or a step dir."""
  path = pathlib.Path(path)
  if (path / _ITEM).is_dir():
    return path
  root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
  steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []
  if not steps:
    raise InitFromError(f"no checkpoints in '{path}'")
  if step is None:
    step = steps[-1]
  if step not in steps:
    raise InitFromError(f"no step {step} in '{root}'; steps: {', '.join(map(str, steps))}")
  return root / str(step)


def _flat(tree, keep_empty_nodes: bool = False) -> dict[str, tuple]:
  """'a/b/c' -> (original key tuple, leaf); keys may be ints (nnx.List), checkpoints store str."""
  flat = flatten_dict(tree, keep_empty_nodes=keep_empty_nodes)
  return {"/".join(map(str, k)): (k, v) for k, v in flat.items()}


def _select(source: dict, config: ml_collections.ConfigDict) -> dict[str, str]:
  """source path -> target path for every selected, renamed key."""
  include = [re.compile(p) for p in config.get("include", ("^params/", "^model_state/"))]
  skip = [re.compile(p) for p in config.get("skip", ())]
  renames = [(re.compile(a), b) for a, b in config.get("rename", ())]
  mapping = {}
  for key in source:
    if not any(p.search(key) for p in include) or any(p.search(key) for p in skip):
      continue
    target = key
    for pattern, replacement in renames:
      target = pattern.sub(replacement, target)
    mapping[key] = target
  return mapping


@dataclasses.dataclass(frozen=True)
class InitPlan:
  directory: pathlib.Path  # the checkpoint step to read
  mapping: dict[str, str]  # source path -> target path


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return text.splitlines()[0][:200] if text else type(error).__name__


def plan(abstract_state: TrainState, config: ml_collections.ConfigDict) -> InitPlan:
  """Checks, from metadata only, that the selected keys fit this model; raises InitFromError."""
  directory = resolve_checkpoint(config.path, config.get("step", None))
  try:
    with quiet_orbax():
      item = ocp.PyTreeCheckpointer().metadata(directory / _ITEM).item_metadata
  except Exception as e:  # pylint: disable=broad-except  # any unreadable metadata, one line
    raise InitFromError(f"init_from {directory} is damaged and cannot be read "
                        f"({type(e).__name__}: {_first_line(e)})") from None
  if item is None:
    raise InitFromError(f"init_from {directory} is damaged and cannot be read (no array metadata)")
  metadata = item.tree
  source = {k: leaf for k, (_, leaf) in _flat(metadata).items()}
  target = _flat(serialization.to_state_dict(abstract_state))
  mapping = _select(source, config)
  problems = []
  for src, dst in mapping.items():
    if dst not in target:
      problems.append(f"{src} -> {dst}: not in this model")
      continue
    have, want = source[src], target[dst][1]
    if tuple(have.shape) != tuple(want.shape) or have.dtype != want.dtype:
      problems.append(f"{src} -> {dst}: checkpoint {have.dtype}{list(have.shape)}, "
                      f"model {want.dtype}{list(want.shape)}")
  if not mapping:
    problems.append(f"no key matches include={tuple(config.get('include', ()))}")
  if problems:
    raise InitFromError(f"init_from {directory}: {len(problems)} key(s) do not fit (add them to "
                        "config.init_from.skip to keep their fresh initialisation): " + "; ".join(problems))
  return InitPlan(directory, mapping)


def load(state: TrainState, abstract_state: TrainState, init: InitPlan) -> TrainState:
  """`state` with the planned arrays replaced, each read straight into its target sharding."""
  target = _flat(serialization.to_state_dict(abstract_state))
  item = unflatten_dict({tuple(src.split("/")): target[dst][1] for src, dst in init.mapping.items()})
  try:
    with quiet_orbax():
      restored = ocp.PyTreeCheckpointer().restore(init.directory / _ITEM, args=ocp.args.PyTreeRestore(
          item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
          partial_restore=True))
  except Exception as e:  # pylint: disable=broad-except  # damaged source: one line
    raise InitFromError(f"init_from {init.directory} is damaged and cannot be read "
                        f"({type(e).__name__}: {_first_line(e)})") from None
  loaded = {init.mapping[k]: leaf for k, (_, leaf) in _flat(restored).items()}
  merged = {key: loaded.get(path, leaf)
            for path, (key, leaf) in _flat(serialization.to_state_dict(state), True).items()}
  return serialization.from_state_dict(state, unflatten_dict(merged))
