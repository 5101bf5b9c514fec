"""Tasks (what is learned) by name; `base.py` holds the contract every task follows.

`config.task.name` is a registered name (`available()`) or the import path of a task class
outside jaxlab, `"package.module:ClassName"` (its module is imported, which may also register
the models it uses).
"""

from __future__ import annotations

import importlib

import ml_collections

from jaxlab.tasks.base import (GENERATES, SAMPLED_LOSS, ModelBuilder, Sampling, Task, make_model,
                               require_abilities)

_TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
  """Class decorator: makes `cls` selectable as `config.task.name = cls.name`."""
  if not (isinstance(cls, type) and issubclass(cls, Task)) or not cls.name:
    raise TypeError(f"{cls!r} must subclass jaxlab.tasks.Task and set its `name`")
  if _TASKS.get(cls.name, cls) is not cls:
    raise ValueError(f"task '{cls.name}' is already registered")
  _TASKS[cls.name] = cls
  return cls


def available() -> list[str]:
  return sorted(_TASKS)


def task_class(name: str) -> type[Task]:
  """The task class for a registered name or a `module:Class` path; one-line ValueError if none."""
  if name in _TASKS:
    return _TASKS[name]
  if ":" in name:
    module_name, _, attribute = name.partition(":")
    try:
      found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as e:
      raise ValueError(f"cannot import task '{name}': {e}") from None
    if not (isinstance(found, type) and issubclass(found, Task)):
      raise ValueError(f"task '{name}' is not a subclass of jaxlab.tasks.Task")
    return found
  raise ValueError(f"unknown task '{name}'; valid: {', '.join(available())}, or a "
                   "'package.module:ClassName' path")


def default_config(name: str) -> ml_collections.ConfigDict:
  """`config.task` for task `name`, every key at its default."""
  config = task_class(name).default_config()
  config.name = name
  return config


def from_config(task_config: ml_collections.ConfigDict) -> Task:
  return task_class(task_config.name).from_config(task_config)


# Importing the task modules registers them.
from jaxlab.tasks import classification, diffusion, maskgit, tokenizer  # noqa: E402,F401  pylint: disable=wrong-import-position

__all__ = ["GENERATES", "SAMPLED_LOSS", "ModelBuilder", "Sampling", "Task", "available",
           "default_config", "from_config", "make_model", "register", "require_abilities", "task_class"]
