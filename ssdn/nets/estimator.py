"""Learned noise levels (authors' "unknown" noise): one scalar for the dataset, or a network per image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssdn.nets.unet import UNet


def level_from_raw(raw: torch.Tensor) -> torch.Tensor:
    """softplus(raw - 4) + 1e-3 in float64: positive, and 0.01915 (≈ 4.9/255 as a σ) at raw = 0."""
    return F.softplus(raw.double() - 4.0) + 1e-3


class NoiseEstimator(nn.Module):
    """Per-image noise level: mean over the image of a baseline U-Net's single output channel.

    The last layer starts at zero (as the authors'; their PyTorch reproduction did not converge without it),
    so every image starts at ``level_from_raw(0)``. Same size rules as the baseline `UNet`.
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.net = UNet(in_channels, 1, blindspot=False, zero_last=True)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) noisy images → (N,) float64 levels."""
        return level_from_raw(self.net(y).double().mean(dim=(1, 2, 3)))


class GlobalNoiseLevel(nn.Module):
    """One trainable level shared by all images; ``raw`` starts at 0."""

    def __init__(self) -> None:
        super().__init__()
        self.raw = nn.Parameter(torch.zeros(()))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """(N,) float64 copies of the level; ``y`` only gives N."""
        return level_from_raw(self.raw).expand(y.shape[0])
