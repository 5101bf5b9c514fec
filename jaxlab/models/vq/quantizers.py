"""Quantizers by name, for tokenizer configs: `create(name, dim=..., rngs=..., **hparams)`.

    vq           VectorQuantizer(dim, codebook_size, ...)   codebook by EMA or gradient
    residual_vq  ResidualVQ(dim, codebook_sizes, ...)       per-level codebooks (VQDNA's HRQ)
    fsq          FSQ(levels, dim=dim)                        implicit grid codebook
    lfq          LFQ(dim, bits=...)                          ±1 per channel, entropy loss
    simvq        SimVQ(dim, codebook_size, ...)              frozen codebook x learned map
"""

from __future__ import annotations

import inspect

import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models.vq.residual import ResidualVQ
from jaxlab.models.vq.scalar import FSQ, LFQ
from jaxlab.models.vq.vector_quantizer import SimVQ, VectorQuantizer

QUANTIZERS = {"vq": VectorQuantizer, "residual_vq": ResidualVQ, "fsq": FSQ, "lfq": LFQ,
              "simvq": SimVQ}


def available() -> list[str]:
  return sorted(QUANTIZERS)


def create(name: str, *, dim: int, rngs: nnx.Rngs, param_dtype: DTypeLike = jnp.float32, **hparams):
  """The quantizer `name` over `dim` features; unknown names or keywords fail in one line."""
  if name not in QUANTIZERS:
    raise ValueError(f"unknown quantizer '{name}'; valid: {', '.join(available())}")
  cls = QUANTIZERS[name]
  params = inspect.signature(cls.__init__).parameters
  takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
  accepted = set(params) - {"self", "dim", "rngs", "param_dtype"}
  if cls is ResidualVQ:  # forwards the rest to its VectorQuantizer levels
    accepted |= set(inspect.signature(VectorQuantizer.__init__).parameters) - {
        "self", "dim", "codebook_size", "rngs", "param_dtype"}
  unknown = sorted(set(hparams) - accepted) if (cls is ResidualVQ or not takes_any) else []
  if unknown:
    raise ValueError(f"unknown keyword(s) {', '.join(unknown)} for quantizer '{name}'; "
                     f"valid: {', '.join(sorted(accepted))}")
  return cls(dim=dim, rngs=rngs, param_dtype=param_dtype, **hparams)
