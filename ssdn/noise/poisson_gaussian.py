"""Poisson–Gaussian (shot + read) camera noise: Var[y | x] = a·x + b, treated as signal-dependent Gaussian."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ssdn.noise.base import MIN_STD, AdditiveGaussianNoise, _f64, _regulariser_weight, as_images
from ssdn.noise.estimate import estimate_poisson_gaussian

__all__ = ["PoissonGaussianNoise"]


class PoissonGaussianNoise(AdditiveGaussianNoise):
    """y = a·Poisson(x/a) + √b·N(0, 1) per pixel and channel; params (a, b) in [0, 1]-intensity variance units.

    The config value is a mapping ``{a: 0.01, b: 0.000384}``, each entry a number or a [low, high] range.
    The level is (√a, √b): std-like scales, so the learned parametrisation's floor of 1e-3 bounds b ≥ 1e-6
    rather than b ≥ 1e-3 (which would exceed the whole (5/255)² = 3.8e-4 of a typical read noise).

    Limits: a = 0 is the Gaussian model with σ = 255·√b (corruption and maths); b = 0 is the Poisson model
    with λ = 1/a (maths; corruption up to float rounding of x/a vs λ·x). Σ_n's std is floored at 1e-3 as
    the Gaussian model's σ, so that a = b = 0 stays usable; for b = 0 the floor never binds when a ≥ 1e-3.
    """

    name = "poisson_gaussian"
    param_name = "a,b"
    param_names = ("a", "b")
    zero_mean = True
    domain = "a >= 0 and b >= 0 (finite, variances in [0, 1] units)"

    @staticmethod
    def _in_domain(v: float) -> bool:
        return math.isfinite(v) and v >= 0

    def to_level(self, params: Tensor | float) -> Tensor:
        return _f64(params).sqrt()

    def to_params(self, level: Tensor | float) -> Tensor:
        return _f64(level).square()

    def estimate_params(self, noisy: Sequence[Tensor]) -> Tensor:
        """Median over images of the Foi-style (a, b) fit (ssdn.noise.estimate)."""
        fits = [estimate_poisson_gaussian(img) for img in as_images(noisy)]
        return torch.tensor(fits, dtype=torch.float64).median(dim=0).values

    def _corrupt(self, x: Tensor, params: Tensor, generator: torch.Generator | None) -> Tensor:
        """Draw order (fixed): the Poisson counts, then the Gaussian read noise, both always drawn.

        a·Poisson(max(x, 0)/a): x is clamped at 0 only for the Poisson rate (it must be ≥ 0); where a = 0 the
        term is x itself (the a → 0 limit, mean x and variance 0). The output is never clipped.
        """
        a, b = params[..., 0].to(x.dtype), params[..., 1].to(x.dtype)
        shot_free = a == 0
        rate = torch.where(shot_free, torch.zeros_like(x), x.clamp_min(0) / torch.where(shot_free, 1, a))
        counts = torch.poisson(rate, generator=generator)
        read = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return torch.where(shot_free, x, counts * a) + read * b.sqrt()

    @staticmethod
    def _variance(mu: Tensor, lv: Tensor) -> Tensor:
        """Per-channel noise variance a·max(μ_x, 1e-3) + b from the *predicted* mean, floored at (1e-3)²."""
        a, b = lv[..., 0].square()[..., None], lv[..., 1].square()[..., None]
        return torch.clamp_min(torch.clamp_min(mu, MIN_STD) * a + b, MIN_STD**2)

    def _noise_cov(self, mu: Tensor, lv: Tensor) -> Tensor:
        """Σ_n = diag(a·max(μ_x, 1e-3) + b); the marginal is Σ_y = Σ_x + Σ_n."""
        return torch.diag_embed(self._variance(mu, lv))

    def _regulariser(self, mu: Tensor, lv: Tensor) -> Tensor:
        """−w·(per-pixel noise std averaged over channels), as the Poisson model (b = 0) and −w·σ (a = 0)."""
        return -_regulariser_weight(mu.shape[-1]) * self._variance(mu, lv).sqrt().mean(-1)
