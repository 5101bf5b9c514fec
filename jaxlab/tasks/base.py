"""The task contract: the part of training that knows what is learned.

The trainer, the study engine, checkpointing, `jaxlab.sample` and `jaxlab.export` only see this
interface, so classification, diffusion and tokenizer training differ here and nowhere else. A
new task is a subclass of `Task` in its own module, registered with `@tasks.register`; nothing
else in jaxlab changes. (A task outside jaxlab is named by its import path in the config:
`config.task.name = "my_project.tasks:MyTask"`.)

A task is a frozen dataclass whose fields are its `config.task` keys:

- `name`: the class attribute `config.task.name` selects it by.
- `default_config()`: `config.task` with every key and its default (experiment configs start
  from it); `from_config(config.task)` validates: an unknown key or a bad value raises ValueError
  with one line naming the key and the valid choices (`__post_init__` checks values).
- `init(build)` builds the module from the run's `config.model` through `build` (a
  `ModelBuilder`: the one path from a model config to a module; the task gets the dataset's
  description, the compute dtype and the rngs through it, not the run config).
- `loss(model, batch, rng)` runs in train mode and returns `(scalar loss, {name: scalar})`.
  Mutable model state (batch statistics, codebook EMAs) is updated in place on `model`; the step
  collects it afterwards. `rng` is fresh for every step and microbatch.
- `evaluate(model, batch)` runs in eval mode and returns per-batch *sums* over real examples
  (`batch['mask']` marks padding), always including `count`; the trainer adds them over the
  eval set and divides by `count`.

Optional abilities are declared in `abilities`, never discovered with `hasattr`:

- `SAMPLED_LOSS`: `sampled_loss(model, batch, rng)`, the loss on targets sampled from the model's
  own prediction (optimizers that estimate the Hessian's Gauss-Newton diagonal: SophiaG).
- `CLASSIFIES`: the model maps images to class logits through a final `head` layer (what
  classifier features for FD/KID read: the head's input).
- `GENERATES`: `prepare_sampling(info, **options) -> Sampling`, what `jaxlab.sample` draws
  with. Options are the sampler's flags (`sampling_options` lists those the task takes; omitted
  ones default to the task's config). Guidance has one convention everywhere: classifier-free
  guidance `uncond + w·(cond − uncond)`, w = 1 means none; the label a generator is trained to read as
  "no class" is `info.num_classes`, and the probability of dropping a label to it in training
  is the task's `label_dropout`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Protocol

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxlab import models

Batch = dict[str, jax.Array]

SAMPLED_LOSS = "sampled_loss"
GENERATES = "generates"
CLASSIFIES = "classifies"


class DatasetInfo(Protocol):
  """What a task may know of the data (jaxlab.data.DatasetInfo)."""
  image_shape: tuple[int, ...]
  num_classes: int


def plain(value: Any) -> Any:
  """A ConfigDict as a plain dict (task dataclasses hold dicts); anything else unchanged."""
  return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value


def _as_config(value: Any) -> Any:
  if dataclasses.is_dataclass(value):
    value = dataclasses.asdict(value)
  return ml_collections.ConfigDict(value) if isinstance(value, dict) else value


@dataclasses.dataclass(frozen=True)
class ModelBuilder:
  """The one path from a model config to a module, handed to `Task.init`.

  `build()` builds the run's `config.model`; `build(other_config)` another model (a frozen
  stage-1 tokenizer, a perceptual network) the same way. `in_channels` and `num_classes` default
  to the dataset's (pass None to leave one out); `defaults` fill constructor keywords the config
  leaves unset. The modules `build()` made from the run's own `config.model` are remembered in
  `built` (where a weights file given as `config.init_from.path` is loaded).
  """
  model_config: dict  # the run's config.model: name + constructor keywords
  info: DatasetInfo
  dtype: Any
  rngs: nnx.Rngs
  built: list = dataclasses.field(default_factory=list)  # (module, registry name) of the run's model

  def __call__(self, model_config: dict | None = None, *, in_channels: int | None = -1,
               num_classes: int | None = -1, **defaults) -> nnx.Module:
    kwargs = {k: plain(v) for k, v in plain(model_config or self.model_config).items()}
    name = kwargs.pop("name")
    if in_channels is not None:
      defaults["in_channels"] = self.info.image_shape[-1] if in_channels == -1 else in_channels
    kwargs = {**defaults, **kwargs}
    classes = self.info.num_classes if num_classes == -1 else num_classes
    module = models.create(name, num_classes=classes, rngs=self.rngs, dtype=self.dtype, **kwargs)
    if model_config is None:
      self.built.append((module, name))
    return module


@dataclasses.dataclass(frozen=True)
class RunModel:
  """Where the module built from the run's `config.model` sits in the task's module."""
  path: tuple  # its path in the task's module (() when the task's module is that model)
  name: str  # its registry name


def make_model(task: Task, model_config, info: DatasetInfo, compute_dtype: str,
               param_key: jax.Array, located: list | None = None) -> nnx.Module:
  """The task's module for a run: parameters from `param_key`, dropout streams from a key
  derived from it (the trainer and the study engine both build through here). `located`, if
  given, receives a `RunModel` for each module built from the run's `config.model`."""
  rngs = nnx.Rngs(params=param_key, dropout=jax.random.fold_in(param_key, 1))
  builder = ModelBuilder(plain(model_config), info, jnp.dtype(compute_dtype), rngs)
  module = task.init(builder)
  if located is not None:
    paths = {id(node): path for path, node in nnx.iter_graph(module)}
    located.extend(RunModel(paths[id(m)], name) for m, name in builder.built if id(m) in paths)
  return module


