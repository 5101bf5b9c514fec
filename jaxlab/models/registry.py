"""Models by name: `create(name)` returns a flax.nnx module, like `timm.create_model(name)`.

Backbone modules register a factory with `@register(name)`; its keyword arguments are the model's
hyperparameters, so unknown or misspelt ones fail in one line before anything is built. timm's
`in_chans` is accepted as another name for jaxlab's `in_channels`.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable

import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.convert import timm as timm_convert
from jaxlab.models import tracing
from jaxlab.names import Pattern, matching

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


def available(pattern: Pattern = None) -> list[str]:
  """Registered model names, sorted; `pattern` filters them as timm's `list_models` does:
  `available("convnext*")`, `available(["resnet*", "*_cifar"])` (fnmatch, case-insensitive).
  docs/reference.md lists every model with its keywords."""
  return matching(sorted(_REGISTRY), pattern)


def factory_of(name: str) -> ModelFactory:
  """The registered factory of model `name` (a Module class or a function): its signature lists
  the model's own keywords and their defaults."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown model '{name}'; valid: {', '.join(available())}")
  return _REGISTRY[name]


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


def _resolve_in_chans(kwargs: dict[str, Any]) -> dict[str, Any]:
  """kwargs with timm's `in_chans` renamed to `in_channels`; a one-line error if both disagree."""
  if "in_chans" not in kwargs:
    return kwargs
  kwargs = dict(kwargs)
  in_chans = kwargs.pop("in_chans")
  if kwargs.setdefault("in_channels", in_chans) != in_chans:
    raise ValueError(f"in_chans={in_chans} and in_channels={kwargs['in_channels']} disagree; "
                     "pass one of them")
  return kwargs


def check_kwargs(name: str, kwargs: dict[str, Any]) -> None:
  """Raises a one-line ValueError for an unknown model or keyword, without building anything."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown model '{name}'; valid: {', '.join(available())}")
  _resolve_in_chans(kwargs)  # in_chans and in_channels must agree
  accepted = _accepted_keywords(_REGISTRY[name])
  if accepted is None:
    return
  unknown = set(kwargs) - set(accepted)
  if "in_channels" in accepted:
    unknown.discard("in_chans")  # timm's name for it
  if unknown:
    raise ValueError(f"unknown keyword(s) {', '.join(sorted(unknown))} for model '{name}'; "
                     f"valid: {', '.join(accepted)}")


def create(
    name: str,
    *,
    num_classes: int = 1000,
    rngs: nnx.Rngs | None = None,
    dtype: DTypeLike = jnp.float32,
    param_dtype: DTypeLike = jnp.float32,
    pretrained: str | os.PathLike | None = None,
    in_chans: int | None = None,
    **kwargs: Any,
) -> nnx.Module:
  """Builds model `name`: computes in `dtype`, stores parameters in `param_dtype`, float32 logits.

  Defaults as `timm.create_model`: 1000 classes; the model's own `in_channels` (3 for the ImageNet
  backbones), which `in_chans` (timm's name) also sets; without `rngs`, the fixed seed
  `nnx.Rngs(0)`, so two calls give the same parameters. Other keywords are the model's
  hyperparameters (`check_kwargs`).
  Parameters carry logical sharding axes but are created unsharded: jaxlab.sharding places them
  later from those annotations. Also works under `nnx.eval_shape(lambda: create(...))`.
  `pretrained`: a timm/PyTorch checkpoint (.safetensors, or .pth/.bin with torch installed) loaded
  into the model (`jaxlab.convert.timm`); with another `num_classes` its head is skipped.
  """
  if in_chans is not None:
    kwargs = {**kwargs, "in_chans": in_chans}
  check_kwargs(name, kwargs)
  kwargs = _resolve_in_chans(kwargs)
  rngs = nnx.Rngs(0) if rngs is None else rngs
  # Without use_eager_sharding(False), flax refuses to create annotated parameters when no mesh
  # context is active; quiet_tracer_errors keeps abstract building linear in the model's size.
  with nnx.use_eager_sharding(False), tracing.quiet_tracer_errors():
    model = _REGISTRY[name](num_classes=num_classes, rngs=rngs, dtype=dtype,
                            param_dtype=param_dtype, **kwargs)
  if pretrained is not None:
    timm_convert.load_pretrained(model, pretrained, name=name)
  return model
