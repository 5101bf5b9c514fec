"""jaxlab: sharded pure-functional training for vision research on JAX/Flax.

`jaxlab.models`, `jaxlab.optim`, `jaxlab.tasks` and `jaxlab.data` are imported on first access:
`import jaxlab` stays cheap for CLI start-up (jaxlab.data pulls in TensorFlow).
"""

import importlib
import os

# TensorFlow (used for tf.data only) prints start-up banners on stderr at import; keep stderr for
# errors. oneDNN matters for TF's own math, not for the input pipeline's image ops.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

__all__ = ["data", "models", "optim", "tasks"]


def __getattr__(name: str):
  # PEP 562: only reached for names not yet set; importing a submodule sets it on the package.
  if name in __all__:
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted({*globals(), *__all__})
