"""Models by name: `create(name, num_classes=..., rngs=...)` returns a flax.nnx module.

Backbone modules register a factory with `@register(name)`; its keyword arguments are the model's
hyperparameters, so unknown or misspelt ones fail in one line before anything is built.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable

import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.convert import timm as timm_convert

# factory(*, num_classes, rngs, dtype, param_dtype, **hparams): a Module class or a function.
ModelFactory = Callable[..., nnx.Module]

_REGISTRY: dict[str, ModelFactory] = {}


def register(name: str) -> Callable[[ModelFactory], ModelFactory]:
  def wrap(factory: ModelFactory) -> ModelFactory:
    if name in _REGISTRY:
      raise ValueError(f"model '{name}' is already registered")
    _REGISTRY[name] = factory
    return factory
  return wrap


def available() -> list[str]:
  return sorted(_REGISTRY)


def _accepted_keywords(factory: ModelFactory) -> list[str] | None:
  """The factory's keyword names in signature order; None if it takes **kwargs (anything goes)."""
  # A Module class's signature would be its metaclass's (*args, **kwargs): read __init__ instead.
  if isinstance(factory, type):
    params = list(inspect.signature(factory.__init__).parameters.values())[1:]  # drop self
  else:
    params = list(inspect.signature(factory).parameters.values())
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
    return None
  return [p.name for p in params
          if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]


def check_kwargs(name: str, kwargs: dict[str, Any]) -> None:
  """Raises a one-line ValueError for an unknown model or keyword, without building anything."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown model '{name}'; valid: {', '.join(available())}")
  accepted = _accepted_keywords(_REGISTRY[name])
  if accepted is None:
    return
  unknown = sorted(set(kwargs) - set(accepted))
  if unknown:
    raise ValueError(f"unknown keyword(s) {', '.join(unknown)} for model '{name}'; "
                     f"valid: {', '.join(accepted)}")


def create(
    name: str,
    *,
    num_classes: int,
    rngs: nnx.Rngs,
    dtype: DTypeLike = jnp.float32,
    param_dtype: DTypeLike = jnp.float32,
    pretrained: str | os.PathLike | None = None,
    **kwargs: Any,
) -> nnx.Module:
  """Builds model `name`: computes in `dtype`, stores parameters in `param_dtype`, float32 logits.

  Parameters carry logical sharding axes but are created unsharded: jaxlab.sharding places them
  later from those annotations. Also works under `nnx.eval_shape(lambda: create(...))`.
  `pretrained`: a timm/PyTorch checkpoint (.safetensors, or .pth/.bin with torch installed) loaded
  into the model (`jaxlab.convert.timm`); with another `num_classes` its head is skipped.
  """
  check_kwargs(name, kwargs)
  # Without this, flax refuses to create annotated parameters when no mesh context is active.
  with nnx.use_eager_sharding(False):
    model = _REGISTRY[name](num_classes=num_classes, rngs=rngs, dtype=dtype,
                            param_dtype=param_dtype, **kwargs)
  if pretrained is not None:
    timm_convert.load_pretrained(model, pretrained, name=name)
  return model
