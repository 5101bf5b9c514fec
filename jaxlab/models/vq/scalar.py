"""Quantizers without a learned codebook: FSQ and LFQ.

`FSQ` (finite scalar quantization, Mentzer et al. 2023): each of d channels is bounded with tanh
and rounded to one of `levels[i]` values; the implicit codebook is their product grid. Codes and
values match vector-quantize-pytorch's `FSQ(levels)` (checked against its outputs in the tests).

`LFQ` (lookup-free quantization, MAGVIT-v2, Yu et al. 2023): each channel is quantized to ±1, the
code is the binary number of the signs. Its entropy loss makes each token's code distribution
confident (low per-sample entropy) and the batch's use of codes even (high codebook entropy); the
code distribution is softmax(2·z·c/τ) over all 2^d codes c ∈ {−1, 1}^d, computed exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models.vq.base import Quantized, straight_through, usage_stats
from jaxlab.models.vq.vector_quantizer import projection

_MAX_LFQ_BITS = 14  # the exact entropy needs (tokens x 2^bits) probabilities


class FSQ(nnx.Module):
  """Finite scalar quantization of the last axis; projections in/out when dim != len(levels)."""

  def __init__(self, levels: Sequence[int], *, dim: int | None = None,
               param_dtype: DTypeLike = jnp.float32, rngs: nnx.Rngs):
    levels = [int(l) for l in levels]
    if any(l < 3 for l in levels):
      # Level 2 would round tanh's output to ±0.5/1 asymmetrically (the reference needs its
      # symmetry-preserving variant for it).
      raise ValueError(f"FSQ levels must all be >= 3, got {levels}")
    self.levels = tuple(levels)
    self.codebook_dim = len(levels)
    self.dim = dim or self.codebook_dim
    self.codebook_size = int(np.prod(levels))
    self.deterministic = False
    kw = {"param_dtype": param_dtype, "rngs": rngs}
    projected = self.dim != self.codebook_dim
    self.project_in = projection(self.dim, self.codebook_dim, **kw) if projected else None
    self.project_out = projection(self.codebook_dim, self.dim, **kw) if projected else None

  # numpy constants, rebuilt from the static level tuple (numpy attributes would become state).
  @property
  def _levels(self) -> np.ndarray:
    return np.asarray(self.levels, np.float32)

  @property
  def _basis(self) -> np.ndarray:
    return np.cumprod((1,) + self.levels[:-1]).astype(np.int32)

  def _bound(self, z: jax.Array, eps: float = 1e-3) -> jax.Array:
    """tanh-bounded z: rounding it gives levels[i] integers centred on 0 (shifted by 1/2 if even)."""
    half_l = (self._levels - 1) * (1 + eps) / 2
    offset = np.where(self._levels % 2 == 0, 0.5, 0.0).astype(np.float32)
    shift = np.arctanh(offset / half_l).astype(np.float32)
    return jnp.tanh(z + shift) * half_l - offset

  def _half_width(self) -> np.ndarray:
    return (self._levels // 2).astype(np.float32)

  def codes_from_values(self, values: jax.Array) -> jax.Array:
    """Code indices of quantized values (..., len(levels)) in [-1, 1]."""
    half = self._half_width()
    digits = values * half + half
    return jnp.round(jnp.sum(digits * self._basis, axis=-1)).astype(jnp.int32)

  def decode_codes(self, codes: jax.Array) -> jax.Array:
    half = self._half_width()
    digits = (codes[..., None] // self._basis) % self._levels.astype(np.int32)
    values = (digits.astype(jnp.float32) - half) / half
    return self.project_out(values) if self.project_out is not None else values

  def __call__(self, x: jax.Array, active: jax.Array | bool = True) -> Quantized:
    del active
    z = x.astype(jnp.float32)
    z = self.project_in(z) if self.project_in is not None else z
    bounded = self._bound(z)
    values = straight_through(bounded, jnp.round(bounded)) / self._half_width()
    codes = self.codes_from_values(jax.lax.stop_gradient(values))
    out = self.project_out(values) if self.project_out is not None else values
    return Quantized(out, codes, jnp.zeros((), jnp.float32), usage_stats(codes, self.codebook_size))


class LFQ(nnx.Module):
  """Lookup-free quantization to {−1, 1}^bits, with MAGVIT-v2's entropy loss."""

  def __init__(self, dim: int, *, bits: int | None = None, entropy_weight: float = 0.1,
               diversity_weight: float = 1.0, commitment_weight: float = 0.25,
               temperature: float = 0.01, param_dtype: DTypeLike = jnp.float32, rngs: nnx.Rngs):
    bits = bits or dim
    if not 1 <= bits <= _MAX_LFQ_BITS:
      raise ValueError(f"LFQ bits must be in 1..{_MAX_LFQ_BITS} (exact entropy over 2^bits codes), got {bits}")
    self.dim, self.bits, self.codebook_size = dim, bits, 2 ** bits
    self.entropy_weight, self.diversity_weight = entropy_weight, diversity_weight
    self.commitment_weight, self.temperature = commitment_weight, temperature
    self.deterministic = False
    kw = {"param_dtype": param_dtype, "rngs": rngs}
    projected = dim != bits
    self.project_in = projection(dim, bits, **kw) if projected else None
    self.project_out = projection(bits, dim, **kw) if projected else None

  @property
  def _bit_values(self) -> np.ndarray:
    return (2 ** np.arange(self.bits - 1, -1, -1)).astype(np.int32)  # first channel = MSB

  def _all_codes(self) -> jax.Array:
    """(2^bits, bits) the ±1 vector of every code index."""
    digits = (np.arange(self.codebook_size)[:, None] // self._bit_values) % 2
    return jnp.asarray(digits * 2.0 - 1.0, jnp.float32)

  def decode_codes(self, codes: jax.Array) -> jax.Array:
    values = ((codes[..., None] // self._bit_values) % 2).astype(jnp.float32) * 2.0 - 1.0
    return self.project_out(values) if self.project_out is not None else values

  def __call__(self, x: jax.Array, active: jax.Array | bool = True) -> Quantized:
    del active
    lead = x.shape[:-1]
    z = x.astype(jnp.float32)
    z = self.project_in(z) if self.project_in is not None else z
    q = jnp.where(z > 0, 1.0, -1.0)
    codes = jnp.sum((z > 0).astype(jnp.int32) * self._bit_values, axis=-1)
    flat = z.reshape(-1, self.bits)
    logits = 2.0 * flat @ self._all_codes().T / self.temperature
    probs = jax.nn.softmax(logits, axis=-1)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    sample_entropy = -jnp.mean(jnp.sum(probs * log_probs, axis=-1))
    mean_probs = jnp.mean(probs, axis=0)
    codebook_entropy = -jnp.sum(mean_probs * jnp.log(jnp.maximum(mean_probs, 1e-12)))
    entropy_loss = sample_entropy - self.diversity_weight * codebook_entropy
    commitment = jnp.mean(jnp.square(z - q))
    loss = self.entropy_weight * entropy_loss + self.commitment_weight * commitment
    values = straight_through(z, q)
    values = self.project_out(values) if self.project_out is not None else values
    stats = {"commitment": commitment, "sample_entropy": sample_entropy,
             "codebook_entropy": codebook_entropy, **usage_stats(codes, self.codebook_size)}
    return Quantized(values, codes.reshape(lead), loss, stats)
