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

`path` may also be a weights file with timm/PyTorch names (.safetensors, .npz; .pth/.bin with
torch installed), e.g. a timm checkpoint to fine-tune: it is converted by `jaxlab.convert.timm`
into the module built from the run's `config.model` (a checkpoint head for another number of
classes is skipped, RGB stem filters are adapted to `in_chans`), and then selected by the same
`include` / `skip` / `rename` rules.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx, serialization
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxlab.checkpoint import quiet_orbax
from jaxlab.convert.state_dict import WEIGHTS_SUFFIXES, load_state_dict
from jaxlab.errors import first_line
from jaxlab.state import TrainState

# Orbax stores the TrainState under this item name (CheckpointManager's default).
_ITEM = "default"


class InitFromError(ValueError):
  """The source checkpoint cannot initialise this run; the message lists every problem."""


def is_weights_file(path: str | pathlib.Path) -> bool:
  """A file (not a run's checkpoint directory): read as timm/PyTorch weights."""
  return pathlib.Path(path).is_file()


def check_source(path: str | pathlib.Path, step: int | None = None) -> None:
  """Raises InitFromError (one line) when `path` is neither a checkpoint nor a weights file."""
  if not is_weights_file(path):
    resolve_checkpoint(path, step)
  elif pathlib.Path(path).suffix.lower() not in WEIGHTS_SUFFIXES:
    raise InitFromError(f"'{path}' is a file but not a weights file; valid: a workdir, its "
                        f"checkpoints/ or a step dir, or a file ending in {', '.join(WEIGHTS_SUFFIXES)}")


def resolve_checkpoint(path: str | pathlib.Path, step: int | None = None) -> pathlib.Path:
  """The directory of one checkpoint step, from a workdir, a checkpoints/ dir or a step dir; an
  absolute path (Orbax reads only those)."""
  path = pathlib.Path(path).absolute()
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
  directory: pathlib.Path  # the checkpoint step to read, or the weights file
  mapping: dict[str, str]  # source path -> target path
  arrays: dict[str, np.ndarray] | None = None  # a weights file's converted values, by source path


def plan(abstract_state: TrainState, config: ml_collections.ConfigDict,
         run_models: tuple = ()) -> InitPlan:
  """Checks that the selected keys fit this model; raises InitFromError. A checkpoint is checked
  from its metadata only; a weights file is read and converted into the first of `run_models`
  ((tasks.RunModel, its abstract module) pairs: where the run's `config.model` sits)."""
  if is_weights_file(config.path):
    check_source(config.path)  # its suffix
    directory = pathlib.Path(config.path)
    source = arrays = _weights(directory, run_models)
  else:
    directory, arrays = resolve_checkpoint(config.path, config.get("step", None)), None
    source = {k: leaf for k, (_, leaf) in _flat(_metadata(directory)).items()}
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
  return InitPlan(directory, mapping, arrays)


def _metadata(directory: pathlib.Path):
  try:
    with quiet_orbax():
      item = ocp.PyTreeCheckpointer().metadata(directory / _ITEM).item_metadata
  except Exception as e:  # pylint: disable=broad-except  # any unreadable metadata, one line
    raise InitFromError(f"init_from {directory} is damaged and cannot be read "
                        f"({type(e).__name__}: {first_line(e)})") from None
  if item is None:
    raise InitFromError(f"init_from {directory} is damaged and cannot be read (no array metadata)")
  return item.tree


def _weights(path: pathlib.Path, run_models: tuple) -> dict[str, np.ndarray]:
  """A weights file converted into the run's model, keyed like the TrainState ('params/...')."""
  from jaxlab.convert import timm as timm_convert  # pylint: disable=import-outside-toplevel
  if not run_models:
    raise InitFromError(f"init_from {path}: a weights file initialises the module built from "
                        "config.model, and this task builds none")
  where, module = run_models[0]
  try:
    state_dict = load_state_dict(path)
  except Exception as e:  # pylint: disable=broad-except  # damaged or unreadable file: one line
    raise InitFromError(f"init_from {path} cannot be read ({type(e).__name__}: {first_line(e)})") from None
  try:
    values = timm_convert.timm_values(module, state_dict, name=where.name, source=str(path))
  except ValueError as e:
    raise InitFromError(f"init_from {e}") from None
  params = set(dict(nnx.to_flat_state(nnx.state(module, nnx.Param))))
  return {"/".join(map(str, ("params" if p in params else "model_state",) + tuple(where.path) + p)): v
          for p, v in values.items()}


def load(state: TrainState, abstract_state: TrainState, init: InitPlan) -> TrainState:
  """`state` with the planned arrays replaced, each read straight into its target sharding."""
  target = _flat(serialization.to_state_dict(abstract_state))
  if init.arrays is not None:  # a converted weights file, already in memory on every host
    loaded = {}
    for src, dst in init.mapping.items():
      value, leaf = init.arrays[src], target[dst][1]
      loaded[dst] = jax.make_array_from_callback(leaf.shape, leaf.sharding, lambda i, v=value: v[i])
  else:
    item = unflatten_dict({tuple(src.split("/")): target[dst][1] for src, dst in init.mapping.items()})
    try:
      with quiet_orbax():
        restored = ocp.PyTreeCheckpointer().restore(init.directory / _ITEM, args=ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
            partial_restore=True))
    except Exception as e:  # pylint: disable=broad-except  # damaged source: one line
      raise InitFromError(f"init_from {init.directory} is damaged and cannot be read "
                          f"({type(e).__name__}: {first_line(e)})") from None
    loaded = {init.mapping[k]: leaf for k, (_, leaf) in _flat(restored).items()}
  merged = {key: loaded.get(path, leaf)
            for path, (key, leaf) in _flat(serialization.to_state_dict(state), True).items()}
  return serialization.from_state_dict(state, unflatten_dict(merged))
