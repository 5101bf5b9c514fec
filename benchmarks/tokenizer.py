"""Throughput of the tokenizer → generator pipeline's pieces on this machine:

  python benchmarks/tokenizer.py [--steps=30] [--tokenizer_config=configs/tokenizer_digits.py]
                                 [--maskgit_config=configs/maskgit_digits.py] [--decode_batch=100]

Prints images/s of the trainer's jitted train step for the tokenizer (VQGAN, discriminator on)
and for MaskGIT (on a freshly initialised frozen tokenizer: speed does not depend on its
weights), and images/s of MaskGIT decoding (all sampling steps + the tokenizer's decoder), with
compile times. Batches are random and device-resident: the data pipeline is not measured.
Each figure is the median over 5 windows.
"""

from __future__ import annotations

import platform

import jax
import jax.numpy as jnp
from absl import app, flags

from jaxlab import trainer
from jaxlab.config import load_config_file
from timing import compile_seconds, median_seconds, train_step_seconds

_STEPS = flags.DEFINE_integer("steps", 30, "Timed train steps (5 windows).")
_TOKENIZER = flags.DEFINE_string("tokenizer_config", "configs/tokenizer_digits.py", "Stage-1 config.")
_MASKGIT = flags.DEFINE_string("maskgit_config", "configs/maskgit_digits.py", "Stage-2 config.")
_DECODE_BATCH = flags.DEFINE_integer("decode_batch", 100, "Images per decoding call.")


def train_throughput(config, steps: int) -> tuple[float, float]:
  """(compile seconds, images/s) of the trainer's train step on a random device-resident batch."""
  compile_s, step_s = train_step_seconds(trainer.build(config), config, steps)
  return compile_s, config.batch_size / step_s


def decode_throughput(config, batch: int) -> tuple[float, float]:
  """(compile seconds, images/s) of MaskGIT sampling + tokenizer decoding."""
  setup = trainer.build(config)
  state = trainer.initial_state(setup)
  labels = jnp.arange(batch) % setup.info.num_classes
  sampling = setup.task.prepare_sampling(setup.info)

  @jax.jit
  def sample(state, rng):
    return sampling.draw(setup.graph.merge(state.params, state.model_state, train=False), labels, rng)

  compile_s = compile_seconds(lambda: sample(state, jax.random.PRNGKey(0)))
  keys = iter(jax.random.split(jax.random.PRNGKey(1), 1000))
  seconds = median_seconds(lambda: sample(state, next(keys)), 10)
  return compile_s, batch / seconds


def main(argv):
  del argv
  print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind} ({platform.processor() or platform.machine()})")
  tokenizer = load_config_file(_TOKENIZER.value)
  maskgit = load_config_file(_MASKGIT.value)  # no init_from: a fresh tokenizer is as fast
  rows = [("tokenizer train step", *train_throughput(tokenizer, _STEPS.value), tokenizer.batch_size),
          ("maskgit train step", *train_throughput(maskgit, _STEPS.value), maskgit.batch_size),
          (f"maskgit decoding ({maskgit.task.sampling.steps} steps + decoder)",
           *decode_throughput(maskgit, _DECODE_BATCH.value), _DECODE_BATCH.value)]
  print(f"{'':45s} {'batch':>6s} {'compile s':>10s} {'images/s':>10s}")
  for name, compile_s, images_per_s, batch in rows:
    print(f"{name:45s} {batch:6d} {compile_s:10.1f} {images_per_s:10.1f}")


if __name__ == "__main__":
  app.run(main)
