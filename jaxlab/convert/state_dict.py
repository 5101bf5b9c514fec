"""Reading PyTorch/timm checkpoints into `{key: np.ndarray}` dictionaries.

`.safetensors` files are read with `safetensors.numpy` and `.npz` files (`np.savez(path,
**state_dict)`) with numpy, so they need no torch; `.pth`/`.pt`/`.bin`
files are pickles of torch tensors and need torch (`pip install jaxlab[torch]`). Training
checkpoints that wrap the weights (`{"state_dict": ...}`, `{"model": ...}`, `{"model_ema": ...}`)
are unwrapped, and DataParallel's `module.` prefix is removed.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from jaxlab.errors import first_line

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
NUMPY_SUFFIXES = (".npz",)
WEIGHTS_SUFFIXES = SAFETENSORS_SUFFIXES + NUMPY_SUFFIXES + TORCH_SUFFIXES
# Keys under which training scripts (timm's train.py, DeiT, ConvNeXt, ...) store the weights.
WRAPPER_KEYS = ("state_dict", "model", "model_ema", "state_dict_ema", "module")


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The checkpoint at `path` as a flat `{torch key: float32/int numpy array}` dictionary."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise ValueError(f"no checkpoint file at {path}")
  suffix = path.suffix.lower()
  if suffix in SAFETENSORS_SUFFIXES:
    state_dict = _load_safetensors(path)
  elif suffix in NUMPY_SUFFIXES:
    state_dict = _load_npz(path)
  elif suffix in TORCH_SUFFIXES:
    state_dict = _load_torch(path)
  else:
    raise ValueError(f"unknown checkpoint format '{suffix}' of {path}; valid: {', '.join(WEIGHTS_SUFFIXES)}")
  return _strip_prefix(state_dict, "module.")


def _load_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  try:
    return dict(load_file(path))
  except TypeError as e:  # numpy has no bfloat16: such files need torch to be read
    raise ValueError(f"cannot read {path} with numpy ({e}); convert it to float32 first") from None


def _load_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
  """`np.savez(path, **state_dict)`'s file; never unpickles."""
  try:
    with np.load(path, allow_pickle=False) as arrays:
      return {k: arrays[k] for k in arrays.files}
  except Exception as e:  # pylint: disable=broad-except  # truncated, not a zip, pickled objects
    raise ValueError(f"cannot read {path} as .npz arrays "
                     f"({type(e).__name__}: {first_line(e, 160)})") from None


def _load_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ValueError(f"reading {path.name} needs torch: pip install jaxlab[torch] "
                     "(or convert the checkpoint to .safetensors)") from None
  # weights_only: a checkpoint is data, never code to run.
  checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  checkpoint = _unwrap(checkpoint)
  return {key: value.detach().float().numpy() if value.is_floating_point() else value.numpy()
          for key, value in checkpoint.items() if isinstance(value, torch.Tensor)}


def _unwrap(checkpoint: dict) -> dict:
  """The weights inside a training checkpoint; the checkpoint itself if it is already them."""
  for key in WRAPPER_KEYS:
    if isinstance(checkpoint.get(key), dict):
      return checkpoint[key]
  return checkpoint


def _strip_prefix(state_dict: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  if state_dict and all(key.startswith(prefix) for key in state_dict):
    return {key[len(prefix):]: value for key, value in state_dict.items()}
  return state_dict
