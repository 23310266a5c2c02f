"""Gaussian noise correlated across the channels of a pixel: what demosaicing and colour processing make of a
camera's sensor noise.

Σ_n = diag(s_R², s_G², s_B²) + t²·𝟙𝟙ᵀ: an independent part per channel plus one component common to all three
(luminance noise). With the paper's Σ_n = σ²·I the prior's Σ_x must absorb that common part, and the posterior
mean (Eq. 6) then keeps it as signal. Parameters in 8-bit units, as the Gaussian model's σ: ``sigma_r, sigma_g,
sigma_b, sigma_common``; the level is the same /255, so every entry is a std and the learned parametrisation
(softplus, floor 1e-3) applies to each. RGB only: for one channel s² + t² is one variance and the split between
them cannot be identified (use ``noise=gaussian``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ssdn.noise.base import MIN_STD, AdditiveGaussianNoise, _f64, _regulariser_weight, as_images
from ssdn.noise.correlation import estimate_correlation

__all__ = ["GaussianChannelsNoise", "params_from_channel_cov"]

CHANNELS = 3


def params_from_channel_cov(cov: Tensor) -> Tensor:
    """(s_R, s_G, s_B, t) in 8-bit units from a measured (3, 3) channel covariance of the noise (8-bit units²).

    The common variance t² is the mean of the off-diagonal covariances (negative means clamp to 0: the model
    has no anti-correlated component); each s_c² is what of the channel's variance is left, floored at the
    model's std floor squared so that a channel never starts with no noise of its own."""
    cov = _f64(cov)
    if cov.shape != (CHANNELS, CHANNELS):
        raise ValueError(f"need a ({CHANNELS}, {CHANNELS}) channel covariance, got {tuple(cov.shape)}")
    first, second = torch.triu_indices(CHANNELS, CHANNELS, 1)
    common = cov[first, second].mean().clamp_min(0.0)
    own = (torch.diagonal(cov) - common).clamp_min((255.0 * MIN_STD) ** 2)
    return torch.cat([own, common[None]]).sqrt()


class GaussianChannelsNoise(AdditiveGaussianNoise):
    """y = x + s⊙n + t·n_common, n ~ N(0, I) per pixel and channel, n_common ~ N(0, 1) per pixel (shared by
    the channels); level = (s_R, s_G, s_B, t)/255. With t = 0 and s_R = s_G = s_B = σ it is the Gaussian model,
    in its maths exactly (the same Σ_n) and in its noise value for value (the same first draw)."""

    name = "gaussian_channels"
    param_name = "sigma_r,sigma_g,sigma_b,sigma_common"
    param_names = ("sigma_r", "sigma_g", "sigma_b", "sigma_common")
    zero_mean = True
    domain = "every sigma >= 0 (finite, 8-bit units)"

    @staticmethod
    def _in_domain(v: float) -> bool:
        return math.isfinite(v) and v >= 0

    @classmethod
    def channels_error(cls, channels: int) -> str | None:
        if channels == CHANNELS:
            return None
        return (
            f"noise={cls.name} with channels={channels}: the channel-correlated model is for RGB images (one "
            "channel cannot tell its own noise from the common part); use noise=gaussian"
        )

    def to_level(self, params: Tensor | float) -> Tensor:
        return _f64(params) / 255.0

    def to_params(self, level: Tensor | float) -> Tensor:
        return _f64(level) * 255.0

    def estimate_params(self, noisy: Sequence[Tensor]) -> Tensor:
        """From the noise's channel covariance at one pixel, measured on the flattest windows of all the images
        together (``ssdn.noise.correlation``, which removes the spatial correlation a camera adds): pooling lets
        textured images contribute no windows, where a per-image median would have to take theirs."""
        images = as_images(noisy)
        if any(img.shape[0] != CHANNELS for img in images):
            raise ValueError(
                f"{self.name} noise is estimated on RGB images; got {images[0].shape[0]} channel(s)"
            )
        corr = estimate_correlation(
            np.ascontiguousarray(img.detach().to("cpu", torch.float64).permute(1, 2, 0).numpy())
            for img in images
        )
        return params_from_channel_cov(torch.from_numpy(corr.channel_cov))

    def _corrupt(self, x: Tensor, params: Tensor, generator: torch.Generator | None) -> Tensor:
        """Draw order (fixed): the per-channel noise (x's shape, as the Gaussian model's), then the common noise
        (one value per pixel), both always drawn. Never clipped."""
        n, c, h, w = x.shape
        if c != CHANNELS:
            raise ValueError(f"{self.name} noise corrupts RGB images (N, 3, H, W), got {c} channel(s)")
        own = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        common = torch.randn((n, 1, h, w), generator=generator, dtype=x.dtype, device=x.device)
        scale = (params / 255.0).to(x.dtype).view(n, -1)  # (N, 4)
        s, t = scale[:, :CHANNELS, None, None], scale[:, CHANNELS:, None, None]
        return x + own * s + common * t

    def _split(self, mu: Tensor, lv: Tensor) -> tuple[Tensor, Tensor]:
        """(s (..., 3) with each std floored at 1e-3 as the Gaussian σ, so Σ_n stays positive definite; t (...))."""
        if mu.shape[-1] != CHANNELS:
            raise ValueError(f"{self.name} noise needs RGB pixels (..., 3), got {mu.shape[-1]} channel(s)")
        return torch.clamp_min(lv[..., :CHANNELS], MIN_STD), lv[..., CHANNELS]

    def _noise_cov(self, mu: Tensor, lv: Tensor) -> Tensor:
        """Σ_n = diag(s²) + t²·𝟙𝟙ᵀ."""
        s, t = self._split(mu, lv)
        return torch.diag_embed(s.square()) + t.square()[..., None, None]

    def _regulariser(self, mu: Tensor, lv: Tensor) -> Tensor:
        """−w·√(tr Σ_n / C): the Gaussian model's −w·σ with σ the noise's std averaged (in variance) over the
        channels. Computed as m·√(mean((s/m)²) + (t/m)²) with m the largest std, so that t = 0 and every s = σ
        give −w·σ exactly (√(mean(σ²)) can be an ulp off)."""
        s, t = self._split(mu, lv)
        m = torch.maximum(s.amax(-1), t)
        rms = m * ((s / m[..., None]).square().mean(-1) + (t / m).square()).sqrt()
        return -_regulariser_weight(mu.shape[-1]) * rms
