"""Nearest-neighbour vector quantization with a codebook: VQ (VQ-VAE/VQGAN) and SimVQ.

`VectorQuantizer` options:
- codebook learned by gradient (codebook loss ‖sg(z) − e‖²) or by EMA of assigned vectors
  (`ema_decay`; van den Oord et al. 2017, appendix);
- cosine similarity (`cosine=True`): inputs and codes on the unit sphere (ViT-VQGAN);
- a low-dimensional lookup space (`codebook_dim` < dim, with linear projections in and out);
- k-means initialisation on the first training batch (`kmeans_init`);
- dead-code restart (`restart_dead`): codes whose running count fell below `dead_threshold` are
  moved onto random encoder outputs of the current batch;
- gradients through the lookup by straight-through or the rotation trick (`gradient`).

Codebook updates happen in train mode only (`deterministic=False`, set by `model.train()`), as
plain jnp reductions over the whole batch: under jit with a data-sharded batch XLA turns them into
global reductions, so every device computes the same new codebook from the same global numbers
(and the same random choices: the rng is replicated). Nothing here is device-local.

`SimVQ` (Zhu et al. 2024): a frozen random codebook C reparameterised by one learned linear map,
codes C·W; the whole codebook moves with W, so codes do not die.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.metrics import codebook as codebook_metrics
from jaxlab.models import logical_axes
from jaxlab.models.vq.base import (
  Codebook,
  CodebookStat,
  Quantized,
  gradient_estimator,
  l2_normalize,
  nearest_codes,
  usage_stats,
)


def projection(in_features: int, out_features: int, *, param_dtype: DTypeLike,
               rngs: nnx.Rngs) -> nnx.Linear:
  """A float32-compute linear map into or out of a quantizer's lookup space."""
  return nnx.Linear(
      in_features, out_features, dtype=jnp.float32, param_dtype=param_dtype,
      kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(),
                                        (logical_axes.EMBED, None)),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (None,)), rngs=rngs)


def kmeans_plus_plus(x: jax.Array, num_codes: int, key: jax.Array) -> jax.Array:
  """k-means++ seeding: each next centre is a row drawn with probability ∝ squared distance to
  the nearest centre chosen so far (Arthur & Vassilvitskii 2007)."""
  n = x.shape[0]
  keys = jax.random.split(key, num_codes)
  first = x[jax.random.randint(keys[0], (), 0, n)]
  centroids = jnp.zeros((num_codes, x.shape[1]), x.dtype).at[0].set(first)
  nearest = jnp.sum(jnp.square(x - first), axis=-1)

  def add(i, carry):
    centroids, nearest = carry
    logits = jnp.log(jnp.maximum(nearest, 1e-30))
    pick = x[jax.random.categorical(keys[i], logits)]
    nearest = jnp.minimum(nearest, jnp.sum(jnp.square(x - pick), axis=-1))
    return centroids.at[i].set(pick), nearest

  centroids, _ = jax.lax.fori_loop(1, num_codes, add, (centroids, nearest))
  return centroids


def kmeans(x: jax.Array, num_codes: int, iters: int, key: jax.Array, cosine: bool = False):
  """Lloyd's k-means on the rows of x (N, D), seeded by k-means++: (centroids (K, D), cluster
  sizes (K,)). An emptied cluster keeps its previous centroid."""
  n = x.shape[0]
  centroids = kmeans_plus_plus(x, num_codes, key)

  def step(centroids, _):
    codes = nearest_codes(x, centroids)
    counts = jax.ops.segment_sum(jnp.ones((n,), jnp.float32), codes, num_segments=num_codes)
    sums = jax.ops.segment_sum(x, codes, num_segments=num_codes)
    new = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centroids)
    return (l2_normalize(new) if cosine else new), counts

  centroids, counts = jax.lax.scan(step, centroids, None, length=iters)
  return centroids, counts[-1]


