"""Tasks (what is learned) by name; `base.py` holds the contract every task follows.

`config.task.name` is a registered name (`available()`) or the import path of a task class
outside jaxlab, `"package.module:ClassName"` (its module is imported, which may also register
the models it uses).
"""

from jaxlab.tasks.base import (CLASSIFIES, GENERATES, SAMPLED_LOSS, ModelBuilder, Sampling, Task, make_model,
                               require_abilities)
from jaxlab.tasks.registry import available, default_config, from_config, register, task_class
# Importing the task modules registers them.
from jaxlab.tasks import classification, diffusion, maskgit, tokenizer  # noqa: F401

__all__ = ["CLASSIFIES", "GENERATES", "SAMPLED_LOSS", "ModelBuilder", "Sampling", "Task", "available",
           "default_config", "from_config", "make_model", "register", "require_abilities",
           "task_class"]
