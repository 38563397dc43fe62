"""MobileNetV2 (Sandler et al. 2018) adapted to 32x32 inputs.

As in the common CIFAR variant, the stem and the second stage use stride 1 instead of 2,
so a 32x32 input reaches the last stage at 4x4. No dropout before the classifier, which
keeps train-mode outputs deterministic.
"""

import torch
from torch import nn

from .layers import ConvBNAct, classifier_head

STEM_CHANNELS = 32
LAST_CHANNELS = 1280
# (expansion t, output channels c, repeats n, first stride s); the paper's table with
# the stride of the (6, 24, 2, .) stage lowered from 2 to 1 for CIFAR.
CIFAR_STAGES = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> linear 1x1 project, residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand = (
            ConvBNAct(in_channels, hidden, 1, activation=nn.ReLU6)
            if expansion != 1
            else nn.Identity()
        )
        self.depthwise = ConvBNAct(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6)
        self.project = ConvBNAct(hidden, out_channels, 1, activation=None)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = ConvBNAct(in_channels, STEM_CHANNELS, 3, activation=nn.ReLU6)
        blocks = []
        channels = STEM_CHANNELS
        for expansion, out_channels, repeats, first_stride in CIFAR_STAGES:
            for i in range(repeats):
                stride = first_stride if i == 0 else 1
                blocks.append(InvertedResidual(channels, out_channels, stride, expansion))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.last = ConvBNAct(channels, LAST_CHANNELS, 1, activation=nn.ReLU6)
        self.head = classifier_head(LAST_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last(self.blocks(self.stem(x))))
