"""Poisson (photon) noise with maximum event count λ, treated as signal-dependent Gaussian (paper §4.2)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ssdn.noise.base import MIN_STD, AdditiveGaussianNoise, _f64, _regulariser_weight, as_images
from ssdn.noise.estimate import estimate_poisson_gaussian

__all__ = ["PoissonNoise"]


class PoissonNoise(AdditiveGaussianNoise):
    """y = Poisson(λ·x)/λ independently per pixel and channel; level = 1/λ (variance per unit signal)."""

    name = "poisson"
    param_name = "lambda"
    zero_mean = True
    domain = "lambda > 0 (finite)"

    @staticmethod
    def _in_domain(v: float) -> bool:
        return math.isfinite(v) and v > 0

    def to_level(self, params: Tensor | float) -> Tensor:
        return 1.0 / _f64(params)

    def to_params(self, level: Tensor | float) -> Tensor:
        return 1.0 / _f64(level)

    def estimate_params(self, noisy: Sequence[Tensor]) -> Tensor:
        """λ = 1/a from the median over images of the Foi-style fit var = a·x (b = 0, ssdn.noise.estimate)."""
        slopes = [estimate_poisson_gaussian(img, b_zero=True)[0] for img in as_images(noisy)]
        a = torch.tensor(slopes, dtype=torch.float64).median()
        if not a > 0:
            raise ValueError("the images show no signal-dependent noise (a = 0); use noise_params.init=paper")
        return 1.0 / a

    def _corrupt(self, x: Tensor, params: Tensor, generator: torch.Generator | None) -> Tensor:
        lam = params.to(x.dtype)
        return torch.poisson(lam * x, generator=generator) / lam

    @staticmethod
    def _variance(mu: Tensor, lv: Tensor) -> Tensor:
        """Per-channel noise variance max(μ_x, 1e-3)·level, from the *predicted* mean (Eq. 7, authors)."""
        return torch.clamp_min(mu, MIN_STD) * lv[..., None]

    def _noise_cov(self, mu: Tensor, lv: Tensor) -> Tensor:
        """Σ_n = diag(max(μ_x, 1e-3)/λ) (Eq. 7)."""
        return torch.diag_embed(self._variance(mu, lv))

    def _regulariser(self, mu: Tensor, lv: Tensor) -> Tensor:
        """−w·(per-pixel noise std averaged over channels), the authors' Poisson analogue of −w·σ."""
        return -_regulariser_weight(mu.shape[-1]) * self._variance(mu, lv).sqrt().mean(-1)
