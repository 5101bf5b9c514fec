"""Latent diffusion (Rombach et al. 2022): a denoiser trained on the latents of a frozen autoencoder.

`LatentDiffusionModel(denoiser, autoencoder, latent_scale)` is the module the `diffusion` task
trains when `config.task.autoencoder` names a stage-1 model. The autoencoder is frozen
(`jaxlab.models.vq.frozen`): its arrays are model state, never differentiated, never in the
optimizer state, stored once in checkpoints, and restored from the stage-1 run by `init_from`.
It always runs in eval mode (its codebook is not updated) under stop_gradient.

Where the latent is taken, as LDM does for its VQ-regularised autoencoders: the encoder's output
*before* quantization (`autoencoder.latents(images)`); generated latents go through the quantizer
and the decoder (`autoencoder.decode_latents`). Any stage-1 model with those two methods and a
spatial (H, W, C) latent works (`vq_autoencoder` has them).

Latents are multiplied by a scale so that they have roughly unit variance, which the noise
schedules assume. `latent_scale > 0` fixes it (0.18215 is Stable Diffusion's VAE's); 0 estimates
it as LDM's `scale_by_std` does: 1 / std of the first training batch's latents, kept in the model
state (`LatentScale`), so it is checkpointed, and every later step, evaluation and sample uses
that same value.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlab.models.vq.frozen import eval_view, freeze

LATENT_METHODS = ("latents", "decode_latents")


class LatentScale(nnx.Variable):
  """The factor latents are multiplied by (model state; 0 = not estimated yet)."""


def latent_shape(autoencoder: nnx.Module, image_shape: Sequence[int], name: str) -> tuple[int, ...]:
  """(H, W, C) of one image's latent, found by tracing the encoder (nothing is computed).

  Raises a one-line ValueError when `autoencoder` (the model `name`) has no spatial latent.
  """
  missing = [m for m in LATENT_METHODS if not hasattr(autoencoder, m)]
  if missing:
    raise ValueError(f"task.autoencoder '{name}' has no {' or '.join(missing)} method: latent diffusion "
                     f"needs an autoencoder with a spatial latent, e.g. 'vq_autoencoder'")
  graphdef, state = nnx.split(autoencoder)
  images = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  latent = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).latents(x), state, images)
  if latent.ndim != 4 or latent.shape[1] != latent.shape[2]:
    raise ValueError(f"task.autoencoder '{name}' gives latents of shape {latent.shape[1:]} for images "
                     f"{tuple(image_shape)}; the denoisers need square (H, W, C) latents")
  return tuple(latent.shape[1:])


class LatentDiffusionModel(nnx.Module):
  """The trained denoiser and the frozen autoencoder whose latents it models."""

  def __init__(self, denoiser: nnx.Module, autoencoder: nnx.Module, latent_shape: Sequence[int],
               latent_scale: float = 0.0):
    if latent_scale < 0:
      raise ValueError(f"task.latent_scale must be >= 0 (0: estimate it), got {latent_scale}")
    self.denoiser = denoiser
    self.autoencoder = freeze(autoencoder)
    self.latent_shape = tuple(latent_shape)
    self.latent_scale = LatentScale(jnp.asarray(latent_scale, jnp.float32))

  @property
  def num_classes(self) -> int:
    return self.denoiser.num_classes

  def _scale(self, latents: jax.Array) -> jax.Array:
    """The stored scale, or (before it is set) 1 / std of these latents, over the global batch."""
    stored = self.latent_scale[...]
    return jnp.where(stored > 0, stored, 1.0 / (jnp.std(latents) + 1e-6))

  def encode(self, images: jax.Array, *, keep_scale: bool = False) -> jax.Array:
    """Scaled latents of images (float32, no gradient). `keep_scale` stores the scale used (training)."""
    latents = jax.lax.stop_gradient(eval_view(self.autoencoder).latents(images).astype(jnp.float32))
    scale = jax.lax.stop_gradient(self._scale(latents))
    if keep_scale:
      self.latent_scale[...] = scale
    return latents * scale

  def decode(self, latents: jax.Array) -> jax.Array:
    """Images from scaled latents: unscale, quantize, decode (an unset scale counts as 1)."""
    stored = self.latent_scale[...]
    scale = jnp.where(stored > 0, stored, 1.0)
    return eval_view(self.autoencoder).decode_latents(latents / scale)
