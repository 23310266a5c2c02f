"""Where the noise level comes from: the true parameter, one learned scalar, or an estimator network.

Names follow the authors' configs: ``sigma_known``, ``sigma_global``, ``sigma_per_image``. Every source
returns the level in the noise model's internal units (σ/255, 1/λ or α) as ``(N,)`` float64.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from ssdn.nets import GlobalNoiseLevel, NoiseEstimator
from ssdn.noise import NoiseModel
from ssdn.schema import LevelSourceName


class LevelSource(nn.Module, ABC):
    """Supplies the per-image noise level used by the likelihood and the posterior mean."""

    #: True when the level is trained, which switches on the noise model's regulariser.
    learned: bool = False
    name: str = ""

    @abstractmethod
    def forward(self, noisy: Tensor, params: Tensor, noise: NoiseModel) -> Tensor:
        """Return the level ``(N,)`` float64 for the noisy batch (``params`` are the true parameters)."""


class KnownLevel(LevelSource):
    """The true per-image parameter, as in the paper's "σ known" rows."""

    name = "known"

    def forward(self, noisy: Tensor, params: Tensor, noise: NoiseModel) -> Tensor:
        return noise.to_level(params.to(device=noisy.device, dtype=torch.float64))


class GlobalLevel(LevelSource):
    """One learned scalar for unknown but constant noise (the paper's fixed-noise "σ unknown" rows)."""

    learned = True
    name = "global"

    def __init__(self) -> None:
        super().__init__()
        self.level = GlobalNoiseLevel()

    def forward(self, noisy: Tensor, params: Tensor, noise: NoiseModel) -> Tensor:
        return self.level(noisy)


class PerImageLevel(LevelSource):
    """An auxiliary network that estimates each image's level (the variable-noise "σ unknown" rows)."""

    learned = True
    name = "per_image"

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.estimator = NoiseEstimator(in_channels=channels)

    def forward(self, noisy: Tensor, params: Tensor, noise: NoiseModel) -> Tensor:
        return self.estimator(noisy)


LEVEL_SOURCES = tuple(s.value for s in LevelSourceName)


def build_level_source(source: str, channels: int) -> LevelSource:
    """Build a level source by name (``known``, ``global`` or ``per_image``)."""
    if source == "known":
        return KnownLevel()
    if source == "global":
        return GlobalLevel()
    if source == "per_image":
        return PerImageLevel(channels)
    raise ValueError(f"noise_params.source must be one of {LEVEL_SOURCES}, got {source!r}")
