"""Export a run's parameters for use outside jaxlab, as safetensors.

  python -m jaxlab.export --workdir=DIR [--step=N] --out=FILE.safetensors [--ema]

Tensor names are the parameter paths joined with dots (`stages.0.layers.1.conv1.kernel`), in
jaxlab's layouts (NHWC convolution kernels HWIO, dense kernels (in, out)). `--ema` exports the
weight average (`ema`/`sema`/`swa`/`lookahead`) instead of the trained weights; a
schedule-free AdamW run exports its evaluation point x, as the reference's `optimizer.eval()`. The batch statistics
(`model_state`, or their average with `--ema`) are written too, under `model_state.`.
"""

from __future__ import annotations

import pathlib

import numpy as np
from absl import app, flags, logging
from flax.traverse_util import flatten_dict

from jaxlab.cli import fail
from jaxlab.stages import InitFromError, resolve_checkpoint

# allow_override: the CLIs share flag names (workdir, step, out, ...) and tests import several of
# them into one process; only the module run as __main__ parses its flags.
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir (or its checkpoints/ directory).", allow_override=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", allow_override=True)
_OUT = flags.DEFINE_string("out", None, "Output .safetensors file.", allow_override=True)
_EMA = flags.DEFINE_bool("ema", False, "Export the weight average instead of the trained weights.", allow_override=True)


def exported_tensors(checkpoint: str | pathlib.Path, ema: bool = False) -> dict[str, np.ndarray]:
  """{'name': array} of a run's parameters (and batch statistics), from its workdir, its
  checkpoints/ or one step's directory. The run is rebuilt from the config its checkpoint
  recorded and restored on this host's devices (`jaxlab.restore`), whatever mesh wrote it."""
  import jax  # pylint: disable=import-outside-toplevel
  from jaxlab.restore import restore_run  # pylint: disable=import-outside-toplevel
  run = restore_run(checkpoint, ema=ema)
  params, model_state = jax.device_get((run.params, run.model_state))
  tensors = {".".join(map(str, k)): np.asarray(v) for k, v in flatten_dict(params).items()}
  tensors.update({"model_state." + ".".join(map(str, k)): np.asarray(v)
                  for k, v in flatten_dict(model_state).items()})
  return tensors


def main(argv):
  if len(argv) > 1 or not _WORKDIR.value or not _OUT.value:
    fail("usage: python -m jaxlab.export --workdir=DIR [--step=N] --out=FILE.safetensors [--ema]")
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS["verbosity"].present:  # Orbax notes every read-only checkpoint it opens
    logging.set_verbosity(logging.ERROR)
  try:
    checkpoint = resolve_checkpoint(_WORKDIR.value, _STEP.value)
    tensors = exported_tensors(checkpoint, _EMA.value)
  except (InitFromError, ValueError) as e:
    fail(str(e).splitlines()[0])
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, _OUT.value,
            metadata={"source": str(checkpoint), "weights": "average" if _EMA.value else "trained"})
  print(f"wrote {len(tensors)} tensors from {checkpoint} to {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
