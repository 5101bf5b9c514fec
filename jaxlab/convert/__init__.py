"""PyTorch/timm weight import: `load_state_dict(path)` reads a checkpoint into numpy arrays,
`timm.load_pretrained(model, path, name=...)` copies it into a jaxlab model (see `timm`'s docstring
for the name mapping and the per-model hooks). `jaxlab.models.create(..., pretrained=PATH)` uses both.
"""

from jaxlab.convert import timm
from jaxlab.convert.state_dict import load_state_dict

__all__ = ["load_state_dict", "timm"]
