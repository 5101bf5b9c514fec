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
import orbax.checkpoint as ocp
from absl import app, flags
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxlab.cli import fail
from jaxlab.stages import InitFromError, resolve_checkpoint

# allow_override: the CLIs share flag names (workdir, step, out, ...) and tests import several of
# them into one process; only the module run as __main__ parses its flags.
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir (or its checkpoints/ directory).", allow_override=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", allow_override=True)
_OUT = flags.DEFINE_string("out", None, "Output .safetensors file.", allow_override=True)
_EMA = flags.DEFINE_bool("ema", False, "Export the weight average instead of the trained weights.", allow_override=True)


def _find(tree: dict, key: str):
  """The first subtree stored under `key` anywhere in a nested dict."""
  if key in tree:
    return tree[key]
  for value in tree.values():
    if isinstance(value, dict) and (found := _find(value, key)) is not None:
      return found
  return None


def _find_all(tree, match) -> list[dict]:
  """Every nested dict for which `match(dict)` holds."""
  found = [tree] if isinstance(tree, dict) and match(tree) else []
  if isinstance(tree, dict):
    for value in tree.values():
      found += _find_all(value, match)
  return found


def _schedule_free_average(params: dict, opt_state) -> dict:
  """schedule_free_adamw's evaluation point x = y + (1 - 1/b1)(z - y), group by group."""
  flat = flatten_dict(params)
  for state in _find_all(opt_state, lambda d: "z" in d and "beta1" in d and "weight_sum" in d):
    b1 = float(np.asarray(state["beta1"]))
    for key, z in flatten_dict(state["z"]).items():
      if key in flat and getattr(z, "shape", None) == flat[key].shape:  # masked-out entries are not
        y = np.asarray(flat[key])
        flat[key] = (y + (1 - 1 / b1) * (np.asarray(z) - y)).astype(y.dtype)
  return unflatten_dict(flat)


def exported_tensors(checkpoint: pathlib.Path, ema: bool = False) -> dict[str, np.ndarray]:
  """{'name': array} of one checkpoint step's parameters (and batch statistics)."""
  state = ocp.PyTreeCheckpointer().restore(checkpoint / "default")
  # Schedule-free AdamW trains at y and is evaluated at its average x: export x.
  params = _schedule_free_average(state["params"], state.get("opt_state") or {})
  model_state = state.get("model_state") or {}
  if ema:
    params = _find(state.get("opt_state") or {}, "averaged_params")
    if params is None:
      raise ValueError(f"{checkpoint} holds no weight average: the run used no ema/sema/swa")
    model_state = state.get("averaged_model_state") or model_state
  tensors = {".".join(map(str, k)): np.asarray(v) for k, v in flatten_dict(params).items()}
  tensors.update({"model_state." + ".".join(map(str, k)): np.asarray(v)
                  for k, v in flatten_dict(model_state).items()})
  return tensors


def main(argv):
  if len(argv) > 1 or not _WORKDIR.value or not _OUT.value:
    fail("usage: python -m jaxlab.export --workdir=DIR [--step=N] --out=FILE.safetensors [--ema]")
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
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
