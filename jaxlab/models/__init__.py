"""Model registry: `create(name)` with timm.create_model's defaults, `available()`, `register()`."""

from jaxlab.models.registry import available, check_kwargs, create, register

# Importing the backbones registers them.
from jaxlab.models import backbones  # noqa: F401
from jaxlab.models import diffusion  # noqa: F401  (unet, dit)
from jaxlab.models import vq  # noqa: F401  (vq_autoencoder, titok, maskgit_transformer)

__all__ = ["available", "check_kwargs", "create", "register"]
