"""CIFAR-style ResNets: ResNet-20/32/56 (He et al. 2016, section 4.2) and a CIFAR ResNet-18.

Downsampling shortcuts use option B (1x1 conv stride 2 + BN) instead of the paper's
option A (strided slicing + zero channel padding), which exports to awkward ONNX.
"""

from collections import OrderedDict

import torch
from torch import nn

from .layers import ConvBNAct, classifier_head


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers with an identity or 1x1-projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(in_channels, out_channels, 3, stride)
        self.conv2 = ConvBNAct(out_channels, out_channels, 3, activation=None)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = (
            ConvBNAct(in_channels, out_channels, 1, stride, activation=None)
            if needs_projection
            else nn.Identity()
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """3x3 stem (stride 1, no max-pool) -> stages of BasicBlocks -> GAP -> Linear.

    Stage ``i`` has ``widths[i]`` channels; every stage but the first starts with stride 2.
    """

    def __init__(
        self,
        blocks_per_stage: list[int],
        widths: list[int],
        num_classes: int,
        in_channels: int,
    ) -> None:
        super().__init__()
        self.stem = ConvBNAct(in_channels, widths[0], 3)
        stages = OrderedDict()
        channels = widths[0]
        for index, (num_blocks, width) in enumerate(zip(blocks_per_stage, widths)):
            first_stride = 1 if index == 0 else 2
            blocks = [
                BasicBlock(channels if b == 0 else width, width, first_stride if b == 0 else 1)
                for b in range(num_blocks)
            ]
            stages[f"layer{index + 1}"] = nn.Sequential(*blocks)
            channels = width
        self.stages = nn.Sequential(stages)
        self.head = classifier_head(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-``depth`` for CIFAR, depth = 6n + 2: three stages of n blocks, 16/32/64 channels."""
    if (depth - 2) % 6 != 0:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    return CifarResNet([n, n, n], [16, 32, 64], num_classes, in_channels)


def resnet18_cifar(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-18 with a 3x3 stride-1 stem and no max-pool, the usual CIFAR adaptation."""
    return CifarResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes, in_channels)
