"""Diffusion networks; importing this package registers `unet`, `dit` and `dit_<size>_<patch>`."""

from jaxlab.models.diffusion import dit, unet  # noqa: F401
