"""Noise level estimation of Chen, Zhu and Heng, "An efficient statistical method for image noise level
estimation", ICCV 2015 — the estimator the paper pairs with CBM3D for unknown σ.

Method: take every overlapping d×d patch (all channels together, so a patch is a vector of r = C·d² values)
and the eigenvalues λ₁ ≥ … ≥ λ_r of the patch covariance. Natural image patches live near a low-dimensional
subspace, so the small eigenvalues are (approximately) pure noise variance σ², and a set of pure-noise
eigenvalues has mean ≈ median. Starting from all r eigenvalues, drop the largest one at a time until the
mean τ of the remaining set is its median, i.e. as many of the remaining eigenvalues lie above τ as below;
then σ = √τ.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

PATCH_SIZE = 8
"""d of the paper."""

_ROWS_PER_CHUNK = 64
"""Patch rows unfolded at a time: bounds memory to ~64·W·C·d² values however large the image is."""


def patch_covariance(image: Tensor, patch: int = PATCH_SIZE) -> Tensor:
    """Covariance (r, r) float64 of all overlapping ``patch``² patches of a (C, H, W) image, r = C·patch²."""
    if image.ndim != 3:
        raise ValueError(f"expected a (C, H, W) image, got shape {tuple(image.shape)}")
    c, h, w = image.shape
    if h < patch or w < patch:
        raise ValueError(f"image {h}x{w} is smaller than the {patch}x{patch} patch")
    # Centre the channels first (the covariance is shift-invariant), so that S/n − m·mᵀ loses no precision
    # even with float32 products (2.5× faster); chunk sums are accumulated in float64.
    x = image.to(torch.float64)
    x = (x - x.mean(dim=(1, 2), keepdim=True)).to(torch.float32).unsqueeze(0)
    r = c * patch * patch
    total = torch.zeros(r, r, dtype=torch.float64)
    sums = torch.zeros(r, dtype=torch.float64)
    rows = h - patch + 1
    count = rows * (w - patch + 1)
    for top in range(0, rows, _ROWS_PER_CHUNK):
        block = x[:, :, top : min(top + _ROWS_PER_CHUNK, rows) + patch - 1, :]
        cols = F.unfold(block, kernel_size=patch)[0]  # (r, L)
        total += (cols @ cols.T).to(torch.float64)
        sums += cols.sum(dim=1, dtype=torch.float64)
    mean = sums / count
    return total / count - torch.outer(mean, mean)


def noise_variance_from_eigenvalues(eigenvalues: Tensor) -> float:
    """Mean of the largest set of smallest eigenvalues whose mean is its median (the paper's Algorithm 1)."""
    lam = torch.sort(eigenvalues.to(torch.float64).flatten()).values  # ascending
    for k in range(lam.numel(), 0, -1):
        tail = lam[:k]
        tau = tail.mean()
        if int((tail > tau).sum()) == int((tail < tau).sum()):
            return max(float(tau), 0.0)
    raise AssertionError("unreachable: a single eigenvalue always equals its own mean")


def estimate_sigma(image: Tensor, patch: int = PATCH_SIZE) -> float:
    """σ of i.i.d. noise in a (C, H, W) image, in its units (×255 gives 8-bit units for [0, 1] data)."""
    eig = torch.linalg.eigvalsh(patch_covariance(image, patch))
    return math.sqrt(noise_variance_from_eigenvalues(eig))
