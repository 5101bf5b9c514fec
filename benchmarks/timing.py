"""Timing the benchmarks share: compile time, then the median over windows of calls, each
window ended by waiting for the device (JAX dispatches asynchronously)."""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np

from jaxlab import trainer


def compile_seconds(fn) -> float:
  """Seconds of the first call of a jitted `fn()` (tracing, compilation and one run)."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def median_seconds(fn, calls: int, windows: int = 5) -> float:
  """Median seconds per call of `fn()` over `windows` windows of calls // windows calls each."""
  per_window = max(calls // windows, 1)
  times = []
  for _ in range(windows):
    start = time.perf_counter()
    for _ in range(per_window):
      out = fn()
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) / per_window)
  return statistics.median(times)


def train_step_seconds(setup: trainer.Setup, config, steps: int) -> tuple[float, float]:
  """(compile seconds, median seconds per step) of the trainer's jitted, sharded train step on a
  random device-resident batch: what `perf/images_per_sec` reports, without the data pipeline."""
  state = trainer.initial_state(setup)
  train_step, _ = trainer.compile_steps(setup, config.grad_accum_steps)
  rng = np.random.default_rng(0)
  shape = (config.batch_size, *setup.info.image_shape)
  batch = trainer.to_global({"image": rng.uniform(-1, 1, shape).astype(np.float32),
                             "label": rng.integers(0, setup.info.num_classes, config.batch_size).astype(np.int32)},
                            setup.batch_sharding)
  holder = {"state": state}

  def step():
    holder["state"], metrics = train_step(holder["state"], batch)
    return metrics

  compile_s = compile_seconds(step)
  return compile_s, median_seconds(step, steps)