class VectorQuantizer(nnx.Module):
  """Quantizes the last axis of its input to the nearest of `codebook_size` codes."""

  def __init__(self, dim: int, codebook_size: int, *, codebook_dim: int | None = None,
               commitment_weight: float = 0.25, ema_decay: float | None = 0.99,
               cosine: bool = False, kmeans_init: bool = False, kmeans_iters: int = 10,
               restart_dead: bool = False, dead_threshold: float = 1.0,
               gradient: str = "straight_through", epsilon: float = 1e-5,
               param_dtype: DTypeLike = jnp.float32, rngs: nnx.Rngs):
    if codebook_size < 2:
      raise ValueError(f"codebook_size must be >= 2, got {codebook_size}")
    if ema_decay is not None and not 0.0 < ema_decay < 1.0:
      raise ValueError(f"ema_decay must be in (0, 1) or None (codebook learned by gradient), got {ema_decay}")
    if (kmeans_init or restart_dead) and ema_decay is None:
      raise ValueError("kmeans_init and restart_dead set the codebook directly, so it must be model "
                       "state: use ema_decay (a float), not None")
    self.estimator = gradient_estimator(gradient)
    self.dim, self.codebook_size = dim, codebook_size
    self.codebook_dim = codebook_dim or dim
    self.commitment_weight, self.ema_decay, self.cosine = commitment_weight, ema_decay, cosine
    self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
    self.restart_dead, self.dead_threshold, self.epsilon = restart_dead, dead_threshold, epsilon
    self.deterministic = False  # train mode: update the codebook; eval mode: only look up
    kw = {"param_dtype": param_dtype, "rngs": rngs}
    projected = self.codebook_dim != dim
    self.project_in = projection(dim, self.codebook_dim, **kw) if projected else None
    self.project_out = projection(self.codebook_dim, dim, **kw) if projected else None

    init = jax.random.normal(rngs.params(), (codebook_size, self.codebook_dim), jnp.float32)
    init = l2_normalize(init) if cosine else init * self.codebook_dim ** -0.5
    if ema_decay is None:
      self.codebook = nnx.Param(init.astype(param_dtype), out_sharding=(None, logical_axes.EMBED))
    else:
      self.codebook = Codebook(init)
      # EMA counts start at one per code and the sums at the codes, so that sum/count is the
      # initial codebook and the first updates are weighted averages (no 1/(1-decay) blow-up).
      self.embed_sum = CodebookStat(init)
    self.cluster_size = CodebookStat(jnp.ones((codebook_size,), jnp.float32))  # running code counts
    self.initialized = CodebookStat(jnp.asarray(not kmeans_init))
    self.rngs = rngs.dropout.fork() if (kmeans_init or restart_dead) else None

  def _codebook(self) -> jax.Array:
    codebook = self.codebook[...].astype(jnp.float32)
    return l2_normalize(codebook) if self.cosine else codebook

  def decode_codes(self, codes: jax.Array) -> jax.Array:
    """Quantized values (codes.shape + (dim,)) of code indices."""
    values = self._codebook()[codes]
    return self.project_out(values) if self.project_out is not None else values

  def _maybe_kmeans_init(self, flat: jax.Array, active) -> None:
    todo = active & ~self.initialized[...]
    key = self.rngs()  # drawn outside the branch: both branches must leave the stream alike
    centroids, counts = jax.lax.cond(
        todo, lambda: kmeans(flat, self.codebook_size, self.kmeans_iters, key, self.cosine),
        lambda: (self.codebook[...], self.cluster_size[...]))
    self.codebook[...] = centroids
    self.cluster_size[...] = jnp.where(todo, jnp.maximum(counts, 1.0), self.cluster_size[...])
    self.embed_sum[...] = jnp.where(todo, centroids * self.cluster_size[...][:, None], self.embed_sum[...])
    self.initialized[...] = self.initialized[...] | active

  def _update(self, flat: jax.Array, codes: jax.Array, active) -> None:
    """EMA of code counts (always) and of the codebook (with ema_decay), then restarts."""
    decay = self.ema_decay if self.ema_decay is not None else 0.99
    counts = jax.ops.segment_sum(jnp.ones(codes.shape, jnp.float32), codes,
                                 num_segments=self.codebook_size)
    ema = lambda old, new: jnp.where(active, decay * old + (1.0 - decay) * new, old)
    cluster_size = ema(self.cluster_size[...], counts)
    if self.ema_decay is not None:
      embed_sum = ema(self.embed_sum[...], jax.ops.segment_sum(flat, codes, num_segments=self.codebook_size))
      # Laplace smoothing of the counts keeps codes that are never chosen finite.
      total = cluster_size.sum()
      smoothed = (cluster_size + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
      codebook = embed_sum / smoothed[:, None]
      codebook = l2_normalize(codebook) if self.cosine else codebook
      if self.restart_dead:
        dead = active & (cluster_size < self.dead_threshold)
        picks = jax.random.randint(self.rngs(), (self.codebook_size,), 0, flat.shape[0])
        fresh = flat[picks]
        codebook = jnp.where(dead[:, None], fresh, codebook)
        cluster_size = jnp.where(dead, self.dead_threshold, cluster_size)
        embed_sum = jnp.where(dead[:, None], fresh * self.dead_threshold, embed_sum)
      self.codebook[...] = codebook
      self.embed_sum[...] = embed_sum
    self.cluster_size[...] = cluster_size

  def __call__(self, x: jax.Array, active: jax.Array | bool = True) -> Quantized:
    """Quantizes x (..., dim). `active=False` (a traced bool is fine) leaves the codebook as is."""
    if x.shape[-1] != self.dim:
      raise ValueError(f"VectorQuantizer expects inputs with {self.dim} features, got shape {x.shape}")
    lead = x.shape[:-1]
    z = x.astype(jnp.float32)
    z = self.project_in(z) if self.project_in is not None else z
    flat = z.reshape(-1, self.codebook_dim)
    flat = l2_normalize(flat) if self.cosine else flat
    training = not self.deterministic
    active = jnp.asarray(active)
    if training and self.kmeans_init:
      self._maybe_kmeans_init(jax.lax.stop_gradient(flat), active)
    codebook = self._codebook()
    codes = nearest_codes(jax.lax.stop_gradient(flat), jax.lax.stop_gradient(codebook))
    q = codebook[codes]
    commitment = jnp.mean(jnp.square(flat - jax.lax.stop_gradient(q)))
    loss = self.commitment_weight * commitment
    stats = {"commitment": commitment}
    if self.ema_decay is None:  # the codebook learns from the codebook loss
      codebook_loss = jnp.mean(jnp.square(jax.lax.stop_gradient(flat) - q))
      loss = loss + codebook_loss
      stats["codebook_loss"] = codebook_loss
    values = self.estimator(flat, q)
    if training:
      self._update(jax.lax.stop_gradient(flat), codes, active)
    values = values.reshape(lead + (self.codebook_dim,))
    values = self.project_out(values) if self.project_out is not None else values
    stats.update(usage_stats(codes, self.codebook_size))
    stats["dead_fraction"] = codebook_metrics.dead_fraction(self.cluster_size[...], self.dead_threshold)
    return Quantized(values, codes.reshape(lead), loss, stats)


class SimVQ(nnx.Module):
  """SimVQ: nearest code in C·W, C a frozen random codebook, W a learned (codebook_dim²) map."""

  def __init__(self, dim: int, codebook_size: int, *, codebook_dim: int | None = None,
               commitment_weight: float = 0.25, gradient: str = "straight_through",
               param_dtype: DTypeLike = jnp.float32, rngs: nnx.Rngs):
    self.estimator = gradient_estimator(gradient)
    self.dim, self.codebook_size = dim, codebook_size
    self.codebook_dim = codebook_dim or dim
    self.commitment_weight = commitment_weight
    self.deterministic = False
    kw = {"param_dtype": param_dtype, "rngs": rngs}
    projected = self.codebook_dim != dim
    self.project_in = projection(dim, self.codebook_dim, **kw) if projected else None
    self.project_out = projection(self.codebook_dim, dim, **kw) if projected else None
    self.frozen_codebook = Codebook(
        jax.random.normal(rngs.params(), (codebook_size, self.codebook_dim), jnp.float32)
        * self.codebook_dim ** -0.5)
    self.codebook_transform = nnx.Param(
        nnx.with_partitioning(nnx.initializers.orthogonal(), (None, logical_axes.EMBED))(
            rngs.params(), (self.codebook_dim, self.codebook_dim), param_dtype))

  def _codebook(self) -> jax.Array:
    return self.frozen_codebook[...] @ self.codebook_transform[...].astype(jnp.float32)

  def decode_codes(self, codes: jax.Array) -> jax.Array:
    values = self._codebook()[codes]
    return self.project_out(values) if self.project_out is not None else values

  def __call__(self, x: jax.Array, active: jax.Array | bool = True) -> Quantized:
    del active  # nothing to update: the codebook only moves through its trained map
    lead = x.shape[:-1]
    z = x.astype(jnp.float32)
    z = self.project_in(z) if self.project_in is not None else z
    flat = z.reshape(-1, self.codebook_dim)
    codebook = self._codebook()
    codes = nearest_codes(jax.lax.stop_gradient(flat), jax.lax.stop_gradient(codebook))
    q = codebook[codes]  # differentiable in the map W
    commitment = jnp.mean(jnp.square(flat - jax.lax.stop_gradient(q)))
    codebook_loss = jnp.mean(jnp.square(jax.lax.stop_gradient(flat) - q))
    values = self.estimator(flat, q).reshape(lead + (self.codebook_dim,))
    values = self.project_out(values) if self.project_out is not None else values
    stats = {"commitment": commitment, "codebook_loss": codebook_loss,
             **usage_stats(codes, self.codebook_size)}
    return Quantized(values, codes.reshape(lead), self.commitment_weight * commitment + codebook_loss, stats)
