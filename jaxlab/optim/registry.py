"""Optimizers by name: `create(name, lr=..., **hparams)` returns an optax GradientTransformation.

Keyword names and defaults are those of the PyTorch class each optimizer reproduces (its
`reference`): `lr`, `weight_decay`, `momentum`, `betas`, `eps`, `nesterov`, ... so a recipe ported
from PyTorch reads the same. `lr` may be a float or an optax schedule. Unknown or misspelt
hyperparameters fail in one line naming the valid ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import optax


@dataclasses.dataclass(frozen=True)
class OptimizerEntry:
  build: Callable[..., optax.GradientTransformation]  # build(**hparams), every default filled in
  defaults: dict[str, Any]  # the reference constructor's defaults, `lr` included
  reference: str  # e.g. "torch.optim.SGD", "timm.optim.Lamb"


_REGISTRY: dict[str, OptimizerEntry] = {}


def register(name: str, *, reference: str, **defaults):
  """Decorator: `@register("adam", reference="torch.optim.Adam", lr=1e-3, betas=(0.9, 0.999), ...)`."""
  def wrap(build):
    if name in _REGISTRY:
      raise ValueError(f"optimizer '{name}' is already registered")
    _REGISTRY[name] = OptimizerEntry(build, defaults, reference)
    return build
  return wrap


def available() -> list[str]:
  return sorted(_REGISTRY)


def entry(name: str) -> OptimizerEntry:
  if name not in _REGISTRY:
    raise ValueError(f"unknown optimizer '{name}'; valid: {', '.join(available())}")
  return _REGISTRY[name]


def check_hparams(name: str, hparams: dict[str, Any]) -> None:
  unknown = sorted(set(hparams) - set(entry(name).defaults))
  if unknown:
    raise ValueError(f"unknown hyperparameter(s) {', '.join(unknown)} for optimizer '{name}'; "
                     f"valid: {', '.join(sorted(entry(name).defaults))}")


def create(name: str, **hparams) -> optax.GradientTransformation:
  check_hparams(name, hparams)
  found = entry(name)
  return found.build(**{**found.defaults, **hparams})

