"""Small, fast models for tests and demos."""

import math
from collections import OrderedDict

import torch
from torch import nn

from .layers import ConvBNAct, classifier_head


class SmallCNN(nn.Module):
    """Three conv+BN+ReLU layers (16/32/64 channels), max-pools after the first two, GAP, Linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                conv1=ConvBNAct(in_channels, 16, 3),
                pool1=nn.MaxPool2d(2),
                conv2=ConvBNAct(16, 32, 3),
                pool2=nn.MaxPool2d(2),
                conv3=ConvBNAct(32, 64, 3),
            )
        )
        self.head = classifier_head(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """Flatten -> [Linear -> BatchNorm1d -> ReLU] per hidden width -> Linear."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int = 10,
        hidden: tuple[int, ...] = (256, 128),
    ) -> None:
        super().__init__()
        layers = OrderedDict(flatten=nn.Flatten())
        width = math.prod(input_shape)
        for i, hidden_width in enumerate(hidden, start=1):
            # The bias is redundant before BN but keeps the export a single Gemm per Linear
            # (without it the TorchScript exporter emits Transpose + MatMul).
            layers[f"fc{i}"] = nn.Linear(width, hidden_width)
            layers[f"bn{i}"] = nn.BatchNorm1d(hidden_width)
            layers[f"relu{i}"] = nn.ReLU()
            width = hidden_width
        layers["out"] = nn.Linear(width, num_classes)
        self.layers = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
