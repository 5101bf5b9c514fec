"""Train-step throughput of jaxlab against a minimal hand-written loop of the same model and optimizer.

  python benchmarks/train_step.py --config=configs/quickstart.py --steps=200 \
      [--config.model.name=resnet18_cifar --config.dataset.image_size=32 --config.batch_size=128]

Prints, for each of
  handwritten  nnx.split/merge + optax in one jitted, donated step on a device-resident batch;
  jaxlab step  the trainer's jitted step (sharded state, metrics) on the same device-resident batch;
  jaxlab loop  the whole trainer (`train_and_evaluate`: data pipeline, host→device copies,
               logging, checkpoint at the end), its own `perf/steps_per_sec` after the first window;
compile time, median step time, images/s and achieved FLOP/s (XLA cost analysis of the compiled
step), and the ratio of each jaxlab figure to the hand-written one (framework overhead).
"""

from __future__ import annotations

import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import optax
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from jaxlab import config as config_lib
from jaxlab import data, models, optim, trainer
from jaxlab.metrics.writers import read_jsonl

_CONFIG = config_flags.DEFINE_config_file("config", "configs/quickstart.py", "Training config.")
_STEPS = flags.DEFINE_integer("steps", 200, "Timed steps per measurement.")
_WINDOWS = flags.DEFINE_integer("windows", 5, "The step time is the median over this many windows.")


def _timed_windows(run_steps, steps: int, windows: int) -> float:
  """Median seconds per step over `windows` windows of `steps // windows` steps each."""
  per_window = max(steps // windows, 1)
  times = []
  for _ in range(windows):
    start = time.perf_counter()
    run_steps(per_window)
    times.append((time.perf_counter() - start) / per_window)
  return statistics.median(times)


def _flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis.get("flops", float("nan"))) if analysis else float("nan")


def handwritten(config, info, batch, steps, windows):
  """What a user would write by hand: the same model, loss and optimizer, nothing else."""
  kwargs = {k: v for k, v in config.model.items() if k != "name"}
  kwargs.setdefault("in_channels", info.image_shape[-1])
  model = models.create(config.model.name, num_classes=info.num_classes, rngs=nnx.Rngs(config.seed),
                        dtype=jnp.dtype(config.compute_dtype), **kwargs)
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optim.build(config.optim, total_steps=config.total_steps or 1000,
                   steps_per_epoch=max(1, info.num_train // config.batch_size)).tx
  opt_state = tx.init(params)

  def step(params, rest, opt_state, images, labels):
    module = nnx.merge(graphdef, params, rest)

    def loss_fn(module):
      logits = module(images)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(module)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, nnx.state(module, nnx.Not(nnx.Param)), opt_state, loss

  images, labels = jnp.asarray(batch["image"]), jnp.asarray(batch["label"])
  start = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=(0, 1, 2)).lower(params, rest, opt_state, images, labels).compile()
  compile_s = time.perf_counter() - start
  carry = [params, rest, opt_state]

  def run_steps(n):
    for _ in range(n):
      carry[0], carry[1], carry[2], loss = compiled(*carry, images, labels)
    loss.block_until_ready()

  run_steps(2)  # warm up
  return compile_s, _timed_windows(run_steps, steps, windows), _flops(compiled)


def jaxlab_step(config, batch, steps, windows):
  setup = trainer.build(config)
  state = trainer.initial_state(setup)
  train_step, _ = trainer.compile_steps(setup, config.grad_accum_steps)
  device_batch = trainer.to_global({k: v for k, v in batch.items() if k != "mask"}, setup.batch_sharding)
  start = time.perf_counter()
  compiled = train_step.lower(state, device_batch).compile()
  compile_s = time.perf_counter() - start
  carry = [state]

  def run_steps(n):
    for _ in range(n):
      carry[0], metrics = compiled(carry[0], device_batch)
    jax.block_until_ready(metrics)

  run_steps(2)
  return compile_s, _timed_windows(run_steps, steps, windows), _flops(compiled)


def jaxlab_loop(config, steps, windows):
  """The real trainer; its logged throughput windows exclude the first (compilation)."""
  config = config.copy_and_resolve_references()
  per_window = max(steps // windows, 1)
  config.total_steps = per_window * (windows + 1)
  config.log_every_steps = per_window
  config.eval_every_steps = config.checkpoint_every_steps = config.total_steps
  with tempfile.TemporaryDirectory() as workdir:
    trainer.train_and_evaluate(config, workdir)
    rates = [r["perf/steps_per_sec"] for r in read_jsonl(f"{workdir}/metrics.jsonl")
             if "perf/steps_per_sec" in r][1:]
  # The last window also holds the final eval and checkpoint, as a real run's would.
  return 1.0 / statistics.median(rates)


def main(argv):
  del argv
  config = _CONFIG.value
  config_lib.validate(config, jax.device_count(), jax.process_count())
  if config.total_steps is None:
    config.total_steps = 1000
  info = data.dataset_info(config.dataset)
  batch = next(data.train_batches(config.dataset, local_batch_size=config.batch_size, seed=0))
  steps, windows = _STEPS.value, _WINDOWS.value

  rows = {
      "handwritten": handwritten(config, info, batch, steps, windows),
      "jaxlab step": jaxlab_step(config, batch, steps, windows),
  }
  rows["jaxlab loop"] = (float("nan"), jaxlab_loop(config, steps, windows), rows["jaxlab step"][2])

  print(f"model={config.model.name} batch={config.batch_size} image={info.image_shape} "
        f"dtype={config.compute_dtype} devices={jax.device_count()}x{jax.devices()[0].platform} "
        f"host={platform.processor() or platform.machine()} jax={jax.__version__}")
  print(f"{'':12} {'compile s':>10} {'step ms':>10} {'images/s':>10} {'GFLOP/s':>10} {'vs hand':>8}")
  hand_step = rows["handwritten"][1]
  for name, (compile_s, step_s, flops) in rows.items():
    print(f"{name:12} {compile_s:10.2f} {step_s * 1e3:10.2f} {config.batch_size / step_s:10.0f} "
          f"{flops / step_s / 1e9:10.2f} {hand_step / step_s:8.3f}")
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
