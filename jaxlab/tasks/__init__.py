"""Tasks (what is learned) by name; see `base.py` for the interface the trainer relies on."""

from jaxlab.tasks.base import Task
from jaxlab.tasks.classification import Classification
from jaxlab.tasks.diffusion import Diffusion
from jaxlab.tasks.maskgit import MaskGIT
from jaxlab.tasks.tokenizer import Tokenizer

_TASKS = {"classification": Classification}
_TASKS["diffusion"] = Diffusion
_TASKS["tokenizer"] = Tokenizer
_TASKS["maskgit"] = MaskGIT


def available() -> list[str]:
  return sorted(_TASKS)


def from_config(task_config) -> Task:
  if task_config.name not in _TASKS:
    raise ValueError(f"unknown task '{task_config.name}'; valid: {', '.join(available())}")
  return _TASKS[task_config.name].from_config(task_config)
