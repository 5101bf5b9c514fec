"""Feature extractors for Fréchet distance / KID: an in-project classifier, or InceptionV3 for FID.

`ClassifierFeatures(workdir)` restores a classification run (e.g. configs/quickstart.py's
small_cnn on digits) and maps uint8 images to the input of its classification head, and to its
logits (`logits`, for scoring class-conditional samples). Distances computed with it are
"FD-<name>" (name = the run's model, e.g. FD-small_cnn), never FID: FID means pytorch-fid's
InceptionV3 features, which `InceptionFeatures(weights)` computes from pytorch-fid's weights file
(see jaxlab/metrics/inception.py); only distances on those are "FID" (and their KID "KID").
Both have a `name` (what `frechet.distance_name` labels) and map images to float64 [N, D].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlab import tasks
from jaxlab.restore import restore_run


class _Identity(nnx.Module):
  def __call__(self, x):
    return x


class ClassifierFeatures:
  """Penultimate features and logits of a trained jaxlab classifier (its `head`'s input/output)."""

  def __init__(self, workdir, step: int | None = None, ema: bool = False, batch_size: int = 500):
    run = restore_run(workdir, step, ema)
    if tasks.CLASSIFIES not in run.setup.task.abilities:  # declared by the task, not its name
      raise ValueError(f"{run.checkpoint} is a '{run.config.task.name}' run; features need a classifier")
    model = jax.device_get(run.model())  # small models: kept whole on the default device
    if not hasattr(model, "head"):
      raise ValueError(f"model '{run.config.model.name}' has no `head` to take features before")
    self.name = run.config.model.name
    self.dataset = run.config.dataset
    self.image_shape = run.setup.info.image_shape
    self.batch_size = batch_size
    self._mean = np.asarray(run.config.dataset.mean, np.float32)
    self._std = np.asarray(run.config.dataset.std, np.float32)
    logits_def, state = nnx.split(model)
    model.head = _Identity()
    features_def, features_state = nnx.split(model)
    self._state, self._features_state = state, features_state
    self._logits_fn = jax.jit(lambda s, x: nnx.merge(logits_def, s)(x))
    self._features_fn = jax.jit(lambda s, x: nnx.merge(features_def, s)(x))

  def _batches(self, fn, state, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != tuple(self.image_shape):
      raise ValueError(f"{self.name} features take uint8 images of shape (N, {', '.join(map(str, self.image_shape))}), "
                       f"got {images.dtype} {images.shape}")
    out = []
    for first in range(0, len(images), self.batch_size):
      x = (images[first:first + self.batch_size].astype(np.float32) / 255.0 - self._mean) / self._std
      out.append(np.asarray(fn(state, jnp.asarray(x)), np.float64))
    return np.concatenate(out)

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C] -> float64 [N, D] penultimate features."""
    return self._batches(self._features_fn, self._features_state, images)

  def logits(self, images: np.ndarray) -> np.ndarray:
    return self._batches(self._logits_fn, self._state, images)


class InceptionFeatures:
  """pytorch-fid's InceptionV3 pool3 features (2048) of images, from its weights file: for FID.

  Takes uint8 images (0..255) or float images in [0, 1], [N, H, W, 3] or grey [N, H, W, 1]
  (repeated to RGB, as pytorch-fid reads image files as RGB), of any size (resized to 299).
  """

  def __init__(self, weights, batch_size: int = 50):
    from jaxlab.metrics import inception  # pylint: disable=import-outside-toplevel
    model = inception.inception_fid(weights)
    self.name = inception.NAME
    self.batch_size = batch_size
    graphdef, self._state = nnx.split(model)
    self._features_fn = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """uint8 or [0, 1] float [N, H, W, 1 or 3] -> float64 [N, 2048]."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or not (
        images.dtype == np.uint8 or np.issubdtype(images.dtype, np.floating)):
      raise ValueError(f"InceptionV3 features take uint8 (0..255) or float ([0, 1]) images of shape "
                       f"(N, H, W, 1 or 3), got {images.dtype} {images.shape}")
    out, size = [], min(self.batch_size, len(images))
    for first in range(0, len(images), size):
      chunk = images[first:first + size]
      pixels = chunk.astype(np.float32) / 255.0 if chunk.dtype == np.uint8 else chunk.astype(np.float32)
      pixels = np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels
      # The last batch is padded to the full size: one compiled shape for every batch.
      padded = np.concatenate([pixels, np.zeros((size - len(chunk),) + pixels.shape[1:], np.float32)])
      out.append(np.asarray(self._features_fn(self._state, jnp.asarray(padded)), np.float64)[:len(chunk)])
    return np.concatenate(out)
