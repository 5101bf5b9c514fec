"""Per-parameter learning-rate factors: group multipliers and layer-wise lr decay.

    config.optim.lr_multipliers = (("^discriminator/", 0.5), ("^head/", 10.0))
    config.optim.layer_decay = 0.75          # BEiT/timm fine-tuning recipe; None: off
    config.optim.layer_decay_layers = (r"^(cls_token|pos_embed|patch_embed)", r"^blocks/(\\d+)/")

Both are PyTorch parameter groups with a scaled `lr`. They act by scaling the optimizer's final
update, which equals scaling the group's lr for every optimizer whose update is linear in the lr
(all torch.optim/timm ones, decoupled weight decay included, since PyTorch multiplies it by the
group lr too). Optimizers that learn a step size from the lr (prodigy, schedule_free_adamw) only
get their final step scaled.

Layer ids follow timm's `param_groups_layer_decay`: `layer_decay_layers` lists regexes over
'/'-joined parameter paths from the input side up; a regex with a `(\\d+)` group gives one layer
per number it captures. Parameters that no regex matches (final norm, head) form the top layer.
With n layers below the top, a parameter in layer i gets lr · rate^(n − i): the top keeps the full
lr, the stem the smallest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax


class ParamGroupError(ValueError):
  """A group pattern that matches no parameter (one line, naming it)."""


def param_path(key_path) -> str:
  """'blocks/0/attn/qkv/kernel' for a jax tree key path."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in key_path)


def _layer_keys(paths: Sequence[str], layer_patterns: Sequence[str]) -> dict[str, tuple[int, int] | None]:
  """Each path's (pattern index, captured layer number), or None when no pattern matches."""
  compiled = [re.compile(p) for p in layer_patterns]
  keys = {}
  for path in paths:
    keys[path] = None
    for i, pattern in enumerate(compiled):
      match = pattern.search(path)
      if match:
        number = next((int(g) for g in match.groups() if g is not None and g.isdigit()), 0)
        keys[path] = (i, number)
        break
  return keys


def layer_decay_scales(paths: Sequence[str], rate: float, layer_patterns: Sequence[str]) -> dict[str, float]:
  """lr factor of every path under layer-wise decay (see the module docstring)."""
  keys = _layer_keys(paths, layer_patterns)
  order = sorted({k for k in keys.values() if k is not None})
  if not order:
    raise ParamGroupError(f"config.optim.layer_decay_layers {tuple(layer_patterns)} match no parameter; "
                     f"paths look like '{paths[0] if paths else ''}'")
  layer_id = {k: i for i, k in enumerate(order)}
  top = len(order)
  return {p: rate ** (top - (top if k is None else layer_id[k])) for p, k in keys.items()}


def multiplier_scales(paths: Sequence[str], multipliers: Sequence[tuple[str, float]]) -> dict[str, float]:
  """lr factor of every path from (regex, factor) pairs; the first matching pair wins."""
  compiled = [(re.compile(pattern), float(factor)) for pattern, factor in multipliers]
  for pattern, factor in compiled:
    if not any(pattern.search(p) for p in paths):
      raise ParamGroupError(f"config.optim.lr_multipliers pattern '{pattern.pattern}' matches no parameter; "
                       f"paths look like '{paths[0] if paths else ''}'")
  return {p: next((f for pat, f in compiled if pat.search(p)), 1.0) for p in paths}


def lr_scales(params, *, multipliers: Sequence[tuple[str, float]] = (), layer_decay: float | None = None,
              layer_patterns: Sequence[str] = ()) -> dict[str, float]:
  """The product of both factors for every parameter path of `params` (a pytree of arrays)."""
  paths = [param_path(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  scales = dict.fromkeys(paths, 1.0)
  if layer_decay is not None:
    for p, s in layer_decay_scales(paths, layer_decay, layer_patterns).items():
      scales[p] *= s
  if multipliers:
    for p, s in multiplier_scales(paths, multipliers).items():
      scales[p] *= s
  return scales


def scale_by_param_group(multipliers: Sequence[tuple[str, float]] = (), layer_decay: float | None = None,
                         layer_patterns: Sequence[str] = ()) -> optax.GradientTransformation:
  """Multiplies each parameter's update by its group factor; stateless, factors fixed at trace time.

  Chain it right after the optimizer (before weight averaging), as `build` does.
  """

  def init(params):
    # Checks the patterns against real params; optax.tree_map_params (used to shard optimizer
    # states) calls init on a placeholder without paths, which has nothing to check.
    leaves = jax.tree.leaves(params)
    if leaves and all(hasattr(leaf, "shape") for leaf in leaves):
      lr_scales(params, multipliers=multipliers, layer_decay=layer_decay, layer_patterns=layer_patterns)
    return optax.EmptyState()

  def update(updates, state, params=None):
    del params
    scales = lr_scales(updates, multipliers=multipliers, layer_decay=layer_decay,
                       layer_patterns=layer_patterns)

    def scale(key_path, u):
      factor = scales[param_path(key_path)]
      return u if factor == 1.0 else (u * jnp.asarray(factor, u.dtype))

    return jax.tree_util.tree_map_with_path(scale, updates), state

  return optax.GradientTransformation(init, update)
