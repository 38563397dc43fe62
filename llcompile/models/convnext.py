"""A CIFAR-sized ConvNeXt (Liu et al. 2022): patchify stem, blocks of depthwise 7x7 conv -> LayerNorm over
channels -> inverted bottleneck (Linear 4x, GELU, Linear) -> layer scale, LayerNorm + 2x2 stride-2 convs
between stages, global average pool -> LayerNorm -> Linear."""

import torch
from torch import nn


class ChannelsLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of an [N, C, H, W] tensor (ConvNeXt's "channels_first" LayerNorm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))  # the Linears act on channels last
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, depths: tuple[int, ...] = (1, 1, 2),
                 dims: tuple[int, ...] = (32, 64, 128), stem_patch: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, dims[0], stem_patch, stride=stem_patch),
                                   ChannelsLayerNorm(dims[0])]
        for stage, (depth, dim) in enumerate(zip(depths, dims)):
            if stage:
                layers += [ChannelsLayerNorm(dims[stage - 1]), nn.Conv2d(dims[stage - 1], dim, 2, stride=2)]
            layers += [ConvNeXtBlock(dim) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.features(x).mean(dim=(2, 3))))
