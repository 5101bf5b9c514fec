"""Model registry: `create(name, num_classes=..., rngs=...)`, `available()`, `register(name)`."""

from jaxlab.models.registry import available, check_kwargs, create, register

# Importing the backbones registers them.
from jaxlab.models import backbones  # noqa: F401

__all__ = ["available", "check_kwargs", "create", "register"]
