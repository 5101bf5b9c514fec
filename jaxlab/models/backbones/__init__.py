"""Classification backbones; importing this package registers them with `jaxlab.models`."""

from jaxlab.models.backbones import resnet_cifar, small_cnn  # noqa: F401
from jaxlab.models.backbones import resnet  # noqa: F401  (timm ResNets)
from jaxlab.models.backbones import alexnet, vgg  # noqa: F401  (torchvision AlexNet, timm VGG)
from jaxlab.models.backbones import metaformer, mixer, swin, vit  # noqa: F401  (transformers)
from jaxlab.models.backbones import efficientnet  # noqa: F401  (timm MobileNetV2, EfficientNet-B0)
from jaxlab.models.backbones import densenet, repvgg  # noqa: F401  (timm DenseNet-121, RepVGG-A1)
from jaxlab.models.backbones import moganet, transnext, unireplknet  # noqa: F401  (authors' code)
from jaxlab.models.backbones import convnext  # noqa: F401  (timm ConvNeXt, ConvNeXt V2)
from jaxlab.models.backbones import tiny  # noqa: F401  (digit-sized ViT, Mixer, ConvNeXt for studies)
