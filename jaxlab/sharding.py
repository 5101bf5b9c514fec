"""Device mesh, batch sharding, and parameter sharding from logical-axis rules with an FSDP fallback.

Models annotate each parameter with logical axis names (`nnx.with_partitioning`, e.g.
`(None, None, 'conv_in', 'conv_out')`). `config.sharding.rules` maps names to mesh axes
(tensor parallelism); a rule applies only where the mesh axis size divides the dimension.
Then FSDP shards the largest remaining divisible dimension over `fsdp` for parameters with at
least `fsdp_min_size` elements. Everything else is replicated. Optimizer state follows its
parameters (`optax.tree_map_params`).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jaxlab.config import MESH_AXES, mesh_shape

BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh with axes (data, fsdp, tensor); -1 takes the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  # Automatic axes: XLA propagates shardings inside the step from the jit in/out shardings.
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """The global batch's leading dimension is split over data and fsdp."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def partition_spec(shape: Sequence[int], logical_axes: Sequence[str | None] | None,
                   mesh: Mesh, rules: Sequence[tuple[str, str]], fsdp_min_size: int) -> P:
  """The PartitionSpec of one parameter: logical rules first, then the FSDP fallback."""
  rule_of = dict(rules)
  spec: list[str | None] = [None] * len(shape)
  used: set[str] = set()
  for dim, name in enumerate(logical_axes or ()):
    axis = rule_of.get(name) if name else None
    if axis and axis not in used and mesh.shape[axis] > 1 and shape[dim] % mesh.shape[axis] == 0:
      spec[dim] = axis
      used.add(axis)
  fsdp = mesh.shape["fsdp"]
  if fsdp > 1 and "fsdp" not in used and int(np.prod(shape)) >= fsdp_min_size:
    free = [d for d in range(len(shape)) if spec[d] is None and shape[d] % fsdp == 0]
    if free:
      spec[max(free, key=lambda d: shape[d])] = "fsdp"
  while spec and spec[-1] is None:  # P(None, None) and P() mean the same; keep the short form
    spec.pop()
  return P(*spec)


def logical_axes(params_state: nnx.State) -> dict:
  """Pure dict, shaped like `nnx.to_pure_dict(params_state)`, of logical axis names (or None)."""
  tree: dict = {}
  for path, variable in nnx.to_flat_state(params_state):
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = variable.get_metadata().get("out_sharding")
  return tree


def params_sharding(abstract_params: dict, axes: dict, mesh: Mesh, sharding_config) -> dict:
  """NamedSharding for every parameter of a pure-dict params tree."""
  rules = tuple(tuple(r) for r in sharding_config.rules)

  def one(param, names):
    spec = partition_spec(param.shape, names, mesh, rules, sharding_config.fsdp_min_size)
    return NamedSharding(mesh, spec)

  # `axes` leaves are tuples or None; flatten it only down to the params' structure.
  return jax.tree.map(one, abstract_params, axes, is_leaf=lambda x: x is None or isinstance(x, tuple))


def opt_state_sharding(tx: optax.GradientTransformation, abstract_opt_state: Any,
                       param_shardings: dict, mesh: Mesh) -> Any:
  """Moments and other parameter-shaped optimizer state are sharded like their parameters."""
  # Parameter groups (optax.partition) hold MaskedNode where a group skips a parameter.
  masked = optax.MaskedNode
  return optax.tree_map_params(
      tx, lambda leaf, sharding: leaf if isinstance(leaf, masked) else sharding,
      abstract_opt_state, param_shardings,
      transform_non_params=lambda _: replicated(mesh),
      is_leaf=lambda x: isinstance(x, (jax.ShapeDtypeStruct, masked)))


def describe(shardings: dict) -> dict[str, str]:
  """Flat `path -> PartitionSpec` strings, for logs and tests."""
  flat = jax.tree_util.tree_flatten_with_path(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))[0]
  return {jax.tree_util.keystr(path): str(s.spec) for path, s in flat}
