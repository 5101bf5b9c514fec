#!/usr/bin/env python3
"""How a model's parameters and optimizer state spread over a mesh, before renting the devices.

  python scripts/mesh_plan.py --model=vit_base_patch16_224 --devices=8 --mesh=2,2,2 [--mesh=1,8,1 ...]
      [--num-classes=1000] [--rules=conv_out:tensor,mlp:tensor] [--fsdp-min-size=16384]
      [--moments=2] [--batch-size=1024] [--show=10]

--mesh is `config.mesh` as data,fsdp,tensor (-1 takes the rest; repeat it to compare layouts);
--rules is `config.sharding.rules` as logical_name:mesh_axis pairs and --fsdp-min-size is
`config.sharding.fsdp_min_size` (both default to `jaxlab.config.base_config()`'s). The devices are
simulated CPU devices and the model is only traced (`nnx.eval_shape`): nothing is allocated. For
each mesh it prints the largest parameters with their PartitionSpecs, then the memory per device
of the float32 parameters, and of the parameters plus `--moments` optimizer moments of the same
shape (2 for Adam/AdamW, 1 for SGD with momentum) sharded like them, as the trainer shards them;
and how the global batch splits. See docs/mesh.md.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from launch_cli import OneLineParser, fail


def parse_args(argv):
  parser = OneLineParser(prog="mesh_plan.py", description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True, help="a name from jaxlab.models.available()")
  parser.add_argument("--num-classes", type=int, default=1000)
  parser.add_argument("--devices", type=int, default=8, help="number of (simulated) devices")
  parser.add_argument("--mesh", action="append", default=None,
                      help="data,fsdp,tensor as in config.mesh (repeatable; default -1,1,1)")
  parser.add_argument("--rules", default=None,
                      help="config.sharding.rules as name:axis,name:axis (default: base_config's)")
  parser.add_argument("--fsdp-min-size", type=int, default=None,
                      help="config.sharding.fsdp_min_size (default: base_config's)")
  parser.add_argument("--moments", type=int, default=2, help="optimizer moments per parameter (AdamW: 2)")
  parser.add_argument("--batch-size", type=int, default=None, help="global batch, to show its split")
  parser.add_argument("--show", type=int, default=10, help="how many of the largest parameters to list")
  return parser.parse_args(argv)


def _mesh_sizes(text: str) -> list[int]:
  try:
    sizes = [int(s) for s in text.split(",")]
  except ValueError:
    sizes = []
  if len(sizes) != 3:
    fail(f"--mesh takes data,fsdp,tensor (three integers, -1 for the rest), got '{text}'")
  return sizes


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.devices < 1:
    fail(f"--devices must be at least 1, got {args.devices}")
  meshes = [_mesh_sizes(text) for text in args.mesh or ["-1,1,1"]]
  # Before JAX starts: simulated CPU devices.
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
  os.environ["JAX_PLATFORMS"] = "cpu"
  import jax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from jaxlab import config as config_lib  # pylint: disable=import-outside-toplevel
  from jaxlab import models, sharding

  config = config_lib.base_config()
  if args.fsdp_min_size is not None:
    config.sharding.fsdp_min_size = args.fsdp_min_size
  if args.rules is not None:
    pairs = [tuple(r.split(":")) for r in args.rules.split(",") if r]
    if any(len(p) != 2 or p[1] not in config_lib.MESH_AXES for p in pairs):
      fail(f"--rules takes name:axis pairs with axis in {', '.join(config_lib.MESH_AXES)}, got '{args.rules}'")
    config.sharding.rules = tuple(pairs)
  try:
    models.check_kwargs(args.model, {})
    for sizes in meshes:
      config_lib.mesh_shape(dict(zip(config_lib.MESH_AXES, sizes)), args.devices)
  except (ValueError, config_lib.ConfigError) as e:
    fail(str(e))

  abstract = nnx.eval_shape(lambda: models.create(args.model, num_classes=args.num_classes, rngs=nnx.Rngs(0)))
  params = nnx.state(abstract, nnx.Param)
  pure = nnx.to_pure_dict(params)
  axes = sharding.logical_axes(params)
  flat_params = jax.tree_util.tree_flatten_with_path(pure)[0]
  names = ["/".join(str(getattr(k, "key", k)) for k in path) for path, _ in flat_params]
  leaves = [leaf for _, leaf in flat_params]
  total = sum(leaf.size * leaf.dtype.itemsize for leaf in leaves)
  mib = 2**20
  print(f"{args.model}: {sum(leaf.size for leaf in leaves) / 1e6:.1f}M parameters, {total / mib:.1f} MiB "
        f"float32; {args.moments} optimizer moments per parameter")

  for sizes in meshes:
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = sizes
    mesh = sharding.make_mesh(config.mesh)
    specs = [s.spec for s in jax.tree.leaves(
        sharding.params_sharding(pure, axes, mesh, config.sharding),
        is_leaf=lambda x: isinstance(x, jax.sharding.NamedSharding))]
    # How many devices share out each parameter: the product of the mesh axes in its spec.
    splits = [math.prod(mesh.shape[a] for a in jax.tree.leaves(tuple(spec)) if a is not None) for spec in specs]
    per_device = sum(leaf.size * leaf.dtype.itemsize / split for leaf, split in zip(leaves, splits))
    replicated = sum(leaf.size * leaf.dtype.itemsize for leaf, split in zip(leaves, splits) if split == 1)
    print(f"\nmesh data={mesh.shape['data']} fsdp={mesh.shape['fsdp']} tensor={mesh.shape['tensor']}")
    largest = sorted(range(len(leaves)), key=lambda i: -leaves[i].size)[:args.show]
    for i in largest:
      print(f"  {names[i]:<40} {leaves[i].shape!s:<22} {specs[i]}")
    print(f"  per device: parameters {per_device / mib:.1f} MiB, with {args.moments} optimizer moments "
          f"{per_device * (1 + args.moments) / mib:.1f} MiB (replicated: {replicated / total:.1%} of the bytes)")
    if args.batch_size is not None:
      shards = mesh.shape["data"] * mesh.shape["fsdp"]
      if args.batch_size % shards:
        print(f"  batch: {args.batch_size} does not split over data*fsdp = {shards}")
      else:
        print(f"  batch: {args.batch_size} global, {args.batch_size // shards} per data×fsdp shard "
              f"(seen by its {mesh.shape['tensor']} tensor device(s))")
  return 0


if __name__ == "__main__":
  sys.exit(main())
