"""Conditioning inputs shared by the diffusion networks: noise-level and class embeddings.

`sinusoidal_embedding` is ADM's/DiT's `timestep_embedding` ([cos, sin] of time * frequencies
from 1 down to 1/max_period); the time input is whatever the formulation feeds (DDPM timesteps,
EDM's ln(sigma)/4, 1000 t for flow matching). The class table has `num_classes + 1` rows: the
last is the "null" class, the unconditional input of classifier-free guidance.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models import logical_axes as axes


def sinusoidal_embedding(time: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """[B] -> [B, dim] float32 features [cos(t f_k), sin(t f_k)], f_k = max_period^(-k / (dim/2))."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = time.astype(jnp.float32)[:, None] * freqs[None]
  embedding = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  return jnp.pad(embedding, ((0, 0), (0, dim % 2)))


def dense(in_features: int, out_features: int, kernel_axes, *, kernel_init=None, dtype: DTypeLike,
          param_dtype: DTypeLike, rngs: nnx.Rngs) -> nnx.Linear:
  """A dense layer with logical axes on kernel (in, out) and bias (out,); zero kernel if asked."""
  init = kernel_init or nnx.initializers.xavier_uniform()
  return nnx.Linear(in_features, out_features, dtype=dtype, param_dtype=param_dtype,
                    kernel_init=nnx.with_partitioning(init, kernel_axes),
                    bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (kernel_axes[1],)),
                    rngs=rngs)


class TimeEmbedding(nnx.Module):
  """sinusoid(freq_dim) -> Linear -> SiLU -> Linear: the noise level as a `dim`-vector."""

  def __init__(self, freq_dim: int, dim: int, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs,
          "kernel_init": nnx.initializers.normal(0.02)}
    self.freq_dim = freq_dim
    self.fc1 = dense(freq_dim, dim, (None, axes.MLP), **kw)
    self.fc2 = dense(dim, dim, (axes.MLP, axes.EMBED), **kw)

  def __call__(self, time: jax.Array) -> jax.Array:
    return self.fc2(nnx.silu(self.fc1(sinusoidal_embedding(time, self.freq_dim))))


class LabelEmbedding(nnx.Module):
  """Class ids 0..num_classes-1, and num_classes for "no class", to `dim`-vectors."""

  def __init__(self, num_classes: int, dim: int, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
    self.num_classes = num_classes
    self.table = nnx.Embed(num_classes + 1, dim, dtype=dtype, param_dtype=param_dtype,
                           embedding_init=nnx.with_partitioning(nnx.initializers.normal(0.02),
                                                                (axes.CLASSES, axes.EMBED)),
                           rngs=rngs)

  def __call__(self, labels: jax.Array) -> jax.Array:
    return self.table(labels)


def check_labels(labels: jax.Array | None, batch: int, num_classes: int, model: str) -> jax.Array | None:
  """A conditional model needs [B] labels (num_classes = no class); an unconditional one none."""
  if num_classes == 0:
    return None
  if labels is None or labels.shape != (batch,):
    got = None if labels is None else tuple(labels.shape)
    raise ValueError(f"{model} is class-conditional: pass labels of shape ({batch},) with values in "
                     f"0..{num_classes} ({num_classes} = no class), got {got}")
  return labels
