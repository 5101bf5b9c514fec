"""Codebook statistics of a vector quantizer: how many codes a batch uses, and how evenly.

- usage: fraction of the codebook chosen at least once;
- entropy (nats) of the code distribution and perplexity = exp(entropy): the number of equally
  used codes with the same entropy (= codebook size at uniform use, 1 at collapse);
- dead fraction: fraction of codes whose running (EMA) count fell below a threshold, the codes a
  dead-code restart replaces.

All are plain jnp reductions: on a batch sharded over devices they are global statistics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def code_counts(codes: jax.Array, codebook_size: int, weights: jax.Array | None = None) -> jax.Array:
  """How often each code occurs in `codes` (any shape; negative codes are ignored), float32 [K].

  `weights` (broadcastable to codes) counts each occurrence with a weight (e.g. a padding mask).
  """
  w = jnp.ones(codes.shape, jnp.float32) if weights is None else jnp.broadcast_to(
      weights, codes.shape).astype(jnp.float32)
  codes, w = codes.reshape(-1), w.reshape(-1)
  w = jnp.where(codes >= 0, w, 0.0)
  return jnp.zeros((codebook_size,), jnp.float32).at[jnp.maximum(codes, 0)].add(w)


def usage(counts: jax.Array) -> dict[str, jax.Array]:
  """usage, entropy and perplexity of a histogram of codes."""
  total = jnp.maximum(counts.sum(), 1e-12)
  p = counts / total
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return {"usage": jnp.mean((counts > 0).astype(jnp.float32)), "entropy": entropy,
          "perplexity": jnp.exp(entropy)}


def dead_fraction(running_counts: jax.Array, threshold: float) -> jax.Array:
  """Fraction of codes whose running count is below `threshold`."""
  return jnp.mean((running_counts < threshold).astype(jnp.float32))
