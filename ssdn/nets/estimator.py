"""Learned noise levels (authors' "unknown" noise): one value (or P values) for the dataset, or a network per
image; both can start at a data-driven estimate (``initialise``) instead of the paper's fixed 4.9/255."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssdn.nets.unet import UNet

LEVEL_FLOOR = 1e-3
"""Lowest level the parametrisation reaches (as a limit)."""


def level_from_raw(raw: torch.Tensor) -> torch.Tensor:
    """softplus(raw - 4) + 1e-3 in float64: positive, and 0.01915 (≈ 4.9/255 as a σ) at raw = 0."""
    return F.softplus(raw.double() - 4.0) + LEVEL_FLOOR


def raw_from_level(level: torch.Tensor) -> torch.Tensor:
    """Inverse of ``level_from_raw`` (float64). Levels at or below the floor cannot be reached, so they map to
    the raw value of 2·floor: a data estimate of 0 (e.g. a clamped b) starts the level just above it."""
    v = torch.clamp_min(level.double(), 2 * LEVEL_FLOOR) - LEVEL_FLOOR
    return v + torch.log(-torch.expm1(-v)) + 4.0  # softplus⁻¹(v) = log(eᵛ − 1), stable for large v


class NoiseEstimator(nn.Module):
    """Per-image noise level: mean over the image of a baseline U-Net's output channels (one per parameter).

    The last layer starts at zero (as the authors'; their PyTorch reproduction did not converge without it),
    so every image starts at ``level_from_raw(bias)``, with the bias 0 unless ``initialise`` sets it. Same size
    rules as the baseline `UNet`. ``num_params`` = 1 gives (N,) levels (and the original state dict), P > 1
    gives (N, P).
    """

    def __init__(self, in_channels: int = 3, num_params: int = 1) -> None:
        super().__init__()
        self.num_params = num_params
        self.net = UNet(in_channels, num_params, blindspot=False, zero_last=True)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) noisy images → (N,) or (N, P) float64 levels."""
        if self.num_params == 1:
            return level_from_raw(self.net(y).double().mean(dim=(1, 2, 3)))
        return level_from_raw(self.net(y).double().mean(dim=(2, 3)))

    @torch.no_grad()
    def initialise(self, level: torch.Tensor) -> None:
        """Start every image at ``level`` (() or (P,)): the zero last layer outputs exactly its bias."""
        if self.net.nin_c.weight.abs().max() != 0:
            raise ValueError(
                "initialise the noise estimator before training (its last layer is no longer zero)"
            )
        bias = self.net.nin_c.bias
        assert bias is not None, "the U-Net's convolutions are built with biases"
        bias.copy_(raw_from_level(level).reshape(self.num_params))


class GlobalNoiseLevel(nn.Module):
    """One trainable level (or P of them) shared by all images; ``raw`` starts at 0 unless initialised."""

    def __init__(self, num_params: int = 1) -> None:
        super().__init__()
        self.raw = nn.Parameter(torch.zeros(() if num_params == 1 else (num_params,)))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """(N,) or (N, P) float64 copies of the level; ``y`` only gives N."""
        return level_from_raw(self.raw).expand(y.shape[0], *self.raw.shape)

    @torch.no_grad()
    def initialise(self, level: torch.Tensor) -> None:
        """Set ``raw`` so that the level equals ``level`` (() or (P,)), up to float32 rounding of ``raw``."""
        self.raw.copy_(raw_from_level(level).reshape(self.raw.shape))
