"""timm/PyTorch state dicts into jaxlab models: a generic name mapping plus per-model hooks.

Generic mapping
---------------
jaxlab backbones name their attributes like timm's module paths, so most torch keys map by name:
`layer1.0.conv1.weight` -> `layer1[0].conv1.kernel`. Integer components index nnx.List children;
an nnx.Sequential's children are reached through its `layers` list without saying so
(`downsample.0.weight` -> `downsample.layers[0].kernel`). The last component is renamed by the
kind of module it belongs to, and the value's layout converted:

  nnx.Conv        weight (O, I/groups, kh, kw) -> kernel (kh, kw, I/groups, O) (depthwise too);
                  a Linear weight (O, I) loaded into a 1x1 conv becomes (1, 1, I, O); bias as is
  nnx.Linear      weight (O, I) -> kernel (I, O); a 1x1 conv weight (O, I, 1, 1) too; bias as is
  nnx.BatchNorm   weight, bias, running_mean, running_var -> scale, bias, mean, var
                  (num_batches_tracked is dropped)
  nnx.LayerNorm, nnx.GroupNorm, nnx.RMSNorm: weight, bias -> scale, bias
  nnx.Embed       weight -> embedding
  other modules   the nnx.Param attribute of the same name, value as is (cls_token, gamma, ...)

A value whose shape differs from its parameter's only in size-1 dimensions is reshaped (timm's
(1, 1, C) tokens, (1, C, 1, 1) scales). Every nnx.Param and nnx.BatchStat of the model must receive
a value and every checkpoint key must land on one; otherwise one ValueError lists all unmatched
keys, missing parameters and shape mismatches together.

Classifier head
---------------
The head is the module(s) named by the model's `pretrained_classifier` attribute (a torch path or a
tuple of them, like timm's `pretrained_cfg["classifier"]`: "fc", "head.fc", ...); without one, the
first of "head.fc", "head", "fc", "classifier" that names an nnx.Linear. When the checkpoint's head
has another number of classes than the model's, its keys are skipped with a note on stderr and the
model keeps its freshly initialised head (fine-tuning on another label set).

Input channels
--------------
A conv whose checkpoint kernel takes 3 input channels where the model's takes another number (the
stem of a model built with `in_chans=1` for grey images) is adapted as timm's `adapt_input_conv`
does (`adapt_input_channels`), with a note on stderr.

Hooks
-----
Where names or layouts differ in ways the generic mapping cannot know (fused qkv, relative-position
tables, position embeddings for another image size, buffers jaxlab recomputes), the model's module
registers a hook for its registry names:

    from jaxlab.convert import timm as timm_convert

    @timm_convert.hook("swin_*")  # fnmatch patterns of registry names; several allowed
    def _swin_from_timm(state_dict, model):
      # Index buffers are recomputed by the jaxlab module, not loaded.
      return {k: v for k, v in state_dict.items() if not k.endswith("relative_position_index")}

A hook receives the checkpoint (torch names, torch layouts, numpy arrays; do not mutate it in
place) and the jaxlab model it is about to be loaded into, and returns a state dict the generic
mapping understands: keys renamed to the jaxlab attribute path (dots, integers for list indices),
values in the *torch* layout of the jaxlab parameter (e.g. a (3C, C) qkv weight split into three
(C, C) weights when jaxlab has separate q, k, v Linear layers; a position embedding resampled to the
model's grid, read from `model`). Every hook whose pattern matches the name runs, in the order the
modules registered them. Register hooks at import time of the module that registers the model.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Callable, Iterable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlab.convert.state_dict import load_state_dict

StateDict = dict[str, np.ndarray]
Hook = Callable[[Mapping[str, np.ndarray], nnx.Module], StateDict]
Path = tuple[str | int, ...]

_HOOKS: list[tuple[tuple[str, ...], Hook]] = []
DEFAULT_CLASSIFIERS = ("head.fc", "head", "fc", "classifier")
_NORMS = (nnx.LayerNorm, nnx.GroupNorm, nnx.RMSNorm)
_MAX_LISTED = 6  # keys named per problem in the error line; the rest are counted


def hook(*patterns: str) -> Callable[[Hook], Hook]:
  """Registers `fn(state_dict, model) -> state_dict` for models whose name matches a pattern."""
  if not patterns:
    raise ValueError("timm hook needs at least one model-name pattern, e.g. hook('swin_*')")

  def wrap(fn: Hook) -> Hook:
    _HOOKS.append((patterns, fn))
    return fn
  return wrap


def hooks_for(name: str | None) -> list[Hook]:
  if name is None:
    return []
  return [fn for patterns, fn in _HOOKS if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def load_pretrained(model: nnx.Module, path: str | os.PathLike, *, name: str | None = None
                    ) -> nnx.Module:
  """Loads the checkpoint file at `path` (see `jaxlab.convert.state_dict`) into `model`."""
  return load_timm_state_dict(model, load_state_dict(path), name=name, source=os.fspath(path))


def load_timm_state_dict(model: nnx.Module, state_dict: Mapping[str, np.ndarray], *,
                         name: str | None = None, source: str = "state dict") -> nnx.Module:
  """Copies a timm-named state dict into `model` in place (see module docstring) and returns it."""
  targets = dict(nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat))))
  for path, value in timm_values(model, state_dict, name=name, source=source).items():
    variable = targets[path]
    variable.set_value(jnp.asarray(value, dtype=variable.get_value().dtype))
  return model


def timm_values(model: nnx.Module, state_dict: Mapping[str, np.ndarray], *, name: str | None = None,
                source: str = "state dict") -> dict[Path, np.ndarray]:
  """The value of each nnx.Param and nnx.BatchStat of `model` (by its path) from a timm-named state
  dict, in the variable's layout and dtype, without touching `model`: it may be abstract
  (`nnx.eval_shape`). One ValueError lists every key and parameter that does not fit."""
  for fn in hooks_for(name):
    state_dict = fn(state_dict, model)
  label = name or type(model).__name__
  nodes = dict(nnx.iter_graph(model))
  targets = dict(nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat))))
  head = _classifier_paths(model, nodes)

  values: dict[Path, np.ndarray] = {}
  unmatched: list[str] = []
  mismatched: list[str] = []
  mismatched_paths: set[Path] = set()
  head_classes: tuple[int, int] | None = None
  adapted: list[str] = []
  for key, value in state_dict.items():
    value = np.asarray(value)
    path, module = _module_at(nodes, key.split(".")[:-1])
    leaf = key.rsplit(".", 1)[-1]
    if module is None:
      unmatched.append(key)
      continue
    if isinstance(module, nnx.BatchNorm) and leaf == "num_batches_tracked":
      continue
    target_path = path + (_rename(module, leaf),)
    target = targets.get(target_path)
    if target is None:
      unmatched.append(key)
      continue
    converted = _convert(module, leaf, value, target)
    if converted.shape != target.shape:
      if _same_up_to_unit_dims(converted.shape, target.shape):
        converted = converted.reshape(target.shape)
      elif _under(path, head) and converted.shape[-1] != target.shape[-1]:
        head_classes = (converted.shape[-1], target.shape[-1])
      elif isinstance(module, nnx.Conv) and leaf == "weight" and _adaptable(converted.shape, target.shape):
        converted = adapt_input_channels(converted, target.shape[-2])
        adapted.append(f"{key} ({converted.shape[-2]} input channels from 3)")
      else:
        mismatched.append(f"{key} {tuple(converted.shape)} vs {tuple(target.shape)}")
        mismatched_paths.add(target_path)
        continue
    values[target_path] = converted.astype(target.get_value().dtype)

  if head_classes is not None:
    values = {p: v for p, v in values.items() if not _under(p, head)}
  missing = [_dotted(p) for p in targets if p not in values and p not in mismatched_paths
             and not (head_classes is not None and _under(p, head))]
  problems = [_listing(f"{len(unmatched)} checkpoint key(s) match no parameter", unmatched),
              _listing(f"{len(missing)} parameter(s) get no value", missing),
              _listing(f"{len(mismatched)} shape mismatch(es) (checkpoint vs model)", mismatched)]
  problems = [p for p in problems if p]
  if problems:
    raise ValueError(f"cannot load {source} into {label}: " + "; ".join(problems))

  if head_classes is not None:
    print(f"jaxlab.convert: {label}: checkpoint head has {head_classes[0]} classes, the model "
          f"{head_classes[1]}: head weights skipped, the model keeps its initialised head",
          file=sys.stderr)
  if adapted:
    print(f"jaxlab.convert: {label}: RGB filters adapted as timm does: {', '.join(adapted)}",
          file=sys.stderr)
  return values


def _adaptable(checkpoint: tuple[int, ...], model: tuple[int, ...]) -> bool:
  """An RGB stem conv (kh, kw, 3, O) for a model with another number of input channels."""
  return (len(checkpoint) == len(model) and checkpoint[-2] == 3 and model[-2] != 3
          and checkpoint[:-2] == model[:-2] and checkpoint[-1] == model[-1])


def adapt_input_channels(kernel: np.ndarray, in_channels: int) -> np.ndarray:
  """An RGB conv kernel (..., 3, O) for `in_channels` inputs, by timm's rule
  (timm/models/_manipulate.py, `adapt_input_conv`): one channel gets the sum of the three filters
  (a grey image x gives what (x, x, x) gave); otherwise the filters repeat R, G, B, R, ... and are
  scaled by 3 / in_channels, keeping the response to a constant image unchanged."""
  if in_channels == 1:
    return kernel.sum(axis=-2, keepdims=True)
  repeats = -(-in_channels // 3)
  return np.concatenate([kernel] * repeats, axis=-2)[..., :in_channels, :] * (3.0 / in_channels)


def _module_at(nodes: dict, components: Iterable[str]) -> tuple[Path, nnx.Module | None]:
  """The jaxlab path and module of a dotted torch module path (None if there is none)."""
  path: Path = ()
  for component in components:
    if isinstance(nodes.get(path), nnx.Sequential):
      path += ("layers",)  # torch's Sequential children are an nnx.Sequential's `layers`
    index = int(component) if component.isdigit() else None
    if index is not None and path + (index,) in nodes:
      path += (index,)
    elif path + (component,) in nodes:
      path += (component,)
    else:
      return path, None
  module = nodes.get(path)
  return path, module if isinstance(module, nnx.Module) else None


def _rename(module: nnx.Module, leaf: str) -> str:
  if isinstance(module, (nnx.Conv, nnx.Linear)):
    return {"weight": "kernel"}.get(leaf, leaf)
  if isinstance(module, nnx.BatchNorm):
    return {"weight": "scale", "running_mean": "mean", "running_var": "var"}.get(leaf, leaf)
  if isinstance(module, _NORMS):
    return {"weight": "scale"}.get(leaf, leaf)
  if isinstance(module, nnx.Embed):
    return {"weight": "embedding"}.get(leaf, leaf)
  return leaf


def _convert(module: nnx.Module, leaf: str, value: np.ndarray, target) -> np.ndarray:
  """The torch value in jaxlab's layout (weights of convs and linears; all else as is)."""
  if leaf != "weight":
    return value
  if isinstance(module, nnx.Conv):
    if value.ndim == 2 and target is not None and target.ndim > 2:  # a Linear into a 1x1 conv
      value = value.reshape(value.shape + (1,) * (target.ndim - 2))
    # (O, I, *spatial) -> (*spatial, I, O)
    return value.transpose(tuple(range(2, value.ndim)) + (1, 0))
  if isinstance(module, nnx.Linear):
    if value.ndim > 2 and all(d == 1 for d in value.shape[2:]):  # a 1x1 conv into a Linear
      value = value.reshape(value.shape[:2])
    return value.T
  return value


def _classifier_paths(model: nnx.Module, nodes: dict) -> list[Path]:
  names = getattr(model, "pretrained_classifier", None)
  if names is not None:
    names = (names,) if isinstance(names, str) else tuple(names)
    paths = []
    for name in names:
      path, module = _module_at(nodes, name.split("."))
      if module is None:
        raise ValueError(f"{type(model).__name__}.pretrained_classifier names '{name}', "
                         "which is not a module of the model")
      paths.append(path)
    return paths
  for name in DEFAULT_CLASSIFIERS:
    path, module = _module_at(nodes, name.split("."))
    if isinstance(module, nnx.Linear):
      return [path]
  return []


def _under(path: Path, prefixes: list[Path]) -> bool:
  return any(path[:len(p)] == p for p in prefixes)


def _same_up_to_unit_dims(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
  return a != b and [d for d in a if d != 1] == [d for d in b if d != 1]


def _dotted(path: Path) -> str:
  return ".".join(str(p) for p in path)


def _listing(what: str, keys: list[str]) -> str:
  if not keys:
    return ""
  more = f", ... (+{len(keys) - _MAX_LISTED})" if len(keys) > _MAX_LISTED else ""
  return f"{what}: {', '.join(keys[:_MAX_LISTED])}{more}"
