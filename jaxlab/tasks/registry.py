"""Tasks by name: `register` a Task subclass, look it up by name or `module:Class` import path."""

from __future__ import annotations

import importlib

import ml_collections

from jaxlab.tasks.base import Task

_TASKS: dict[str, type[Task]] = {}
DEFAULT = "classification"  # the task of `jaxlab.config.base_config()`


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
