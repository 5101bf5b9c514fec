"""The keys every training config has, and the checks run on a config before anything starts.

Experiment files in `configs/` start from `base_config()` and change what they need; the CLI then
applies `--config.KEY=VALUE` overrides and calls `validate`, which fails with one line naming the key.
"""

from __future__ import annotations

import importlib.util
import math
import os
import pathlib
import re
import sys

import ml_collections
from ml_collections import config_dict

MESH_AXES = ("data", "fsdp", "tensor")
COMPUTE_DTYPES = ("float32", "bfloat16")


class ConfigError(ValueError):
  """A config that cannot run; the message is one line naming the key and the valid choices."""


def base_config() -> ml_collections.ConfigDict:
  """Defaults for every key the trainer reads; experiment configs override what they need."""
  from jaxlab import tasks  # pylint: disable=import-outside-toplevel
  from jaxlab.data import default_dataset_config  # pylint: disable=import-outside-toplevel
  from jaxlab.optim import registry as optimizers  # pylint: disable=import-outside-toplevel
  from jaxlab.tasks import registry as task_registry  # pylint: disable=import-outside-toplevel

  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 128  # global, over all devices and hosts
  # Steps or epochs: set one of each pair (STEPS_OR_EPOCHS); an epoch is the train split at the
  # global batch size.
  c.total_steps = config_dict.placeholder(int)
  c.num_epochs = config_dict.placeholder(float)
  c.log_every_steps = 50
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3
  # Also keep the checkpoint with the best value of an eval metric (e.g. "eval/accuracy"), in
  # WORKDIR/best_checkpoint; "" keeps none.
  c.checkpoint_best = ml_collections.ConfigDict({"metric": "", "mode": "max"})
  c.eval_batch_size = config_dict.placeholder(int)  # default: batch_size
  c.grad_accum_steps = 1  # microbatches per optimizer update
  c.compute_dtype = "float32"  # params stay float32; activations in this dtype
  # Compiled programs are kept here (jax's persistent compilation cache), so a resumed or repeated
  # run does not compile them again. The environment variable JAXLAB_COMPILATION_CACHE overrides
  # it: another directory, or "off". "" turns it off too.
  c.compilation_cache_dir = "~/.cache/jaxlab/xla"
  # A non-finite loss or gradient drops that update; then "stop" (naming the step) or "skip" (go
  # on; logged as train/skipped). No checkpoint is ever written after an update that stops.
  c.nonfinite = "stop"

  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.sharding = ml_collections.ConfigDict()
  # Logical axis names on parameters -> mesh axes, applied where the dimension divides.
  c.sharding.rules = (("conv_out", "tensor"), ("mlp", "tensor"))
  # FSDP shards the largest divisible dimension of parameters with at least this many elements.
  c.sharding.fsdp_min_size = 2**14

  # What is learned: the task's own keys (jaxlab/tasks/; tasks.default_config(name) for others).
  c.task = tasks.default_config(task_registry.DEFAULT)
  c.model = ml_collections.ConfigDict({"name": "small_cnn"})  # other keys go to the constructor
  c.dataset = default_dataset_config()

  # Start from another run's checkpoint (see jaxlab/stages.py); ignored when resuming this run.
  c.init_from = ml_collections.ConfigDict()
  # A workdir, its checkpoints/ or a step dir; or a timm/PyTorch weights file (.safetensors, ...).
  c.init_from.path = config_dict.placeholder(str)
  c.init_from.step = config_dict.placeholder(int)  # default: latest
  c.init_from.include = ("^params/", "^model_state/")  # regexes on "params/conv1/kernel"
  c.init_from.skip = ()  # e.g. ("^params/head/",) for a new classifier head
  c.init_from.rename = ()  # ((regex, replacement), ...)

  c.optim = ml_collections.ConfigDict()
  c.optim.name = optimizers.DEFAULT
  c.optim.lr = 0.1  # peak learning rate
  # Weight decay, when set, whatever hparams say (timm's --weight-decay); None: hparams' or the
  # optimizer's default.
  c.optim.weight_decay = config_dict.placeholder(float)
  c.optim.schedule = "cosine"  # constant, cosine, linear, polynomial, step
  c.optim.warmup_steps = config_dict.placeholder(int)  # None: no warmup
  c.optim.warmup_epochs = config_dict.placeholder(float)
  c.optim.warmup_lr = 0.0  # warmup rises linearly from this to lr (timm's --warmup-lr)
  c.optim.end_lr = 0.0  # cosine, linear and polynomial decay to this
  c.optim.power = 1.0  # polynomial
  c.optim.milestones = ()  # step: multiply by gamma at these steps ...
  c.optim.milestones_epochs = ()  # ... or at these epochs
  c.optim.gamma = 0.1
  c.optim.clip_grad_norm = config_dict.placeholder(float)
  c.optim.hparams = ml_collections.ConfigDict({"momentum": 0.9, "weight_decay": 5e-4})
  # No weight decay on 1-D parameters (biases, norms) and on paths matching these regexes.
  c.optim.weight_decay_exclude_1d = True
  # The default names timm's models list in `no_weight_decay()` (ViT/DeiT/Swin embeddings, tables).
  c.optim.weight_decay_exclude = (
      r"(^|/)(pos_embed|cls_token|dist_token|reg_token|absolute_pos_embed|relative_position_bias_table)$",)
  # Parameter groups with a scaled lr (see jaxlab/optim/param_groups.py): (regex, factor) pairs,
  # and layer-wise lr decay for fine-tuning, with regexes naming the layers from the input up
  # (the default fits ViT/DeiT; unmatched parameters such as the head keep the full lr).
  c.optim.lr_multipliers = ()
  c.optim.layer_decay = config_dict.placeholder(float)
  c.optim.layer_decay_layers = (r"^(cls_token|pos_embed|patch_embed|reg_token)", r"^blocks/(\d+)/")
  # Weight averaging chained after the optimizer: none, ema, sema, swa or lookahead, with its
  # keywords (sema: momentum, switch_every or switch_every_epochs, warmup_steps; lookahead:
  # sync_period, slow_step_size). Batch statistics are
  # averaged (and switched) alongside unless average_model_state is False.
  c.optim.averaging = ml_collections.ConfigDict(
      {"name": "none", "hparams": ml_collections.ConfigDict(), "average_model_state": True})
  return c


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/file.py[:arg]` the way `config_flags.DEFINE_config_file` does."""
  path, _, arg = spec.partition(":")
  file = pathlib.Path(path)
  if not file.is_file():
    raise ConfigError(f"config file '{path}' does not exist")
  module_spec = importlib.util.spec_from_file_location(f"jaxlab_config_{file.stem}", file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


# Quantities given in steps or in epochs: a config sets at most one form of each. A command-line
# override of one form replaces the other form a config file set (`prefer_command_line`).
STEPS_OR_EPOCHS = (("total_steps", "num_epochs"), ("optim.warmup_steps", "optim.warmup_epochs"),
                   ("optim.milestones", "optim.milestones_epochs"))


def _get(config: ml_collections.ConfigDict, key: str):
  for part in key.split("."):
    config = config.get(part) if isinstance(config, (ml_collections.ConfigDict, dict)) else None
  return config


def _is_set(value) -> bool:
  return value is not None and value != () and value != []


def prefer_command_line(config: ml_collections.ConfigDict, argv: list[str]) -> None:
  """`--config.total_steps=100` on a config file that trains for `num_epochs` means 100 steps:
  clears the other form of each pair in STEPS_OR_EPOCHS that only the config file set."""
  overridden = set(override_keys(argv))
  for pair in STEPS_OR_EPOCHS:
    for given, other in (pair, pair[::-1]):
      if given in overridden and other not in overridden and _is_set(_get(config, other)):
        parent, _, leaf = other.rpartition(".")
        node = _get(config, parent) if parent else config
        node[leaf] = () if isinstance(node[leaf], (tuple, list)) else None


COMPILATION_CACHE_ENV = "JAXLAB_COMPILATION_CACHE"


def compilation_cache_dir(config: ml_collections.ConfigDict) -> pathlib.Path | None:
  """Where compiled programs are kept for this run: $JAXLAB_COMPILATION_CACHE, else the config's
  `compilation_cache_dir`; None when either says "off" (or is empty)."""
  value = os.environ.get(COMPILATION_CACHE_ENV, config.get("compilation_cache_dir", "") or "")
  if value.strip().lower() in ("", "off", "0", "none", "false"):
    return None
  return pathlib.Path(value).expanduser()


def override_keys(argv: list[str]) -> list[str]:
  """The keys of the `--config.a.b=v` (or `--config.a.b v`) overrides in `argv`: 'a.b', ..."""
  return [m.group(1) for m in (re.match(r"--config\.([^=]+)", a) for a in argv) if m]


def check_override_keys(config: ml_collections.ConfigDict, argv: list[str]) -> None:
  """Each `--config.a.b=v` must name an existing key; config_flags would print a traceback."""
  for key in override_keys(argv):
    node, walked = config, []
    for part in key.split("."):
      if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
        where = f"under '{'.'.join(walked)}'" if walked else "at the top level"
        valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(none: a leaf value)"
        raise ConfigError(f"unknown config key '{key}'; valid keys {where}: {valid}")
      node = node[part]
      walked.append(part)


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int, int]:
  """Resolves -1 in `config.mesh` and checks the mesh covers exactly `num_devices`."""
  sizes = [int(mesh_config[a]) for a in MESH_AXES]
  if any(s == 0 or s < -1 for s in sizes):
    raise ConfigError(f"mesh sizes must be positive or -1 (the rest), got "
                      f"{dict(zip(MESH_AXES, sizes))}")
  if sizes.count(-1) > 1:
    raise ConfigError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  fixed = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % fixed:
      raise ConfigError(f"mesh {dict(zip(MESH_AXES, sizes))} does not fit {num_devices} devices: "
                        f"{fixed} does not divide {num_devices}")
    sizes[sizes.index(-1)] = num_devices // fixed
  if math.prod(sizes) != num_devices:
    raise ConfigError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but "
                      f"{num_devices} are available; use -1 on one axis to take the rest")
  return tuple(sizes)


def _check_name(key: str, name: str, valid: list[str]) -> None:
  if name not in valid:
    raise ConfigError(f"unknown {key} '{name}'; valid: {', '.join(valid)}")


def check_batch_sizes(config: ml_collections.ConfigDict, data_parallel: int,
                      process_count: int = 1) -> None:
  """Batch sizes that split evenly over the data-parallel devices, microbatches and processes."""
  batch = config.batch_size
  if batch % (data_parallel * config.grad_accum_steps):
    raise ConfigError(
        f"config.batch_size={batch} must be divisible by mesh.data*mesh.fsdp*grad_accum_steps = "
        f"{data_parallel}*{config.grad_accum_steps}")
  if batch % process_count:
    raise ConfigError(f"config.batch_size={batch} must be divisible by the {process_count} processes")
  eval_batch = config.eval_batch_size or batch
  if eval_batch <= 0 or eval_batch % data_parallel:
    raise ConfigError(f"config.eval_batch_size={eval_batch} must be a positive multiple of "
                      f"mesh.data*mesh.fsdp = {data_parallel}")


def validate(config: ml_collections.ConfigDict, num_devices: int, process_count: int = 1) -> None:
  """Raises ConfigError (one line) for anything that would fail later, before any work starts."""
  from jaxlab import data, models, optim, tasks  # pylint: disable=import-outside-toplevel

  # The task first: a task named by import path may register the models it uses.
  try:
    task_class = tasks.task_class(config.task.name)
  except ValueError as e:
    raise ConfigError(f"config.task.name: {e}") from None
  try:
    task_class.from_config(config.task)
  except ValueError as e:
    message = str(e)
    raise ConfigError(message if message.startswith("config.") else f"config.task: {message}") from None
  try:
    models.check_kwargs(config.model.name, {k: v for k, v in config.model.items() if k != "name"})
  except ValueError as e:
    raise ConfigError(f"config.model: {e}") from None
  _check_name("config.optim.name", config.optim.name, optim.available())
  _check_name("config.optim.schedule", config.optim.schedule, optim.available_schedules())
  _check_name("config.optim.averaging.name", config.optim.averaging.name, optim.available_averaging())
  _check_name("config.compute_dtype", config.compute_dtype, list(COMPUTE_DTYPES))
  _check_name("config.nonfinite", config.nonfinite, ["skip", "stop"])
  _check_name("config.checkpoint_best.mode", config.checkpoint_best.mode, ["max", "min"])
  try:
    data.check_dataset_name(config.dataset.name)
  except ValueError as e:
    raise ConfigError(f"config.dataset.name: {e}") from None
  try:
    data.check_augmentation_config(config.dataset)
  except ValueError as e:
    raise ConfigError(f"config.{e}") from None

  shape = mesh_shape(config.mesh, num_devices)
  data_parallel = shape[0] * shape[1]
  for key in ("batch_size", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
              "grad_accum_steps", "keep_checkpoints"):
    if config[key] is None or config[key] <= 0:
      raise ConfigError(f"config.{key} must be a positive integer, got {config[key]}")
  check_batch_sizes(config, data_parallel, process_count)
  for steps, epochs in STEPS_OR_EPOCHS:
    if _is_set(_get(config, steps)) and _is_set(_get(config, epochs)):
      raise ConfigError(f"config.{steps}={_get(config, steps)!r} and config.{epochs}="
                        f"{_get(config, epochs)!r} are both set; set one (the other to None)")
  if config.total_steps is None and config.num_epochs is None:
    raise ConfigError("set config.total_steps or config.num_epochs")
  if config.total_steps is not None and config.total_steps <= 0:
    raise ConfigError(f"config.total_steps must be positive, got {config.total_steps}")
  if config.num_epochs is not None and config.num_epochs <= 0:
    raise ConfigError(f"config.num_epochs must be positive, got {config.num_epochs}")
  if config.optim.lr < 0:
    raise ConfigError(f"config.optim.lr must be >= 0, got {config.optim.lr}")
  for pair in config.optim.lr_multipliers:
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2 or not isinstance(pair[0], str)
        or not isinstance(pair[1], (int, float)) or pair[1] < 0):
      raise ConfigError(f"config.optim.lr_multipliers takes (regex, factor >= 0) pairs, got {pair!r}")
  if config.optim.layer_decay is not None and not 0 < config.optim.layer_decay <= 1:
    raise ConfigError(f"config.optim.layer_decay must be in (0, 1], got {config.optim.layer_decay}")
  if "lr" in config.optim.hparams:
    raise ConfigError("set the learning rate with config.optim.lr, not config.optim.hparams.lr")
  foreign = optim.foreign_hparams(config.optim.name, dict(config.optim.hparams))
  if foreign:  # left over from another optimizer (the config's), not misspelt: drop them
    print(f"note: config.optim.hparams {', '.join(foreign)} are not '{config.optim.name}' "
          "hyperparameters: dropped", file=sys.stderr)
    config.optim.hparams = ml_collections.ConfigDict(
        {k: v for k, v in config.optim.hparams.items() if k not in foreign})
  if config.optim.get("weight_decay") is not None:  # it wins: say so in the recorded config too
    if "weight_decay" not in optim.entry(config.optim.name).resolve(dict(config.optim.hparams)):
      raise ConfigError(f"config.optim.weight_decay: optimizer '{config.optim.name}' takes none")
    config.optim.hparams = ml_collections.ConfigDict(
        {**config.optim.hparams, "weight_decay": config.optim.weight_decay})
  try:
    optim.check_hparams(config.optim.name, dict(config.optim.hparams))
    optim.entry(config.optim.name).needs(dict(config.optim.hparams))  # checks step hyperparameters
  except ValueError as e:
    raise ConfigError(f"config.optim.hparams: {e}") from None
  if config.init_from.path:
    from jaxlab import stages  # pylint: disable=import-outside-toplevel
    try:
      stages.check_source(config.init_from.path, config.init_from.step)
    except stages.InitFromError as e:
      raise ConfigError(f"config.init_from.path: {e}") from None
  for rule in config.sharding.rules:
    if len(rule) != 2 or rule[1] not in MESH_AXES:
      raise ConfigError(f"config.sharding.rules entry {rule} must be (logical_name, mesh_axis) "
                        f"with mesh_axis in {', '.join(MESH_AXES)}")


def total_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
  """`total_steps` if set, else `num_epochs` over the train split at the global batch size."""
  if config.total_steps is not None:
    return int(config.total_steps)
  return max(1, round(config.num_epochs * num_train_examples / config.batch_size))
