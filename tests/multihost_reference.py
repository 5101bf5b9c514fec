"""The losses a multi-process run must log, computed again in this one process.

Each process of a multi-host run reads its own slice of the train split (`train_batches` with its
process index and count), and a step's global batch is the processes' local batches side by side.
Replaying exactly those batches through a one-device mesh here gives the loss curve the
multi-process run should have logged, up to the order of floating-point sums: a check that
`jax.distributed` and the per-process data feeding compute the same model as one process does.
"""

from __future__ import annotations

import numpy as np


def config_with_overrides(spec: str, overrides: tuple[str, ...]):
  """`load_config_file(spec)` with `--config.KEY=VALUE` overrides, cast like the CLI casts them."""
  from jaxlab.config import load_config_file  # pylint: disable=import-outside-toplevel

  config = load_config_file(spec)
  for override in overrides:
    key, value = override.removeprefix("--config.").split("=", 1)
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    current = node[leaf]
    node[leaf] = value if current is None else type(current)(value)
  return config


def replay_losses(spec: str, overrides: tuple[str, ...], *, num_processes: int) -> np.ndarray:
  """Per-step train losses of `num_processes` processes' batches, trained on one device."""
  import jax  # pylint: disable=import-outside-toplevel

  from jaxlab import data, trainer  # pylint: disable=import-outside-toplevel

  config = config_with_overrides(spec, overrides)
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1
  setup = trainer.build(config, devices=jax.devices()[:1])
  state = trainer.initial_state(setup)
  train_step, _ = trainer.compile_steps(setup, config.grad_accum_steps)
  streams = [data.train_batches(config.dataset, local_batch_size=config.batch_size // num_processes,
                                seed=config.seed, process_index=p, process_count=num_processes)
             for p in range(num_processes)]
  losses = []
  for _ in range(setup.total_steps):
    local = [next(stream) for stream in streams]
    batch = {key: np.concatenate([b[key] for b in local]) for key in local[0]}
    state, metrics = train_step(state, trainer.to_global(batch, setup.batch_sharding))
    losses.append(float(metrics["loss"]))
  return np.array(losses)
