"""Optimizers by name: `create(name, learning_rate, **hparams)` returns an optax transformation.

Each entry states its hyperparameters with defaults, so unknown or misspelt ones fail in one line.
The optimizer-zoo issue fills this registry; the training core needs SGD-momentum and AdamW.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import optax


@dataclasses.dataclass(frozen=True)
class OptimizerEntry:
  build: Callable[..., optax.GradientTransformation]  # build(learning_rate, **hparams)
  defaults: dict[str, Any]


_REGISTRY: dict[str, OptimizerEntry] = {}


def register(name: str, **defaults):
  def wrap(build):
    _REGISTRY[name] = OptimizerEntry(build, defaults)
    return build
  return wrap


def available() -> list[str]:
  return sorted(_REGISTRY)


def check_hparams(name: str, hparams: dict[str, Any]) -> None:
  if name not in _REGISTRY:
    raise ValueError(f"unknown optimizer '{name}'; valid: {', '.join(available())}")
  unknown = sorted(set(hparams) - set(_REGISTRY[name].defaults))
  if unknown:
    raise ValueError(f"unknown hyperparameter(s) {', '.join(unknown)} for optimizer '{name}'; "
                     f"valid: {', '.join(sorted(_REGISTRY[name].defaults))}")


def create(name: str, learning_rate: optax.ScalarOrSchedule, **hparams) -> optax.GradientTransformation:
  check_hparams(name, hparams)
  entry = _REGISTRY[name]
  return entry.build(learning_rate, **{**entry.defaults, **hparams})


@register("sgd", momentum=0.9, nesterov=False, weight_decay=0.0)
def _sgd(learning_rate, momentum, nesterov, weight_decay):
  # PyTorch's SGD adds the L2 term to the gradient before momentum; so does this chain.
  return optax.chain(
      optax.add_decayed_weights(weight_decay),
      optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov),
  )


@register("adamw", b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.05)
def _adamw(learning_rate, b1, b2, eps, weight_decay):
  return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
