"""Poisson denoising by variance stabilisation: Anscombe transform → BM3D at σ = 1 → exact unbiased inverse.

The paper's classical Poisson baseline (Mäkitalo & Foi, IEEE TIP 2011). With counts k = λ·y ~ Poisson(λx), the
Anscombe transform 2·√(k + 3/8) has approximately unit variance, so (C)BM3D runs at σ = 1. The plain algebraic
inverse is biased at low counts; Mäkitalo & Foi's closed-form approximation of the exact unbiased inverse is

    D⁻¹(z) = ¼z² + ¼√(3/2)·z⁻¹ − 11/8·z⁻² + 5/8·√(3/2)·z⁻³ − 1/8,

which is exactly 0 at z = 2√(3/8) (the transform of 0 counts) and increasing above it; below it (possible
after denoising) the formula turns back up, so those values map to 0. The estimate is divided by λ to
return to [0, 1].
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from ssdn.baselines.cbm3d import bm3d_denoise, check_profile, from_hwc, require_bm3d, to_hwc

ZERO_COUNT_Z = 2.0 * math.sqrt(3.0 / 8.0)


def anscombe(counts: np.ndarray) -> np.ndarray:
    """2·√(k + 3/8); negative inputs (impossible for counts, only from float rounding) are clipped to 0."""
    return 2.0 * np.sqrt(np.maximum(counts, 0.0) + 3.0 / 8.0)


def inverse_anscombe_unbiased(z: np.ndarray) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse (Mäkitalo & Foi 2011); 0 below z = 2√(3/8)."""
    z = np.asarray(z, dtype=np.float64)
    zs = np.maximum(z, ZERO_COUNT_Z)
    s = math.sqrt(1.5)
    x = 0.25 * zs**2 + 0.25 * s / zs - 11.0 / 8.0 / zs**2 + 5.0 / 8.0 * s / zs**3 - 0.125
    return np.where(z < ZERO_COUNT_Z, 0.0, np.maximum(x, 0.0))


class AnscombeBM3D:
    """Denoiser-contract wrapper for Poisson noise: ``params`` are the known per-image λ."""

    requires_square_multiple: int | None = None

    def __init__(self, profile: str = "np", threads: int = 1) -> None:
        check_profile(profile)
        require_bm3d()
        self.profile = profile
        self.threads = threads
        self.name = "anscombe-bm3d"

    def denoise(self, noisy: Tensor, params: Tensor) -> dict[str, Tensor]:
        outs = []
        for x, lam in zip(noisy, params.detach().cpu().tolist(), strict=True):
            z = anscombe(to_hwc(x) * lam)
            outs.append(inverse_anscombe_unbiased(bm3d_denoise(z, 1.0, self.profile, self.threads)) / lam)
        return {"out": from_hwc(outs, noisy)}
