"""What every quantizer returns, the variable types its non-trained state lives in, and the two
ways of passing gradients through the non-differentiable code lookup.

Quantizers compute in float32 whatever the compute dtype of the model around them: distances and
EMA statistics in half precision pick wrong codes and drift.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from jaxlab.metrics import codebook as codebook_metrics


class Codebook(nnx.Variable):
  """Code vectors that are model state, not trained parameters: set by EMA updates, k-means and
  dead-code restarts (or fixed at random, SimVQ). The trainer keeps them out of the gradients and
  the optimizer, and replicates them on every device."""


class CodebookStat(nnx.Variable):
  """Running statistics of a codebook (EMA cluster sizes and sums, whether k-means ran)."""


@struct.dataclass
class Quantized:
  """A quantizer's result.

  values: the quantized input, same shape as the input (float32); gradients reach the input.
  codes: int32 code indices, the input's shape without the feature axis (residual quantizers add a
    trailing level axis; a level dropped by quantizer dropout has code -1).
  loss: scalar auxiliary loss to add to the training loss (commitment, codebook, entropy terms).
  stats: named float32 scalars for logging (codebook usage, perplexity, the loss terms, ...).
  """
  values: jax.Array
  codes: jax.Array
  loss: jax.Array
  stats: dict[str, jax.Array]


def straight_through(x: jax.Array, q: jax.Array) -> jax.Array:
  """Forward value q, gradient passed unchanged to x (the VQ-VAE estimator)."""
  return x + jax.lax.stop_gradient(q - x)


def rotation_trick(x: jax.Array, q: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Forward value q, gradient of x rotated and scaled like x → q (Fifty et al. 2024, eq. 4).

  q̃ = s·R·x with R the rotation taking x̂ to q̂ (R = I − 2wwᵀ + 2q̂x̂ᵀ, w = (x̂+q̂)/‖x̂+q̂‖) and
  s = ‖q‖/‖x‖, both treated as constants; so ∂L/∂x = s·Rᵀ ∂L/∂q. Over the last axis.
  """
  norm_x = jnp.linalg.norm(x, axis=-1, keepdims=True)
  norm_q = jnp.linalg.norm(q, axis=-1, keepdims=True)
  x_hat = jax.lax.stop_gradient(x / jnp.maximum(norm_x, eps))
  q_hat = jax.lax.stop_gradient(q / jnp.maximum(norm_q, eps))
  w = x_hat + q_hat
  w = jax.lax.stop_gradient(w / jnp.maximum(jnp.linalg.norm(w, axis=-1, keepdims=True), eps))
  dot = lambda a, b: jnp.sum(a * b, axis=-1, keepdims=True)
  rotated = x - 2.0 * dot(x, w) * w + 2.0 * dot(x, x_hat) * q_hat
  scale = jax.lax.stop_gradient(norm_q / jnp.maximum(norm_x, eps))
  return rotated * scale


GRADIENT_ESTIMATORS = {"straight_through": straight_through, "rotation": rotation_trick}


def gradient_estimator(name: str):
  if name not in GRADIENT_ESTIMATORS:
    raise ValueError(f"unknown VQ gradient '{name}'; valid: {', '.join(GRADIENT_ESTIMATORS)}")
  return GRADIENT_ESTIMATORS[name]


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def nearest_codes(x: jax.Array, codebook: jax.Array) -> jax.Array:
  """Index of the nearest code (squared Euclidean distance) for each row of x (N, D)."""
  distances = (jnp.sum(x * x, axis=-1, keepdims=True) - 2.0 * x @ codebook.T
               + jnp.sum(codebook * codebook, axis=-1)[None, :])
  return jnp.argmin(distances, axis=-1).astype(jnp.int32)


def usage_stats(codes: jax.Array, codebook_size: int, prefix: str = "") -> dict[str, jax.Array]:
  """Codebook usage, perplexity and entropy of one batch of codes (see jaxlab.metrics.codebook)."""
  counts = codebook_metrics.code_counts(codes, codebook_size)
  return {f"{prefix}{k}": v for k, v in codebook_metrics.usage(counts).items()}
