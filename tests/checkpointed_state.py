"""Shared by the two-stage tests (tokenizer → MaskGIT, tokenizer → latent diffusion): a run's
checkpointed state, and a state's arrays by '/'-joined path for comparisons."""

import numpy as np
from flax.traverse_util import flatten_dict

from jaxlab import trainer
from jaxlab.checkpoint import Checkpointer

_ABSTRACT_STATES = {}


def flat_arrays(tree) -> dict[str, np.ndarray]:
  """{'a/b/c': array} of a nested dict of arrays."""
  return {"/".join(map(str, k)): np.asarray(v) for k, v in flatten_dict(tree).items()}


def restore(workdir, config, step):
  """The checkpointed state of one step (the abstract state built once per config)."""
  key = config.to_json_best_effort()
  if key not in _ABSTRACT_STATES:
    _ABSTRACT_STATES[key] = trainer.build(config).abstract_state
  checkpointer = Checkpointer(workdir / "checkpoints", every_steps=1, keep=3)
  state = checkpointer.restore(step, _ABSTRACT_STATES[key])
  checkpointer.close()
  return state
