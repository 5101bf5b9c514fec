"""Residual vector quantization: each level quantizes what the levels before it left over.

`codebook_sizes` gives one codebook per level, coarse to fine, and they may differ: VQDNA's
hierarchical residual quantization (HRQ) uses small codebooks for the coarse levels and larger
ones for the fine residuals, e.g. (16, 64, 256). Quantizer dropout (SoundStream) trains the
model to work with the first n levels only: in a training batch, with probability
`quantizer_dropout`, a random n in 1..L is drawn (one n for the whole global batch, so every
device uses the same levels) and the levels after it are neither used nor updated.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models.vq.base import Quantized, straight_through
from jaxlab.models.vq.vector_quantizer import VectorQuantizer


class ResidualVQ(nnx.Module):
  """L VectorQuantizers on successive residuals; codes (..., L), values the sum of the levels."""

  def __init__(self, dim: int, codebook_sizes: Sequence[int], *, quantizer_dropout: float = 0.0,
               param_dtype: DTypeLike = jnp.float32, rngs: nnx.Rngs, **vq_kwargs):
    if not codebook_sizes:
      raise ValueError("ResidualVQ needs at least one codebook size")
    if not 0.0 <= quantizer_dropout <= 1.0:
      raise ValueError(f"quantizer_dropout must be in [0, 1], got {quantizer_dropout}")
    self.dim, self.codebook_sizes = dim, tuple(int(s) for s in codebook_sizes)
    self.quantizer_dropout = quantizer_dropout
    self.deterministic = False
    self.levels = nnx.List([VectorQuantizer(dim, size, param_dtype=param_dtype, rngs=rngs, **vq_kwargs)
                            for size in self.codebook_sizes])
    self.rngs = rngs.dropout.fork() if quantizer_dropout > 0 else None

  @property
  def codebook_size(self) -> int:
    """The largest level's size: a vocabulary that holds every level's codes."""
    return max(self.codebook_sizes)

  def decode_codes(self, codes: jax.Array) -> jax.Array:
    """Sum of the levels' code vectors for codes (..., L); code -1 (a dropped level) adds nothing."""
    total = 0.0
    for i, level in enumerate(self.levels):
      c = codes[..., i]
      total = total + jnp.where((c >= 0)[..., None], level.decode_codes(jnp.maximum(c, 0)), 0.0)
    return total

  def _num_active(self) -> jax.Array:
    num_levels = len(self.levels)
    if self.deterministic or self.quantizer_dropout == 0.0:
      return jnp.asarray(num_levels)
    drop_key, count_key = jax.random.split(self.rngs())
    dropped = jax.random.bernoulli(drop_key, self.quantizer_dropout)
    return jnp.where(dropped, jax.random.randint(count_key, (), 1, num_levels + 1), num_levels)

  def __call__(self, x: jax.Array) -> Quantized:
    num_active = self._num_active()
    residual = x.astype(jnp.float32)
    values = jnp.zeros_like(residual)
    codes, loss, stats = [], 0.0, {}
    for i, level in enumerate(self.levels):
      active = i < num_active
      out = level(residual, active=active)
      quantized = jax.lax.stop_gradient(out.values)
      values = values + jnp.where(active, quantized, 0.0)
      residual = residual - quantized
      codes.append(jnp.where(active, out.codes, -1))
      loss = loss + jnp.where(active, out.loss, 0.0)
      stats.update({f"level{i}/{k}": v for k, v in out.stats.items()})
    # The sum passes the gradient straight through to x; the levels' commitment losses reach x
    # through their residuals.
    values = straight_through(x.astype(jnp.float32), values)
    stats["active_levels"] = num_active.astype(jnp.float32)
    for name in ("usage", "perplexity", "dead_fraction"):
      stats[name] = jnp.mean(jnp.stack([stats[f"level{i}/{name}"] for i in range(len(self.levels))]))
    return Quantized(values, jnp.stack(codes, axis=-1), loss, stats)
