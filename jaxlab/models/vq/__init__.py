"""Vector-quantized tokenizers and what builds on them; importing registers the models
`vq_autoencoder` (VQ-VAE/VQGAN), `titok` (1D tokenizer) and `maskgit_transformer` (stage 2).

Quantizers: `jaxlab.models.vq.quantizers` (VQ, residual VQ, FSQ, LFQ, SimVQ), each returning a
`Quantized(values, codes, loss, stats)`.
"""

from jaxlab.models.vq import autoencoder, titok  # noqa: F401  (registers the tokenizers)
from jaxlab.models.vq import maskgit  # noqa: F401  (registers maskgit_transformer)
from jaxlab.models.vq.base import Codebook, CodebookStat, Quantized
from jaxlab.models.vq.frozen import Frozen, eval_view, freeze
from jaxlab.models.vq.quantizers import create as create_quantizer
from jaxlab.models.vq.residual import ResidualVQ
from jaxlab.models.vq.scalar import FSQ, LFQ
from jaxlab.models.vq.vector_quantizer import SimVQ, VectorQuantizer

__all__ = [
           "FSQ",
           "LFQ",
           "Codebook",
           "CodebookStat",
           "Frozen",
           "Quantized",
           "ResidualVQ",
           "SimVQ",
           "VectorQuantizer",
           "create_quantizer",
           "eval_view",
           "freeze",
]
