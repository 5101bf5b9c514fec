"""Building a model under a trace (`nnx.eval_shape`, `jax.jit` of an init) in linear time.

Every `rngs.params()` adds one to its stream's counter, and flax's `Variable.set_value` compares
the `.sharding` of the new value with the old one. Under a trace the new value is a tracer, whose
`.sharding` raises an AttributeError; jax computes that error's message eagerly, by walking the
whole program traced so far (`DynamicJaxprTracer._origin_msg`), and flax discards it. So each
parameter costs time proportional to the parameters before it: building is quadratic in the model's
size (UniRepLKNet-T abstractly: seconds instead of a fraction of one). `quiet_tracer_errors()` skips
that message while a model is built (jax 0.10, flax 0.12; a private attribute: if a jax release
renames it, this does nothing and building is only slower).
"""

from __future__ import annotations

import contextlib
import threading

_LOCK = threading.Lock()
_DEPTH = 0
_SAVED = None


def _tracer_class():
  try:
    from jax._src.interpreters import partial_eval  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  cls = getattr(partial_eval, "DynamicJaxprTracer", None)
  return cls if cls is not None and "_origin_msg" in vars(cls) else None


def _no_origin(self) -> str:
  del self
  return ""


@contextlib.contextmanager
def quiet_tracer_errors():
  """Within: tracer errors carry no origin message (nested and threaded use are fine)."""
  global _DEPTH, _SAVED  # pylint: disable=global-statement
  cls = _tracer_class()
  if cls is None:
    yield
    return
  with _LOCK:
    if _DEPTH == 0:
      _SAVED = vars(cls)["_origin_msg"]
      cls._origin_msg = _no_origin  # pylint: disable=protected-access
    _DEPTH += 1
  try:
    yield
  finally:
    with _LOCK:
      _DEPTH -= 1
      if _DEPTH == 0:
        cls._origin_msg = _SAVED  # pylint: disable=protected-access
