"""Command line: draw samples from a trained generator (any run whose task generates).

  python -m jaxlab.sample --workdir=DIR [--step=N] --num=N [--sampler=NAME] [--steps=K]
      [--guidance=W] [--eta=E] [--ema] [--seed=S] [--batch=B] [--out=DIR]

Loads the checkpoint (latest, or --step; --ema for the weight average) with the config it
recorded, samples on all devices (each batch split over the mesh's data axes, one compiled loop
per batch, a progress bar over the batches) and writes OUT/samples.npz (`images` uint8 NHWC,
`labels`; label = number of classes for unconditional samples) and OUT/grid.png.
Class-conditional runs draw the classes in turn (sample i has class i mod C) and the grid has one
column per class.

The run's task draws the samples (`Task.prepare_sampling`, jaxlab/tasks/base.py): --sampler,
--steps, --guidance and --eta are its options, each defaulting to the run's config.task, and a
task names those it takes (docs/generative.md lists them per task). --guidance W is classifier-free
guidance uncond + W·(cond − uncond); 1 = none. Bad input ends with one line `error: ...` and
exit status 2.
"""

from __future__ import annotations

import math
import pathlib
import time

import numpy as np
from absl import app, flags

from jaxlab.cli import fail

# allow_override: the CLIs share flag names (workdir, step, out, ...) and tests import several of
# them into one process; only the module run as __main__ parses its flags.
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir (or a checkpoints/ directory).", allow_override=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", allow_override=True)
_NUM = flags.DEFINE_integer("num", 64, "Number of samples.", allow_override=True)
_SAMPLER = flags.DEFINE_string("sampler", None, "The task's sampler (default: the config's).", allow_override=True)
_STEPS = flags.DEFINE_integer("steps", None, "Sampling steps (default: the config's).", allow_override=True)
_GUIDANCE = flags.DEFINE_float("guidance", None, "Classifier-free guidance scale; 1 = none (default: the config's).", allow_override=True)
_ETA = flags.DEFINE_float("eta", None, "DDIM's eta (default 0: deterministic).", allow_override=True)
_EMA = flags.DEFINE_bool("ema", False, "Sample with the weight average (ema/sema/swa) of the run.", allow_override=True)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the noise.", allow_override=True)
_BATCH = flags.DEFINE_integer("batch", 256, "Samples per compiled call (rounded to the data-parallel size).", allow_override=True)
_OUT = flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/samples).", allow_override=True)


class SampleError(ValueError):
  """Bad input for sampling; the message is one line."""


def to_uint8(samples: np.ndarray, mean, std) -> np.ndarray:
  """Undo the dataset's normalization and quantize to 0..255."""
  pixels = samples * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
  return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def image_grid(images: np.ndarray, columns: int, min_tile: int = 32) -> np.ndarray:
  """uint8 [N, H, W, C] -> one uint8 image, tiles upscaled (nearest) to at least `min_tile` px."""
  n, h, w, c = images.shape
  zoom = max(1, math.ceil(min_tile / max(h, w)))
  images = images.repeat(zoom, axis=1).repeat(zoom, axis=2)
  rows, pad = math.ceil(n / columns), 2
  th, tw = h * zoom + pad, w * zoom + pad
  grid = np.full((rows * th + pad, columns * tw + pad, c), 255, np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, columns)
    grid[pad + r * th: pad + r * th + h * zoom, pad + col * tw: pad + col * tw + w * zoom] = image
  return grid


def write_grids(out: pathlib.Path, images: np.ndarray, num_classes: int | None) -> list[pathlib.Path]:
  """grid.png: every sample, one column per class (conditional) or about square; and, when that
  grid is taller than wide (1000 samples of 10 classes: 100 rows), preview.png: its first rows,
  square."""
  columns = num_classes or max(1, round(math.sqrt(len(images))))
  write_png(out / "grid.png", image_grid(images, columns))
  if len(images) <= columns * columns:
    return [out / "grid.png"]
  write_png(out / "preview.png", image_grid(images[:columns * columns], columns))
  return [out / "grid.png", out / "preview.png"]


def write_png(path: pathlib.Path, image: np.ndarray) -> None:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel  (already a dependency, via TFDS)
  path.write_bytes(tf.io.encode_png(image).numpy())