@dataclasses.dataclass(frozen=True)
class Sampling:
  """A generating task's sampler, ready to draw: `draw(model, labels, rng) -> images`.

  `model` is in eval mode, `labels` int32 [B] (classes, or `info.num_classes` for none; ignored
  when not `conditional`), images [B, H, W, C] in the data's normalised scale. `summary` is what
  the sampling CLI reports: sampler, steps, guidance, nfe (network evaluations per sample).
  """
  draw: Callable[[nnx.Module, jax.Array, jax.Array], jax.Array]
  conditional: bool
  summary: dict


@dataclasses.dataclass(frozen=True)
class Task:
  """Base of every task; see the module docstring for the contract."""

  name: ClassVar[str] = ""
  abilities: ClassVar[frozenset[str]] = frozenset()
  sampling_options: ClassVar[tuple[str, ...]] = ()  # keywords of `prepare_sampling`

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    values = {"name": cls.name}
    for field in dataclasses.fields(cls):
      has_factory = field.default_factory is not dataclasses.MISSING
      values[field.name] = _as_config(field.default_factory() if has_factory else field.default)
    return ml_collections.ConfigDict(values)

  @classmethod
  def from_config(cls, task_config: ml_collections.ConfigDict) -> Task:
    """`cls(**task_config)`; unknown keys give one line naming the valid ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(task_config.keys()) - known - {"name"})
    if unknown:
      raise ValueError(f"unknown key(s) {', '.join(unknown)} for task '{cls.name}'; valid: "
                       f"{', '.join(sorted(known))}")
    return cls(**{k: plain(task_config[k]) for k in known if k in task_config})

  def init(self, build: ModelBuilder) -> nnx.Module:
    raise NotImplementedError

  def loss(self, model: nnx.Module, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict]:
    raise NotImplementedError

  def evaluate(self, model: nnx.Module, batch: Batch) -> dict[str, jax.Array]:
    raise NotImplementedError

  def sampled_loss(self, model: nnx.Module, batch: Batch, rng: jax.Array) -> jax.Array:
    raise NotImplementedError(f"task '{self.name}' declares no {SAMPLED_LOSS}")

  def prepare_sampling(self, info: DatasetInfo, **options) -> Sampling:
    raise NotImplementedError(f"task '{self.name}' does not generate")


def require_abilities(task: Task, needed, by: str) -> None:
  """One line when `by` (e.g. an optimizer) needs abilities the task does not declare."""
  missing = sorted(set(needed) - task.abilities)
  if missing:
    raise ValueError(f"{by} needs a task with {', '.join(missing)}; task '{task.name}' declares "
                     f"{', '.join(sorted(task.abilities)) or 'none'}")


def check_options(task: Task, options: dict) -> None:
  """One line for a sampling option the task does not take."""
  unknown = sorted(set(options) - set(task.sampling_options))
  if unknown:
    raise ValueError(f"a '{task.name}' run takes no sampling option(s) {', '.join(unknown)}; "
                     f"valid: {', '.join(task.sampling_options)}")
