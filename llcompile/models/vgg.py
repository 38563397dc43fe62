"""VGG-11/16 with BatchNorm, adapted to CIFAR: the classifier is GAP -> Linear(512, classes)."""


import torch
from torch import nn

from .layers import ConvBNAct, classifier_head

M = "M"  # max-pool marker in a config; the ints are conv output channels
VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "vgg16": [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M],
}


class VGG(nn.Module):
    def __init__(self, config: list[int | str], num_classes: int, in_channels: int) -> None:
        super().__init__()
        layers = []
        channels = in_channels
        for item in config:
            if item == M:
                # ceil_mode keeps a 1x1 map at 1x1, so inputs smaller than 32x32 still work;
                # for 32x32 it is identical to the usual floor mode.
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                layers.append(ConvBNAct(channels, item, 3))
                channels = item
        self.features = nn.Sequential(*layers)
        self.head = classifier_head(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def vgg_bn(variant: str, num_classes: int = 10, in_channels: int = 3) -> VGG:
    """``variant`` is ``"vgg11"`` or ``"vgg16"``."""
    return VGG(VGG_CONFIGS[variant], num_classes, in_channels)
