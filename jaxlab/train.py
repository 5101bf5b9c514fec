"""Command line: python -m jaxlab.train --config=configs/NAME.py[:ARG] --workdir=DIR [--config.KEY=VALUE ...]

Bad input (unknown key, bad value, a mesh that does not fit, an unknown name) ends with one line
`error: ...` and exit status 2, before anything is compiled or written.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxlab.cli import fail, parse_config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file, path[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs.")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize(): one process per host (or per GPU). "
    "TPU VMs, SLURM and MPI are detected; elsewhere give the three flags below.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  if _CONFIG.value is None or not _WORKDIR.value:
    fail("both --config=FILE.py[:ARG] and --workdir=DIR are required")

  if not flags.FLAGS["verbosity"].present:  # Orbax logs every file it writes at INFO
    logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=import-outside-toplevel
  from jaxlab import config as config_lib  # pylint: disable=import-outside-toplevel
  from jaxlab import data, stages, trainer  # pylint: disable=import-outside-toplevel
  from jaxlab.checkpoint import CheckpointError  # pylint: disable=import-outside-toplevel
  from jaxlab.preemption import Preempted  # pylint: disable=import-outside-toplevel
  from jaxlab.workdir import WorkdirError  # pylint: disable=import-outside-toplevel

  if _MULTIHOST.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  config = _CONFIG.value
  config_lib.prefer_command_line(config, sys.argv[1:])  # --config.total_steps beats num_epochs
  # Set before anything compiles (jax decides once whether a process uses the cache): a repeated or
  # resumed run loads its programs instead of compiling them.
  cache = config_lib.compilation_cache_dir(config)
  if cache is not None:
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  try:
    config_lib.validate(config, jax.device_count(), jax.process_count())
  except config_lib.ConfigError as e:
    fail(str(e))
  try:
    result = trainer.train_and_evaluate(config, _WORKDIR.value)
  except (config_lib.ConfigError, data.DataError, stages.InitFromError, WorkdirError,
          CheckpointError) as e:  # one line
    fail(str(e))
  except trainer.NonFiniteError as e:
    fail(str(e), status=1)
  except Preempted as e:
    if jax.process_index() == 0:
      print(e)
    return

  if jax.process_index() == 0:
    split = config.dataset.eval_split
    # Whatever the task evaluates (accuracy, loss, PSNR, codebook usage, ...), one line each.
    for key in sorted(k for k in result if k.startswith("eval/")):
      print(f"{split} {key.removeprefix('eval/')}: {result[key]:.4f}")
    print(f"checkpoints: {_WORKDIR.value}/checkpoints")
    print(f"tensorboard: {_WORKDIR.value}/tensorboard  (tensorboard --logdir {_WORKDIR.value})")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_config_flags)
