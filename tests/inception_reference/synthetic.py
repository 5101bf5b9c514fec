"""Synthetic InceptionV3 weights and images, made with numpy alone (CI has no torch).

The weights are tests/timm_reference/synthetic.py's, seeded by each key, with the convolution
weights scaled by sqrt(2) (He's gain for ReLU): with that library's 1/sqrt(fan-in) scale the
signal halves at each of Inception's ~20 conv layers in a row and the pool features no longer
depend on the image. The two images differ in brightness and structure (uniform noise; gradients
with a bright square), because a global average pool maps two noise images to nearly the same
features.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from timm_reference.synthetic import synthetic_state_dict

HE_GAIN = np.float32(np.sqrt(2.0))


def synthetic_inception_weights(spec: Iterable[tuple[str, Sequence[int]]], seed: int = 0
                                ) -> dict[str, np.ndarray]:
  """`{key: value}` for a list of (state-dict key, shape) pairs of an InceptionV3 state dict."""
  weights = synthetic_state_dict(spec, seed)
  return {key: value * HE_GAIN if key.endswith("conv.weight") else value for key, value in weights.items()}


def synthetic_images(seed: int, height: int, width: int) -> np.ndarray:
  """Two float32 NHWC images in [0, 1] (pytorch-fid's input range): noise, and a smooth scene."""
  noise = np.random.default_rng(seed).uniform(0.0, 1.0, (height, width, 3))
  y, x = np.mgrid[0:height, 0:width] / max(height, width)
  scene = np.stack([0.2 + 0.6 * x, 0.8 - 0.5 * y, 0.5 + 0.3 * np.sin(6 * x)], axis=-1)
  scene[height // 4:height * 5 // 8, width // 4:width * 11 // 20] = 0.95
  return np.stack([noise, scene]).astype(np.float32)


def small_image(seed: int, height: int, width: int) -> np.ndarray:
  """One float32 NHWC noise image, the input of the resize comparison."""
  return np.random.default_rng(seed).uniform(0.0, 1.0, (1, height, width, 3)).astype(np.float32)
