"""A CIFAR-sized MLP-Mixer (Tolstikhin et al. 2021): 4x4 patches, token-mixing and channel-mixing MLPs
with pre-norm residuals, a final LayerNorm, mean over the tokens and a Linear head."""

import torch
from torch import nn


def _mlp(features: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.Linear(hidden, features))


class MixerBlock(nn.Module):
    def __init__(self, tokens: int, dim: int, token_hidden: int, channel_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mixing = _mlp(tokens, token_hidden)
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mixing = _mlp(dim, channel_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mixing(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mixing(self.norm2(x))


class MLPMixer(nn.Module):
    def __init__(self, num_classes: int = 10, input_shape: tuple[int, int, int] = (3, 32, 32), patch: int = 4,
                 dim: int = 128, depth: int = 4, token_hidden: int = 64, channel_hidden: int = 256) -> None:
        super().__init__()
        channels, height, width = input_shape
        if height % patch or width % patch:
            raise ValueError(f"the input's {height}x{width} pixels are not a whole number of {patch}x{patch} patches")
        tokens = (height // patch) * (width // patch)
        self.patch_embed = nn.Conv2d(channels, dim, patch, stride=patch)
        self.blocks = nn.Sequential(*(MixerBlock(tokens, dim, token_hidden, channel_hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(x)).mean(dim=1))
