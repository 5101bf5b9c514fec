"""Training-step throughput (images/s) of registered backbones at ImageNet resolution.

  python benchmarks/backbone_throughput.py                      # resnet50 vit_small_patch16_224
  python benchmarks/backbone_throughput.py resnet18 convnext_tiny --batch=16 --steps=5

For each model: one jitted, donated train step (forward, cross-entropy, backward, SGD-momentum
update, BatchNorm statistics) on a device-resident random batch; prints compile time, median step
time over the timed steps, images/s and XLA's FLOP count of the step (cost analysis). A name that is
not registered is reported as such, not skipped silently.

MFU (model FLOPs utilisation) = the step's FLOPs (XLA's count: a multiply-add is 2, no
rematerialisation in this step) / step time / the device's peak dense FLOP/s for the compute dtype.
The peak comes from `--peak_tflops`, or from the table below for known accelerators; on a GPU run
bfloat16 (`--dtype=bfloat16 --batch=128`), as the peak assumes:

  python benchmarks/backbone_throughput.py resnet50 vit_small_patch16_224 --dtype=bfloat16 --batch=128
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
_PEAK = flags.DEFINE_float("peak_tflops", None, "The device's peak dense TFLOP/s for the compute "
                           "dtype (default: from the table of known devices, else no MFU).")
NUM_CLASSES = 1000
# Dense (no sparsity) bfloat16 peak TFLOP/s per device, from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "TPU v4": 275.0, "TPU v5 lite": 197.0,
                    "TPU v5p": 459.0, "TPU v6 lite": 918.0}


def peak_tflops(device, dtype) -> float | None:
  """The flag's value, else the table's entry for a bfloat16 run on a known device."""
  if _PEAK.value:
    return _PEAK.value
  if dtype != jnp.bfloat16:
    return None
  kind = getattr(device, "device_kind", "")
  return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in kind), None)


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
  peak = peak_tflops(jax.devices()[0], dtype)
  print(f"# peak {peak} TFLOP/s per device" if peak else "# no peak FLOP/s known: MFU not computed")
  print(f"{'model':<26} {'compile s':>9} {'step s':>8} {'images/s':>9} {'GFLOP/step':>11} "
        f"{'TFLOP/s':>8} {'MFU':>6}")
  missing = []
  for name in names:
    if name not in models.available():
      print(f"{name:<26} not registered (valid: {', '.join(models.available())})")
      missing.append(name)
      continue
    r = measure(name, _BATCH.value, _SIZE.value, _STEPS.value, dtype)
    tflops = r["gflop_per_step"] / r["step_s"] / 1e3 / jax.device_count()
    mfu = f"{tflops / peak:6.1%}" if peak else f"{'-':>6}"
    print(f"{name:<26} {r['compile_s']:9.1f} {r['step_s']:8.3f} {r['images_per_s']:9.2f} "
          f"{r['gflop_per_step']:11.1f} {tflops:8.3f} {mfu}", flush=True)
  if missing:
    sys.exit(f"not registered: {', '.join(missing)}")


if __name__ == "__main__":
  app.run(main)