def sample_run(workdir, *, num: int, sampler: str | None = None, steps: int | None = None,
               guidance: float | None = None, eta: float | None = None, ema: bool = False,
               step: int | None = None, seed: int = 0, batch: int = 256, progress: bool = True) -> dict:
  """Samples from a run whose task generates; None options take the run's config.task values.

  Returns {'images' uint8, 'samples' float32, 'labels', 'num_classes', 'nfe', 'sampler', 'steps',
  'guidance', 'seconds', 'checkpoint'}.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

  from jaxlab import sharding, tasks  # pylint: disable=import-outside-toplevel
  from jaxlab.restore import restore_run  # pylint: disable=import-outside-toplevel
  from jaxlab.stages import InitFromError  # pylint: disable=import-outside-toplevel

  if num <= 0 or batch <= 0:
    raise SampleError(f"--num and --batch must be positive, got {num} and {batch}")
  options = {k: v for k, v in dict(sampler=sampler, steps=steps, guidance=guidance, eta=eta).items()
             if v is not None}
  prepared = {}

  def prepare(setup):  # before the (slow) restore: bad options fail fast
    if tasks.GENERATES not in setup.task.abilities:
      generators = [n for n in tasks.available()
                    if tasks.GENERATES in tasks.task_class(n).abilities]
      raise SampleError(f"a '{setup.task.name}' run does not generate; sampling needs a run whose "
                        f"task does: {', '.join(generators)}")
    try:
      prepared["sampling"] = setup.task.prepare_sampling(setup.info, **options)
    except ValueError as e:
      raise SampleError(str(e)) from None

  try:
    run = restore_run(workdir, step, ema, before_restore=prepare)
  except SampleError:
    raise
  except (InitFromError, ValueError) as e:
    raise SampleError(str(e).splitlines()[0]) from None
  sampling = prepared["sampling"]
  mesh, setup = run.setup.mesh, run.setup
  num_classes = setup.info.num_classes if sampling.conditional else 0
  data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
  batch = max(data_parallel, min(batch, num) // data_parallel * data_parallel)
  null = setup.info.num_classes  # "no class"; unconditional tasks ignore labels
  labels = (np.arange(num) % num_classes) if num_classes else np.full(num, null)

  def sample_batch(params, model_state, labels, key):
    return sampling.draw(setup.graph.merge(params, model_state, train=False), labels, key)

  replicated = sharding.replicated(mesh)
  batch_sharding = sharding.batch_sharding(mesh)
  sample_fn = jax.jit(sample_batch, in_shardings=(setup.state_sharding.params, replicated, batch_sharding,
                                                  replicated), out_shardings=batch_sharding)
  model_state = jax.device_put(run.model_state, replicated)
  outputs, start = [], time.perf_counter()
  bar = tqdm(total=num, unit="img", disable=not progress or jax.process_index() != 0, dynamic_ncols=True)
  for first in range(0, num, batch):
    chunk = labels[first:first + batch]
    padded = np.concatenate([chunk, np.full(batch - len(chunk), null)]).astype(np.int32)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), first)
    out = sample_fn(run.params, model_state, jax.device_put(jnp.asarray(padded), batch_sharding), key)
    outputs.append(np.asarray(jax.device_get(out))[:len(chunk)])
    bar.update(len(chunk))
  bar.close()
  seconds = time.perf_counter() - start
  samples = np.concatenate(outputs)
  ds = run.config.dataset
  return {"samples": samples, "images": to_uint8(samples, ds.mean, ds.std),
          "labels": labels.astype(np.int32), "num_classes": num_classes,
          **sampling.summary, "seconds": seconds, "checkpoint": str(run.checkpoint)}


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _WORKDIR.value:
    fail("usage: python -m jaxlab.sample --workdir=DIR [--step=N] --num=N [--sampler=NAME] "
         "[--steps=K] [--guidance=W] [--ema] [--out=DIR]")
  from absl import logging  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS["verbosity"].present:  # Orbax notes every read-only checkpoint it opens
    logging.set_verbosity(logging.ERROR)
  try:
    result = sample_run(_WORKDIR.value, num=_NUM.value, sampler=_SAMPLER.value, steps=_STEPS.value,
                        guidance=_GUIDANCE.value, eta=_ETA.value, ema=_EMA.value, step=_STEP.value,
                        seed=_SEED.value, batch=_BATCH.value)
  except SampleError as e:
    fail(str(e))
  out = pathlib.Path(_OUT.value or pathlib.Path(_WORKDIR.value) / "samples")
  out.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(out / "samples.npz", images=result["images"], labels=result["labels"])
  grids = write_grids(out, result["images"], result["num_classes"])
  print(f"{len(result['images'])} samples from {result['checkpoint']}{' (EMA)' if _EMA.value else ''}: "
        f"{result['sampler']}, {result['steps']} steps, {result['nfe']} network evaluations, guidance "
        f"{result['guidance']:g}; {len(result['images']) / result['seconds']:.1f} images/s "
        f"(including compilation)")
  print(f"wrote {', '.join(str(p) for p in [out / 'samples.npz', *grids])}")


if __name__ == "__main__":
  app.run(main)
