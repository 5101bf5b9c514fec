"""Reconstruction quality of images: PSNR and SSIM, per image, for NHWC batches.

Both follow `tf.image.psnr`/`tf.image.ssim` (SSIM: Gaussian window, 'valid' filtering, the
per-channel mean of the SSIM map; Wang et al. 2004 constants K1 = 0.01, K2 = 0.03), so numbers are
comparable to papers that report them with TF/skimage defaults. The window shrinks to the image
for images smaller than it (8x8 digits).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def psnr(a: jax.Array, b: jax.Array, max_value: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio in dB of each image pair: (B,)."""
  mse = jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)), axis=(1, 2, 3))
  return 10.0 * jnp.log10(max_value ** 2 / jnp.maximum(mse, 1e-12))


def _gaussian_window(size: int, sigma: float) -> jax.Array:
  coords = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2.0
  g = jnp.exp(-0.5 * jnp.square(coords / sigma))
  return g / g.sum()


def _filter(x: jax.Array, window: jax.Array) -> jax.Array:
  """Separable 'valid' filtering of each channel of NHWC x."""
  channels = x.shape[-1]
  size = window.shape[0]
  kernel_h = jnp.tile(window.reshape(size, 1, 1, 1), (1, 1, 1, channels))
  kernel_w = jnp.tile(window.reshape(1, size, 1, 1), (1, 1, 1, channels))
  conv = lambda y, k: jax.lax.conv_general_dilated(
      y, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels)
  return conv(conv(x, kernel_h), kernel_w)


def ssim(a: jax.Array, b: jax.Array, max_value: float = 1.0, filter_size: int = 11,
         filter_sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> jax.Array:
  """Structural similarity of each image pair: (B,)."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  size = min(filter_size, a.shape[1], a.shape[2])
  window = _gaussian_window(size, filter_sigma)
  c1, c2 = (k1 * max_value) ** 2, (k2 * max_value) ** 2
  mu_a, mu_b = _filter(a, window), _filter(b, window)
  var_a = _filter(a * a, window) - mu_a ** 2
  var_b = _filter(b * b, window) - mu_b ** 2
  cov = _filter(a * b, window) - mu_a * mu_b
  luminance = (2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1)
  structure = (2 * cov + c2) / (var_a + var_b + c2)
  return jnp.mean(luminance * structure, axis=(1, 2, 3))
