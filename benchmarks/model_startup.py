"""Time to build models abstractly (`nnx.eval_shape`): through `jaxlab.models.create`, which keeps
it linear in the model's size (`jaxlab.models.tracing`), and through the bare constructor, which
pays jax's tracer error messages (quadratic).

  python benchmarks/model_startup.py [--models unireplknet_tiny moganet_small resnet50]
"""

from __future__ import annotations

import argparse
import time

import jax
from flax import nnx

from jaxlab import models
from jaxlab.models import registry


def _seconds(build) -> float:
  start = time.perf_counter()
  nnx.eval_shape(build)
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", nargs="+", default=["unireplknet_tiny", "moganet_small", "resnet50"])
  args = parser.parse_args()
  print("| model | parameters | eval_shape via create | bare constructor | ratio |")
  print("| --- | ---: | ---: | ---: | ---: |")
  for name in args.models:
    fast = _seconds(lambda n=name: models.create(n))
    with nnx.use_eager_sharding(False):
      slow = _seconds(lambda n=name: registry.factory_of(n)(num_classes=1000, rngs=nnx.Rngs(0)))
    model = nnx.eval_shape(lambda n=name: models.create(n))
    count = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) / 1e6
    print(f"| {name} | {count:.1f}M | {fast:.2f} s | {slow:.2f} s | {slow / fast:.1f}x |")


if __name__ == "__main__":
  main()
