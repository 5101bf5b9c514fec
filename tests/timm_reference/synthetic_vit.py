"""Synthetic weights for the transformer/MetaFormer fixtures: `synthetic.py`'s, with a few entries
made large enough that a wrong import of them would show in the logits.

`synthetic.py` draws position embeddings, tokens and tables ~ 0.02 N(0, 1), and StarReLU's learned
scale falls in that bucket too. At that size a misplaced relative-position bias, a position
embedding resampled wrongly, or a StarReLU ignoring its scale would move the logits by less than
the 1e-3 tolerance. Here those entries get O(1) values (still deterministic per key).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

import numpy as np

from timm_reference.synthetic import synthetic_state_dict as _base_state_dict

# key suffix -> (mean, std) of the replacement values
_OVERRIDES = {
    "relative_position_bias_table": (0.0, 1.0),
    "pos_embed": (0.0, 0.5),
    "cls_token": (0.0, 0.5),
    "act.scale": (1.0, 0.1),  # StarReLU in MetaFormer MLPs
    "act1.scale": (1.0, 0.1),  # StarReLU in SepConv
}


def synthetic_state_dict(spec: Iterable[tuple[str, Sequence[int]]], seed: int = 0
                         ) -> dict[str, np.ndarray]:
  spec = list(spec)
  weights = _base_state_dict(spec, seed)
  for key, shape in spec:
    for suffix, (mean, std) in _OVERRIDES.items():
      if key.endswith(suffix):
        rng = np.random.default_rng([seed, 1, zlib.crc32(key.encode())])
        weights[key] = (mean + std * rng.standard_normal(tuple(shape))).astype(np.float32)
  return weights
