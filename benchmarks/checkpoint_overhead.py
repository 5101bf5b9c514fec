"""Training throughput with periodic async checkpoints against none (only the final one).

  python benchmarks/checkpoint_overhead.py --config=configs/quickstart.py --steps=1000 --every=100

Runs the real trainer twice and compares the mean of its own `perf/steps_per_sec` windows (the
first, compiling window and the last, with the final eval and save, left out). Orbax writes in
the background, so a save should cost only its device-to-host copy.
"""

from __future__ import annotations

import statistics
import tempfile

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxlab import trainer
from jaxlab.metrics.writers import read_jsonl

_CONFIG = config_flags.DEFINE_config_file("config", "configs/quickstart.py", "Training config.")
_STEPS = flags.DEFINE_integer("steps", 1000, "Steps per run.")
_EVERY = flags.DEFINE_integer("every", 100, "Checkpoint period of the checkpointing run.")
_WINDOW = flags.DEFINE_integer("window", 50, "Steps per throughput window (log period).")


def _steps_per_sec(config, checkpoint_every: int) -> float:
  config = config.copy_and_resolve_references()
  config.total_steps, config.log_every_steps = _STEPS.value, _WINDOW.value
  config.eval_every_steps, config.checkpoint_every_steps = _STEPS.value, checkpoint_every
  with tempfile.TemporaryDirectory() as workdir:
    trainer.train_and_evaluate(config, workdir)
    rates = [r["perf/steps_per_sec"] for r in read_jsonl(f"{workdir}/metrics.jsonl")
             if "perf/steps_per_sec" in r]
  # The mean, not the median: half the windows hold a save, and its cost must count.
  return statistics.fmean(rates[1:-1])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  none = _steps_per_sec(config, checkpoint_every=10 * _STEPS.value)
  periodic = _steps_per_sec(config, checkpoint_every=_EVERY.value)
  print(f"model={config.model.name} batch={config.batch_size} steps={_STEPS.value} "
        f"devices={jax.device_count()}x{jax.devices()[0].platform}")
  print(f"no checkpoints      {none:8.2f} steps/s")
  print(f"every {_EVERY.value:<5} steps   {periodic:8.2f} steps/s")
  print(f"ratio {periodic / none:.3f}")


if __name__ == "__main__":
  app.run(main)
