"""Where the noise level comes from: the true parameter, one learned scalar, or an estimator network; and where
a learned level starts (``initialise_from_data``).

Names follow the authors' configs: ``sigma_known``, ``sigma_global``, ``sigma_per_image``. Every source
returns the level in the noise model's internal units (σ/255, 1/λ, α, or (√a, √b)) as ``(N,)`` float64, or
``(N, P)`` for a noise model with P > 1 parameters.

Why a data-driven start: the authors start every learned level at 4.9/255 and train for 2M images; a short run
from there spends much of its budget walking the level to the truth, while the noise model's classical estimate
(``NoiseModel.estimate_params``, ``ssdn.noise.estimate``) on a few noisy images lands near it before the first
step. The training run calls it through ``ssdn.training.initial_level`` (``noise_params.init``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ssdn.config.schema import LevelSourceName
from ssdn.nets import GlobalNoiseLevel, NoiseEstimator
from ssdn.noise import NoiseModel


class LevelSource(nn.Module, ABC):
    """Supplies the per-image noise level used by the likelihood and the posterior mean."""

    #: True when the level is trained, which switches on the noise model's regulariser.
    learned: bool = False
    name: str = ""

    @abstractmethod
    def forward(self, noisy: Tensor, params: Tensor, noise: NoiseModel) -> Tensor:
        """Return the level ``(N,)`` / ``(N, P)`` float64 for the noisy batch (``params`` are the true ones)."""

    def initialise(self, level: Tensor) -> None:  # noqa: ARG002 -- the LevelSource interface
        """Start a learned level at ``level`` (internal units, () or (P,)) instead of the paper's 4.9/255."""
        raise ValueError(f"the {self.name} level source is not learned; there is nothing to initialise")


class KnownLevel(LevelSource):
    """The true per-image parameter, as in the paper's "σ known" rows."""

    name = "known"

    def forward(self, noisy: Tensor, params: Tensor, noise: NoiseModel) -> Tensor:
        return noise.to_level(params.to(device=noisy.device, dtype=torch.float64))


class GlobalLevel(LevelSource):
    """One learned scalar for unknown but constant noise (the paper's fixed-noise "σ unknown" rows)."""

    learned = True
    name = "global"

    def __init__(self, num_params: int = 1) -> None:
        super().__init__()
        self.level = GlobalNoiseLevel(num_params)

    def forward(self, noisy: Tensor, params: Tensor, noise: NoiseModel) -> Tensor:  # noqa: ARG002 -- the LevelSource interface
        return self.level(noisy)

    def initialise(self, level: Tensor) -> None:
        self.level.initialise(level)

    def params(self, noise: NoiseModel) -> dict[str, float]:
        """The learned level in paper units, ``{param name: value}`` (for logs, results and checkpoints)."""
        level = self.level(torch.empty(1, device=self.level.raw.device))[0]
        return dict(zip(noise.param_names, noise.to_params(level).reshape(-1).tolist(), strict=True))


class PerImageLevel(LevelSource):
    """An auxiliary network that estimates each image's level (the variable-noise "σ unknown" rows)."""

    learned = True
    name = "per_image"

    def __init__(self, channels: int, num_params: int = 1) -> None:
        super().__init__()
        self.estimator = NoiseEstimator(in_channels=channels, num_params=num_params)

    def forward(self, noisy: Tensor, params: Tensor, noise: NoiseModel) -> Tensor:  # noqa: ARG002 -- the LevelSource interface
        return self.estimator(noisy)

    def initialise(self, level: Tensor) -> None:
        self.estimator.initialise(level)


LEVEL_SOURCES = tuple(s.value for s in LevelSourceName)


def build_level_source(source: str, channels: int, num_params: int = 1) -> LevelSource:
    """Build a level source by name (``known``, ``global`` or ``per_image``) for a noise model with
    ``num_params`` parameters (``NoiseModel.num_params``)."""
    if source == "known":
        return KnownLevel()
    if source == "global":
        return GlobalLevel(num_params)
    if source == "per_image":
        return PerImageLevel(channels, num_params)
    raise ValueError(f"noise_params.source must be one of {LEVEL_SOURCES}, got {source!r}")


def initialise_from_data(source: LevelSource, noise: NoiseModel, noisy: Sequence[Tensor]) -> dict[str, float]:
    """Start a learned level at the noise model's classical estimate from noisy images (C, H, W) or batches
    (N, C, H, W); returns the estimate in paper units, ``{param name: value}``. Raises ``ValueError`` for a
    noise model without a classical estimator (impulse) or a source that is not learned, changing nothing."""
    if not source.learned:
        raise ValueError(f"the {source.name} level source is not learned; there is nothing to initialise")
    return initialise_at(source, noise, noise.estimate_params(noisy))


def initialise_at(source: LevelSource, noise: NoiseModel, params: Tensor) -> dict[str, float]:
    """Start a learned level at ``params`` (paper units, () or (P,)); returns them as ``{param name: value}``."""
    params = params.to(torch.float64)
    source.initialise(noise.to_level(params))
    return dict(zip(noise.param_names, params.reshape(-1).tolist(), strict=True))
