"""Cost of weight averaging (ema / sema / swa) on the trainer's step.

  python benchmarks/averaging_overhead.py --config=configs/quickstart.py --steps=400 [--averaging=sema]

Builds the same run with and without the averaging transform and times the jitted train step on a
device-resident batch, alternating windows of the two so that machine noise hits both alike.
Prints the median step times and the ratio.
"""

from __future__ import annotations

import statistics
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from jaxlab import data, trainer

_CONFIG = config_flags.DEFINE_config_file("config", "configs/quickstart.py", "Training config.")
_AVERAGING = flags.DEFINE_enum("averaging", "sema", ["ema", "sema", "swa"], "Transform to time.")
_STEPS = flags.DEFINE_integer("steps", 400, "Timed steps per variant.")
_WINDOWS = flags.DEFINE_integer("windows", 10, "Alternating windows per variant.")


def _runner(config, batch):
  setup = trainer.build(config)
  state = trainer.initial_state(setup)
  train_step, _ = trainer.compile_steps(setup, config.grad_accum_steps)
  device_batch = trainer.to_global(batch, setup.batch_sharding)
  compiled = train_step.lower(state, device_batch).compile()
  carry = [state]

  def run(n):
    start = time.perf_counter()
    for _ in range(n):
      carry[0], metrics = compiled(carry[0], device_batch)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / n

  run(3)
  return run


def main(argv):
  del argv
  config = _CONFIG.value
  if config.total_steps is None:
    config.total_steps = 1000
  batch = next(data.train_batches(config.dataset, local_batch_size=config.batch_size, seed=0))
  plain = config.copy_and_resolve_references()
  plain.optim.averaging.name = "none"
  averaged = config.copy_and_resolve_references()
  averaged.optim.averaging.name = _AVERAGING.value
  averaged.optim.averaging.hparams = {"sema": {"momentum": 0.999, "switch_every": 100},
                                      "ema": {"momentum": 0.999}, "swa": {"start_step": 0}}[_AVERAGING.value]
  runners = {"plain": _runner(plain, batch), _AVERAGING.value: _runner(averaged, batch)}
  per_window = max(_STEPS.value // _WINDOWS.value, 1)
  times = {name: [] for name in runners}
  for _ in range(_WINDOWS.value):
    for name, run in runners.items():
      times[name].append(run(per_window))
  medians = {name: statistics.median(t) for name, t in times.items()}
  print(f"model={config.model.name} batch={config.batch_size} devices={jax.device_count()}x"
        f"{jax.devices()[0].platform}")
  for name, median in medians.items():
    print(f"{name:8} step {median * 1e3:8.3f} ms")
  print(f"{_AVERAGING.value} / plain = {medians[_AVERAGING.value] / medians['plain']:.4f}")


if __name__ == "__main__":
  app.run(main)
