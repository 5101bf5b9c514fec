"""Training-step throughput (images/s) of registered backbones at ImageNet resolution.

  python benchmarks/backbone_throughput.py                      # resnet50 vit_small_patch16_224
  python benchmarks/backbone_throughput.py resnet18 convnext_tiny --batch=16 --steps=5

For each model: one jitted, donated train step (forward, cross-entropy, backward, SGD-momentum
update, BatchNorm statistics) on a device-resident random batch; prints compile time, median step
time over the timed steps, images/s and XLA's FLOP count of the step (cost analysis). A name that is
not registered is reported as such, not skipped silently.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax
from absl import app, flags
from flax import nnx

from jaxlab import models
from jaxlab.state import ModelGraph

_BATCH = flags.DEFINE_integer("batch", 8, "Images per step.")
_SIZE = flags.DEFINE_integer("image_size", 224, "Input resolution.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (after one compiling step).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
NUM_CLASSES = 1000


def _flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis.get("flops", float("nan"))) if analysis else float("nan")


def measure(name: str, batch: int, size: int, steps: int, dtype) -> dict:
  model = models.create(name, num_classes=NUM_CLASSES, rngs=nnx.Rngs(0), dtype=dtype)
  # Params and model state as plain dicts, the module rebuilt in the step, as jaxlab's trainer does.
  graph = ModelGraph.of(model)
  params, model_state = ModelGraph.state_of(model)
  tx = optax.sgd(0.1, momentum=0.9)
  opt_state = tx.init(params)

  def step(params, model_state, opt_state, images, labels):
    def loss_fn(params):
      module = graph.merge(params, model_state, train=True)
      loss = optax.softmax_cross_entropy_with_integer_labels(module(images), labels).mean()
      return loss, ModelGraph.state_of(module)[1]
    (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), model_state, opt_state, loss

  images = jax.random.normal(jax.random.key(0), (batch, size, size, 3), jnp.float32)
  labels = jnp.arange(batch) % NUM_CLASSES
  start = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=(0, 1, 2)).lower(
      params, model_state, opt_state, images, labels).compile()
  compile_s = time.perf_counter() - start
  params, model_state, opt_state, loss = compiled(params, model_state, opt_state, images, labels)
  loss.block_until_ready()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    params, model_state, opt_state, loss = compiled(params, model_state, opt_state, images, labels)
    loss.block_until_ready()
    times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  return {"compile_s": compile_s, "step_s": step_s, "images_per_s": batch / step_s,
          "gflop_per_step": _flops(compiled) / 1e9, "loss": float(loss)}


def main(argv):
  names = argv[1:] or ["resnet50", "vit_small_patch16_224"]
  dtype = jnp.dtype(_DTYPE.value)
  print(f"# {platform.processor() or platform.machine()}, {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s), jax {jax.__version__}; batch {_BATCH.value}, "
        f"{_SIZE.value}x{_SIZE.value}, {_DTYPE.value}, median of {_STEPS.value} steps")
  print(f"{'model':<26} {'compile s':>9} {'step s':>8} {'images/s':>9} {'GFLOP/step':>11}")
  missing = []
  for name in names:
    if name not in models.available():
      print(f"{name:<26} not registered (valid: {', '.join(models.available())})")
      missing.append(name)
      continue
    r = measure(name, _BATCH.value, _SIZE.value, _STEPS.value, dtype)
    print(f"{name:<26} {r['compile_s']:9.1f} {r['step_s']:8.3f} {r['images_per_s']:9.2f} "
          f"{r['gflop_per_step']:11.1f}", flush=True)
  if missing:
    sys.exit(f"not registered: {', '.join(missing)}")


if __name__ == "__main__":
  app.run(main)
