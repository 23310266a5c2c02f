"""Additive white Gaussian noise, σ in 8-bit units (paper §4.1)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ssdn.noise.base import MIN_STD, AdditiveGaussianNoise, _eye, _f64, _regulariser_weight, as_images
from ssdn.noise.estimate import estimate_sigma

__all__ = ["GaussianNoise"]


class GaussianNoise(AdditiveGaussianNoise):
    """y = x + σ/255·N(0, 1) independently per pixel and channel; level = σ/255."""

    name = "gaussian"
    param_name = "sigma"
    zero_mean = True
    domain = "sigma >= 0 (finite, 8-bit units)"

    @staticmethod
    def _in_domain(v: float) -> bool:
        return math.isfinite(v) and v >= 0

    def to_level(self, params: Tensor | float) -> Tensor:
        return _f64(params) / 255.0

    def to_params(self, level: Tensor | float) -> Tensor:
        return _f64(level) * 255.0

    def estimate_params(self, noisy: Sequence[Tensor]) -> Tensor:
        """Median over images of Chen et al.'s σ (ssdn.noise.estimate), in 8-bit units."""
        sigmas = [255.0 * estimate_sigma(img) for img in as_images(noisy)]
        return torch.tensor(sigmas, dtype=torch.float64).median()

    def _corrupt(self, x: Tensor, params: Tensor, generator: torch.Generator | None) -> Tensor:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return x + noise * (params / 255.0).to(x.dtype)

    @staticmethod
    def _std(lv: Tensor) -> Tensor:
        """σ clamped at 1e-3 as the authors, so that Σ_y stays positive definite even for σ = 0."""
        return torch.clamp_min(lv, MIN_STD)

    def _noise_cov(self, mu: Tensor, lv: Tensor) -> Tensor:
        """Σ_n = σ²·I (Eq. 3)."""
        return self._std(lv)[..., None, None].square() * _eye(mu.shape[-1], mu)

    def _regulariser(self, mu: Tensor, lv: Tensor) -> Tensor:
        """−w·σ: favours explaining the residual as noise rather than prior uncertainty (paper §4.1)."""
        return -_regulariser_weight(mu.shape[-1]) * self._std(lv)
