"""MaskGIT (Chang et al. 2022): a bidirectional transformer over a tokenizer's codes, trained to
predict masked codes, sampling all codes in a few parallel refinement steps.

`maskgit_transformer`: [class token; code tokens] + learned positions → pre-norm ViT blocks → a
linear head over the codebook for every code position. Inputs use one extra token id, MASK =
codebook_size; class ids 0..num_classes-1 and one more, num_classes, for "no class"
(unconditional, and classifier-free guidance).

`mask_ratio(r) = cos(πr/2)`: the cosine schedule, used both to draw training masks (r ~ U(0,1))
and to decide how many codes stay masked after decoding step t of T (r = (t+1)/T).

`decode` is the parallel iterative decoding of the paper: start fully masked; at each step sample
every masked position (temperature annealed linearly from `temperature` to `final_temperature`),
keep the most confident samples and re-mask the rest, confidence = log p(sample) + Gumbel noise
scaled by `choice_temperature·(1 − r)` (annealed to 0, so late steps keep the most likely codes).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import logical_axes
from jaxlab.models.backbones import transformer_layers as tl
from jaxlab.models.registry import register
from jaxlab.models.vq.titok import TransformerStack, embedding


def mask_ratio(r: jax.Array) -> jax.Array:
  """The cosine mask schedule: fraction of codes masked at progress r in [0, 1]."""
  return jnp.cos(0.5 * math.pi * r)


class MaskGITTransformer(nnx.Module):
  """tokens (B, L) int in 0..K (K = MASK), labels (B,) int in 0..C (C = none) → logits (B, L, K)."""

  def __init__(self, *, codebook_size: int, seq_len: int, num_classes: int, rngs: nnx.Rngs,
               dtype: DTypeLike = jnp.float32, param_dtype: DTypeLike = jnp.float32,
               width: int = 768, depth: int = 24, num_heads: int = 16):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    p = {"param_dtype": param_dtype, "rngs": rngs}
    self.codebook_size, self.seq_len, self.num_classes = codebook_size, seq_len, num_classes
    self.token_embed = embedding((codebook_size + 1, width), **p)
    self.class_embed = embedding((num_classes + 1, width), **p)
    self.pos_embed = embedding((seq_len + 1, width), **p)
    self.blocks = TransformerStack(width, depth, num_heads, **kw)
    self.head = tl.dense(width, codebook_size, (logical_axes.EMBED, logical_axes.CLASSES), **kw)
    self.dtype = dtype

  @property
  def mask_token(self) -> int:
    return self.codebook_size

  @property
  def null_class(self) -> int:
    return self.num_classes

  def __call__(self, tokens: jax.Array, labels: jax.Array) -> jax.Array:
    if tokens.ndim != 2 or tokens.shape[1] != self.seq_len:
      raise ValueError(f"maskgit_transformer expects tokens of shape (batch, {self.seq_len}), got {tokens.shape}")
    x = jnp.concatenate([self.class_embed[...][labels][:, None], self.token_embed[...][tokens]], axis=1)
    x = (x + self.pos_embed[...]).astype(self.dtype)
    return self.head(self.blocks(x)[:, 1:]).astype(jnp.float32)


@register("maskgit_transformer")
def maskgit_transformer(*, num_classes: int, rngs: nnx.Rngs, codebook_size: int, seq_len: int,
                        dtype: DTypeLike = jnp.float32, param_dtype: DTypeLike = jnp.float32,
                        width: int = 768, depth: int = 24, num_heads: int = 16) -> MaskGITTransformer:
  """Defaults: MaskGIT's ImageNet-256 transformer (24 layers, 768 wide, 16 heads)."""
  return MaskGITTransformer(codebook_size=codebook_size, seq_len=seq_len, num_classes=num_classes,
                            rngs=rngs, dtype=dtype, param_dtype=param_dtype, width=width,
                            depth=depth, num_heads=num_heads)


def guided_logits(transformer: MaskGITTransformer, tokens: jax.Array, labels: jax.Array,
                  guidance_scale: float) -> jax.Array:
  """Class-conditional logits, with classifier-free guidance (1 + s)·cond − s·uncond if s > 0."""
  if guidance_scale == 0.0:
    return transformer(tokens, labels)
  both = transformer(jnp.concatenate([tokens, tokens]),
                     jnp.concatenate([labels, jnp.full_like(labels, transformer.null_class)]))
  cond, uncond = jnp.split(both, 2)
  return (1.0 + guidance_scale) * cond - guidance_scale * uncond


def decode(transformer: MaskGITTransformer, labels: jax.Array, rng: jax.Array, *, steps: int = 8,
           temperature: float = 1.0, final_temperature: float | None = None,
           choice_temperature: float = 4.5, guidance_scale: float = 0.0) -> jax.Array:
  """Codes (B, L) for `labels` (B,) by `steps` rounds of parallel decoding (see module doc)."""
  batch, length = labels.shape[0], transformer.seq_len
  mask = transformer.mask_token
  final_temperature = temperature if final_temperature is None else final_temperature
  tokens = jnp.full((batch, length), mask, jnp.int32)

  def step(t, tokens):
    key_sample, key_choice = jax.random.split(jax.random.fold_in(rng, t))
    ratio = (t + 1.0) / steps
    logits = guided_logits(transformer, tokens, labels, guidance_scale)
    temp = temperature + (final_temperature - temperature) * t / max(steps - 1, 1)
    sampled = jax.random.categorical(key_sample, logits / jnp.maximum(temp, 1e-6)).astype(jnp.int32)
    unknown = tokens == mask
    sampled = jnp.where(unknown, sampled, tokens)
    log_probs = jax.nn.log_softmax(logits)
    confidence = jnp.take_along_axis(log_probs, sampled[..., None], axis=-1)[..., 0]
    confidence = confidence + choice_temperature * (1.0 - ratio) * jax.random.gumbel(key_choice, confidence.shape)
    confidence = jnp.where(unknown, confidence, jnp.inf)  # decided codes are never re-masked
    # Codes still masked after this step: the schedule's count, at least 1 and fewer than the
    # masked ones (so each step decides at least one); none after the last step.
    num_masked = jnp.floor(length * mask_ratio(ratio))
    num_masked = jnp.clip(num_masked, 1, jnp.sum(unknown, axis=-1, keepdims=True) - 1)
    num_masked = jnp.where(t == steps - 1, 0, num_masked).astype(jnp.int32)
    ranks = jnp.argsort(jnp.argsort(confidence, axis=-1), axis=-1)  # 0 = least confident
    return jnp.where(ranks < num_masked, mask, sampled)

  return jax.lax.fori_loop(0, steps, step, tokens)
