r"""A perceptual distance from any frozen image network: LPIPS without its learned layer weights.

The network's intermediate outputs are captured (`nnx.capture`, so the network needs no special
method) for the submodules whose path matches `layers` (a regex over '/'-joined paths, e.g.
r"^bn\d" for small_cnn's normalised activations); each feature map is normalised to unit length
over channels and the distance is the sum over layers of the mean squared difference (Zhang et
al. 2018, eq. 1, with all channel weights 1).

The network can be given (any nnx module taking NHWC images) or built from the model registry,
e.g. a `small_cnn` classifier trained on the same data; its weights are `Frozen` and come from the
classifier's run through `config.init_from` (see `jaxlab.tasks.tokenizer`).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlab.models.vq.base import l2_normalize
from jaxlab.models.vq.frozen import eval_view, freeze


class PerceptualDistance(nnx.Module):

  def __init__(self, network: nnx.Module, layers: str):
    self.network = freeze(network)
    self.layers = layers

  def features(self, images: jax.Array) -> list[jax.Array]:
    network = eval_view(self.network)
    _, captured = nnx.capture(network, nnx.Intermediate, method_outputs=nnx.Intermediate)(images)
    pattern = re.compile(self.layers)
    found = [(path, v.get_value()) for path, v in nnx.to_flat_state(captured)
             if pattern.search("/".join(map(str, path)))]
    if not found:
      raise ValueError(f"perceptual layers '{self.layers}' match no submodule output; outputs are: "
                       + ", ".join("/".join(map(str, p)) for p, _ in nnx.to_flat_state(captured)))
    return [out for _, outputs in sorted(found, key=lambda f: f[0]) for out in outputs
            if out.ndim == 4]

  def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
    """Per-image distance (B,) between two image batches."""
    total, n = 0.0, a.shape[0]
    for f in self.features(jnp.concatenate([a, b])):  # one pass over both batches
      fa, fb = f[:n], f[n:]
      diff = l2_normalize(fa.astype(jnp.float32)) - l2_normalize(fb.astype(jnp.float32))
      total = total + jnp.mean(jnp.sum(jnp.square(diff), axis=-1), axis=(1, 2))
    return total
