"""Classification backbones; importing this package registers them with `jaxlab.models`."""

from jaxlab.models.backbones import resnet_cifar, small_cnn  # noqa: F401
