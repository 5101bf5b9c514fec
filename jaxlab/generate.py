"""Command line: images from a trained generator's checkpoint, written as PNGs.

    python -m jaxlab.generate --config=configs/maskgit_digits.py:workdirs/tokenizer \
        --workdir=workdirs/maskgit [--num_per_class=10] [--out=DIR] [--seed=0] [--step=N]

Writes OUT/grid.png (one row per class) and OUT/CLASS_INDEX.png for every image; OUT defaults to
WORKDIR/samples. The config is the one the run was trained with; its task must have
`sample(model, labels, rng)` (maskgit). Images are mapped back to 0..255 with the dataset's
mean and std.
"""

from __future__ import annotations

import pathlib
import sys

from absl import app, flags, logging

# Defines --config (with --config.KEY=VALUE overrides) and --workdir, as for training.
from jaxlab.train import parse_flags

# allow_override: the CLIs share flag names (workdir, step, out, ...) and tests import several of
# them into one process; only the module run as __main__ parses its flags.
_OUT = flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/samples).", allow_override=True)
_NUM_PER_CLASS = flags.DEFINE_integer("num_per_class", 10, "Images per class.", allow_override=True)
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.", allow_override=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", allow_override=True)


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def to_uint8(images, mean, std):
  """Normalised NHWC float images → uint8 pixels."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  pixels = np.asarray(images, np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
  return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def write_pngs(pixels, labels, out: pathlib.Path, per_class: int) -> pathlib.Path:
  """Every image as CLASS_INDEX.png and a grid.png with one row per class (upscaled x4)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  out.mkdir(parents=True, exist_ok=True)
  squeeze = lambda p: p[..., 0] if p.shape[-1] == 1 else p
  for i, (image, label) in enumerate(zip(pixels, labels)):
    Image.fromarray(squeeze(image)).save(out / f"{int(label)}_{i % per_class}.png")
  n, h, w, c = pixels.shape
  rows = n // per_class
  grid = pixels.reshape(rows, per_class, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, per_class * w, c)
  grid = np.kron(grid, np.ones((4, 4, 1), np.uint8))  # tiny digits: nearest-neighbour x4
  path = out / "grid.png"
  Image.fromarray(squeeze(grid)).save(path)
  return path


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments: {' '.join(argv[1:])}")
  config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
  if config is None or not workdir:
    _fail("both --config=FILE.py[:ARG] and --workdir=DIR are required")
  if not flags.FLAGS["verbosity"].present:  # Orbax logs every file it reads at INFO
    logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from jaxlab import config as config_lib  # pylint: disable=import-outside-toplevel
  from jaxlab import trainer  # pylint: disable=import-outside-toplevel
  from jaxlab.checkpoint import Checkpointer  # pylint: disable=import-outside-toplevel

  try:
    config.init_from.path = None  # the generator's own checkpoint holds everything
    config_lib.validate(config, jax.device_count(), jax.process_count())
    setup = trainer.build(config)
  except config_lib.ConfigError as e:
    _fail(str(e))
  if not hasattr(setup.task, "sample"):
    _fail(f"task '{config.task.name}' cannot sample (no `sample` method)")
  checkpointer = Checkpointer(pathlib.Path(workdir) / "checkpoints", every_steps=1, keep=1)
  step = _STEP.value if _STEP.value is not None else checkpointer.latest_step()
  if step is None:
    _fail(f"no checkpoint in {workdir}/checkpoints")
  state = checkpointer.restore(step, setup.abstract_state)
  checkpointer.close()

  per_class = _NUM_PER_CLASS.value
  labels = jnp.repeat(jnp.arange(setup.info.num_classes), per_class)

  @jax.jit
  def sample(state, labels, rng):
    model = setup.graph.merge(state.params, state.model_state, train=False)
    return setup.task.sample(model, labels, rng)

  images = sample(state, labels, jax.random.PRNGKey(_SEED.value))
  pixels = to_uint8(jax.device_get(images), config.dataset.mean, config.dataset.std)
  out = pathlib.Path(_OUT.value) if _OUT.value else pathlib.Path(workdir) / "samples"
  grid = write_pngs(pixels, jax.device_get(labels), out, per_class)
  print(f"{len(pixels)} samples from step {step}: {out}  (grid: {grid})")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
