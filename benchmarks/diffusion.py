"""Diffusion throughput: sampling images/s at a given number of network evaluations, and training img/s.

  python benchmarks/diffusion.py [--config=configs/diffusion_digits.py] [--sample_batch=256]
      [--samplers=heun:18,dpmpp_2m:10,ddim:50] [--guidance=2] [--train_steps=50]

Sampling runs the config's network (freshly initialised: the arithmetic is that of a trained one)
under each sampler, the whole loop jitted, on a device-resident batch; it prints the network
evaluations per sample (NFE), compile time, and median images/s over 3 runs (with guidance != 1
each evaluation runs on a doubled batch). Training times the trainer's jitted, sharded step of the
same config on a random batch (median of 5 windows), as `perf/images_per_sec` would report it
without the data pipeline.
"""

from __future__ import annotations

import platform

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from jaxlab import trainer
from jaxlab.config import validate
from timing import compile_seconds, median_seconds, train_step_seconds

_CONFIG = config_flags.DEFINE_config_file("config", "configs/diffusion_digits.py", "A diffusion training config.")
_SAMPLE_BATCH = flags.DEFINE_integer("sample_batch", 256, "Images per sampling call.")
_SAMPLERS = flags.DEFINE_list("samplers", ["heun:18", "dpmpp_2m:10", "ddim:50"], "NAME:STEPS to time.")
_GUIDANCE = flags.DEFINE_float("guidance", 2.0, "Classifier-free guidance scale (1 = none).")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 50, "Timed training steps (5 windows).")


def sampling(setup, params, model_state, batch: int, name: str, steps: int, guidance: float) -> None:
  sampling = setup.task.prepare_sampling(setup.info, sampler=name, steps=steps,
                                 guidance=guidance if setup.task.conditional else 1.0)
  guidance, nfe = sampling.summary["guidance"], sampling.summary["nfe"]
  labels = jnp.asarray(np.arange(batch) % setup.info.num_classes, jnp.int32)

  @jax.jit
  def run(params, model_state, labels, key):
    return sampling.draw(setup.graph.merge(params, model_state, train=False), labels, key)

  key = jax.random.PRNGKey(0)
  compile_s = compile_seconds(lambda: run(params, model_state, labels, key))
  seconds = median_seconds(lambda: run(params, model_state, labels, key), 3, windows=3)
  print(f"sample {name:9s} steps {steps:3d}  NFE {nfe:3d}  guidance {guidance:g}  batch {batch}  "
        f"compile {compile_s:5.1f} s  {batch / seconds:8.1f} images/s  "
        f"({batch * nfe * (2 if guidance != 1 else 1) / seconds:8.0f} network images/s)")


def training(setup, config, steps: int) -> None:
  compile_s, step_s = train_step_seconds(setup, config, steps)
  print(f"train {config.model.name} batch {config.batch_size}  compile {compile_s:5.1f} s  "
        f"{step_s * 1000:7.1f} ms/step  {config.batch_size / step_s:8.1f} images/s")


def main(argv):
  del argv
  config = _CONFIG.value
  validate(config, jax.device_count())
  print(f"{platform.processor() or platform.machine()}, {jax.device_count()} {jax.default_backend()} "
        f"device(s), jax {jax.__version__}")
  setup = trainer.build(config)
  state = trainer.initial_state(setup)
  print(f"model {config.model.name}: {sum(x.size for x in jax.tree.leaves(state.params)) / 1e6:.2f}M parameters, "
        f"images {setup.info.image_shape}, formulation {setup.task.formulation.name}")
  for spec in _SAMPLERS.value:
    name, steps = spec.split(":")
    sampling(setup, state.params, state.model_state, _SAMPLE_BATCH.value, name, int(steps), _GUIDANCE.value)
  training(setup, config, _TRAIN_STEPS.value)


if __name__ == "__main__":
  app.run(main)
