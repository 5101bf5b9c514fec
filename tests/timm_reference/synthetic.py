"""Deterministic synthetic timm state dicts, made with numpy alone (CI has no torch).

`make_fixtures.py` loads these values into the timm model to record its logits; the tests build the
same values from the fixture's key/shape list and load them into the jaxlab model. Each key's values
come from an rng seeded by a hash of the key, so they do not depend on the order of the keys.
Scales keep deep networks' activations sane (He-like weights, BN variances near 1) and make every
branch matter (layer-scale gammas of 0.1 rather than timm's 1e-6 init).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

import numpy as np

# Names of 1-D scales that timm initialises near 0 so residual branches start off; made 0.1 here.
_LAYER_SCALES = ("gamma", "gamma_1", "gamma_2", "ls1", "ls2", "layer_scale", "res_scale")


def synthetic_value(key: str, shape: Sequence[int], seed: int = 0) -> np.ndarray:
  """The synthetic value of one state-dict entry."""
  shape = tuple(int(d) for d in shape)
  rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
  leaf = key.rsplit(".", 1)[-1]
  parent = key.rsplit(".", 2)[-2] if key.count(".") else ""
  normal = lambda: rng.standard_normal(shape)
  if leaf == "num_batches_tracked":
    return np.zeros(shape, np.int64)
  if leaf == "running_var":
    value = rng.uniform(0.5, 1.5, shape)
  elif leaf == "running_mean":
    value = 0.1 * normal()
  elif len(shape) >= 2 and leaf.endswith("weight"):
    value = normal() / np.sqrt(max(1, int(np.prod(shape[1:]))))
  elif leaf.endswith("bias"):
    value = 0.1 * normal()
  elif any(s in leaf or s in parent for s in _LAYER_SCALES):
    value = 0.1 + 0.05 * normal()
  elif leaf.endswith("weight"):  # 1-D: norm scales, GRN and other affine scales
    value = 1.0 + 0.1 * normal()
  else:  # position embeddings, tokens, tables
    value = 0.02 * normal()
  return value.astype(np.float32)


def synthetic_state_dict(spec: Iterable[tuple[str, Sequence[int]]], seed: int = 0
                         ) -> dict[str, np.ndarray]:
  """`{key: value}` for a list of (state-dict key, shape) pairs, e.g. from a fixture's JSON."""
  return {key: synthetic_value(key, shape, seed) for key, shape in spec}


def synthetic_images(seed: int, batch: int, size: int, channels: int = 3) -> np.ndarray:
  """The fixed NHWC float32 input that the fixtures' logits were computed on (torch gets NCHW)."""
  return np.random.default_rng(seed).standard_normal((batch, size, size, channels)).astype(np.float32)
