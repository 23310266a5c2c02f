"""Impulse noise: each pixel replaced with probability α by a uniform random colour (paper §4.3)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ssdn.noise.base import PME_EPS, NoiseModel, _eye, _f64
from ssdn.noise.linalg import det, inv, quad_form

__all__ = ["ImpulseNoise"]

PRIOR_EPS = 1e-6
"""Ridge the authors add to Σ_x in the impulse loss (Eq. 8), keeping a singular A·Aᵀ usable."""


class ImpulseNoise(NoiseModel):
    """Whole-pixel replacement by U[0, 1)^C with probability α; level = α.

    The marginal is a moment-matched Gaussian (Eq. 8), so ``nll`` clamps det Σ_y at 1e-9 as the authors.
    Unknown α gets no regulariser (none in the paper or the authors' code)."""

    name = "impulse"
    param_name = "alpha"
    zero_mean = False
    domain = "0 <= alpha <= 1"
    det_floor = 1e-9

    @staticmethod
    def _in_domain(v: float) -> bool:
        return 0.0 <= v <= 1.0

    def to_level(self, params: Tensor | float) -> Tensor:
        return _f64(params)

    def to_params(self, level: Tensor | float) -> Tensor:
        return _f64(level)

    def estimate_params(self, noisy: Sequence[Tensor]) -> Tensor:  # noqa: ARG002 -- the NoiseModel interface
        raise ValueError(
            "impulse noise has no classical α estimator here; start the learned level at the paper's value "
            "with noise_params.init=paper"
        )

    def _corrupt(self, x: Tensor, params: Tensor, generator: torch.Generator | None) -> Tensor:
        """Draw order (fixed; evaluation noise depends on it).

        First the mask ``rand(N, 1, H, W) < α`` (one per pixel, shared by all channels), then the colours
        ``rand(N, C, H, W)`` (independent per channel). Both are always drawn, so the stream consumed does not
        depend on α.
        """
        n, c, h, w = x.shape
        alpha = params.to(x.dtype)
        hit = torch.rand((n, 1, h, w), generator=generator, dtype=x.dtype, device=x.device) < alpha
        colour = torch.rand((n, c, h, w), generator=generator, dtype=x.dtype, device=x.device)
        return torch.where(hit, colour, x)

    def _marginal(self, mu: Tensor, cov: Tensor, lv: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 8, valid for any C: the raw moments of U[0,1)^C (mean ½, E[uuᵀ] = ¼𝟙𝟙ᵀ + I/12) and of the
        prior mixed with weight α."""
        c = mu.shape[-1]
        eye = _eye(c, mu)
        cov = cov + PRIOR_EPS * eye
        a_vec, a_mat = lv[..., None], lv[..., None, None]
        mu_y = a_vec / 2 + (1 - a_vec) * mu
        uniform_second = 0.25 * torch.ones_like(eye) + eye / 12
        second = a_mat * uniform_second + (1 - a_mat) * (cov + mu[..., :, None] * mu[..., None, :])
        return mu_y, second - mu_y[..., :, None] * mu_y[..., None, :]

    def _regulariser(self, mu: Tensor, lv: Tensor) -> Tensor:  # noqa: ARG002 -- the NoiseModel interface
        return mu.new_zeros(())

    def _prior_density(self, y: Tensor, mu: Tensor, cov: Tensor) -> Tensor:
        """g = N(y; μ_x, Σ) (..., 1), the prior *density* at y (det clamped at 1e-9 as the authors); float64
        because g can exceed 1e6. ``cov`` already carries the ε ridge."""
        norm = torch.sqrt((2 * math.pi) ** mu.shape[-1] * torch.clamp_min(det(cov), self.det_floor))
        return (torch.exp(-0.5 * quad_form(y - mu, inv(cov))) / norm)[..., None]

    def _posterior_mean(self, y: Tensor, mu: Tensor, cov: Tensor, lv: Tensor) -> Tensor:
        """Eq. 10: (α·μ_x + (1−α)·g·y) / (α + (1−α)·g), g the prior density at y (Σ_x + εI)."""
        g = self._prior_density(y, mu, cov + PME_EPS * _eye(mu.shape[-1], mu))
        a = lv[..., None]
        return (a * mu + (1 - a) * g * y) / (a + (1 - a) * g)

    def _posterior_std(self, y: Tensor, mu: Tensor, cov: Tensor, lv: Tensor) -> Tensor:
        """The posterior (Eq. 9) is a mixture: the prior N(μ_x, Σ_x + εI) (the pixel was replaced, weight
        w = α/(α + (1−α)·g)) and a point mass at y (it was kept). Its second moment minus its squared mean,
        written as the law of total variance, w·Σ_cc + w·(1−w)·(μ_c − y_c)², which avoids the cancellation."""
        cov = cov + PME_EPS * _eye(mu.shape[-1], mu)
        g = self._prior_density(y, mu, cov)
        a = lv[..., None]
        w = a / (a + (1 - a) * g)
        var = w * torch.diagonal(cov, dim1=-2, dim2=-1) + w * (1 - w) * (mu - y).square()
        return var.sqrt()
