"""Building blocks shared by the zoo's convolutional models."""

from collections import OrderedDict

from torch import nn


class ConvBNAct(nn.Sequential):
    """Conv2d -> BatchNorm2d -> optional activation, with named children conv/bn/act.

    The conv has no bias because the BN shift makes it redundant; the names give
    readable ONNX initializers such as ``stem.conv.weight`` and ``stem.bn.running_mean``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        layers = OrderedDict(
            conv=nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            bn=nn.BatchNorm2d(out_channels),
        )
        if activation is not None:
            layers["act"] = activation()
        super().__init__(layers)


def classifier_head(in_features: int, num_classes: int) -> nn.Sequential:
    """Global average pool -> flatten -> Linear, so any spatial input size works."""
    return nn.Sequential(
        OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(in_features, num_classes),
        )
    )
