"""Every backbone of the zoo trains through the real trainer step: build, shard, compile, 2 steps.

    python scripts/backbone_smoke.py                 # all registered backbones, CIFAR forms
    python scripts/backbone_smoke.py resnet50 vit_tiny_patch16_224

Each model runs in its CIFAR form (`cifar=True`) on the embedded digits resized to 32×32 (one
channel), batch 8, SGD: `trainer.build` → `initial_state` → `compile_steps` → two train steps and
an eval step. Prints one row per model (parameters, compile+first step seconds, losses) and exits
non-zero if any model fails or gives a non-finite loss. Too slow for the unit tests on 2 CPU cores
(minutes per large model), so the tests check a representative subset and this checks them all.
"""

from __future__ import annotations

import sys
import time

import jax
import ml_collections
import numpy as np

from jaxlab import models, trainer
from jaxlab.config import load_config_file

# The backbone-optimizer coupling study's zoo (issue 4), not the generative models.
ZOO = ("alexnet", "vgg13", "resnet18", "resnet34", "resnet50", "resnet101", "densenet121",
       "mobilenetv2_100", "efficientnet_b0", "repvgg_a1", "deit_small_patch16_224",
       "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "mixer_s16_224",
       "swin_tiny_patch4_window7_224", "convnext_tiny", "convnextv2_tiny", "moganet_small",
       "unireplknet_tiny", "transnext_tiny", "identityformer_s12", "poolformerv2_s12",
       "convformer_s12", "convformer_s18", "attentionformer_s12", "caformer_s12", "caformer_s18")


def smoke(name: str) -> tuple[int, float, list[float]]:
  config = load_config_file("configs/quickstart.py")
  config.model = ml_collections.ConfigDict({"name": name, "cifar": True})
  config.dataset.image_size = 32
  config.batch_size = config.eval_batch_size = 8
  config.total_steps = 2
  config.optim.lr = 0.01
  setup = trainer.build(config, jax.devices()[:1])
  start = time.perf_counter()
  state = trainer.initial_state(setup)
  train_step, eval_step = trainer.compile_steps(setup)
  rng = np.random.default_rng(0)
  losses = []
  for _ in range(2):
    batch = {"image": rng.normal(size=(8, 32, 32, 1)).astype(np.float32),
             "label": rng.integers(0, 10, 8).astype(np.int32)}
    state, metrics = train_step(state, trainer.to_global(batch, setup.batch_sharding))
    losses.append(float(metrics["loss"]))
  seconds = time.perf_counter() - start
  sums = eval_step(state, trainer.to_global({**batch, "mask": np.ones(8, np.float32)}, setup.batch_sharding))
  losses.append(float(sums["loss"]) / float(sums["count"]))
  params = sum(x.size for x in jax.tree.leaves(state.params))
  return params, seconds, losses


def main(names: list[str]) -> int:
  names = names or [n for n in ZOO if n in models.available()]
  missing = [n for n in (names or ZOO) if n not in models.available()]
  if missing:
    print(f"not registered: {', '.join(missing)}")
    return 2
  failed = []
  print("| model | parameters | compile + 2 steps s | loss step 1 | loss step 2 | eval loss |")
  print("| --- | ---: | ---: | ---: | ---: | ---: |")
  for name in names:
    try:
      params, seconds, losses = smoke(name)
    except Exception as e:  # pylint: disable=broad-except  # report every model, then fail
      failed.append(name)
      print(f"| {name} | failed: {type(e).__name__}: {str(e).splitlines()[0][:120]} | | | | |", flush=True)
      continue
    if not all(np.isfinite(losses)):
      failed.append(name)
    print(f"| {name} | {params:,} | {seconds:.1f} | " + " | ".join(f"{l:.4f}" for l in losses) + " |",
          flush=True)
  if failed:
    print(f"failed: {', '.join(failed)}")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
