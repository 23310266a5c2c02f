"""Poisson–Gaussian noise estimation in the spirit of Foi, Trimeche, Katkovnik and Egiazarian, "Practical
Poissonian-Gaussian noise modeling and fitting for single-image raw-data", IEEE TIP 2008.

Model: Var[y | x] = a·x + b. Like Foi et al., collect (local mean, local noise variance) pairs from the noisy
image, grouped in intensity bins, and fit the line var = a·mean + b by weighted least squares. Our
approximations, chosen for robustness on natural RGB photos rather than raw data:

- Local variance: per intensity bin, Chen et al.'s PCA estimator (ssdn.baselines.chen) on the covariance of all
  overlapping d×d single-channel patches whose mean falls in the bin. Foi et al. instead take the MAD of
  wavelet detail coefficients on pixels an edge detector marks smooth. Both discount image structure; the PCA
  version needs no edge threshold. Within a patch the variance varies with x; the estimate is ≈ its average.
- Bins hold equal numbers of patches (quantiles of the patch means), so every bin has enough samples.
- Clipping: Foi et al. model the clipped likelihood; we drop bins whose mean lies within 2 fitted noise stds
  of 0 or 1 (where clipping shrinks the variance) and refit. Heavily clipped images still bias a and b low.
- 8-bit quantisation adds 1/(12·255²) ≈ 1.3e-6 to the variance, i.e. to b (0.3% of b = (5/255)²).
- Fit: weights n_k / var_k² (the sampling variance of a variance is ∝ var²/n), with the fitted variance in a
  second pass; the result is clamped to a, b ≥ 0 by refitting with the offending coefficient at 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssdn.baselines.chen import noise_variance_from_eigenvalues

__all__ = ["PATCH_SIZE", "binned_variances", "estimate_poisson_gaussian", "fit_variance_line"]

PATCH_SIZE = 8
"""Patch side d, as Chen et al.: r = 64 dimensions per channel."""

STRIDE = 2
"""Patch stride: a quarter of the overlapping patches, 4× faster and nearly as informative."""

NUM_BINS = 12
"""Intensity bins per channel."""

CLIP_MARGIN = 2.0
"""Bins closer than this many noise stds to 0 or 1 are treated as clipped and dropped from the fit."""


def binned_variances(
    image: Tensor, bins: int = NUM_BINS, patch: int = PATCH_SIZE
) -> tuple[Tensor, Tensor, Tensor]:
    """(means, variances, counts) float64 of the intensity bins of every channel of a (C, H, W) image."""
    if image.ndim != 3:
        raise ValueError(f"expected a (C, H, W) image, got shape {tuple(image.shape)}")
    c, h, w = image.shape
    if h < patch or w < patch:
        raise ValueError(f"image {h}x{w} is smaller than the {patch}x{patch} patch")
    means, variances, counts = [], [], []
    for ch in range(c):
        cols = F.unfold(image[ch][None, None].to(torch.float64), kernel_size=patch, stride=STRIDE)[
            0
        ]  # (r, L)
        m = cols.mean(dim=0)
        edges = torch.quantile(
            m[:: max(1, m.numel() // 100_000)], torch.linspace(0, 1, bins + 1, dtype=m.dtype)
        )
        idx = torch.bucketize(m, edges[1:-1].contiguous())
        for k in range(bins):
            sel = cols[:, idx == k]
            if sel.shape[1] < 4 * sel.shape[0]:  # too few patches for a usable r×r covariance
                continue
            centred = sel - sel.mean(dim=1, keepdim=True)
            cov = centred @ centred.T / sel.shape[1]
            means.append(float(m[idx == k].mean()))
            variances.append(noise_variance_from_eigenvalues(torch.linalg.eigvalsh(cov)))
            counts.append(sel.shape[1])
    f64 = torch.float64
    return torch.tensor(means, dtype=f64), torch.tensor(variances, dtype=f64), torch.tensor(counts, dtype=f64)


def _wls(x: Tensor, v: Tensor, w: Tensor, a_only: bool) -> tuple[float, float]:
    if a_only:
        return float((w * x * v).sum() / (w * x * x).sum()), 0.0
    design = torch.stack([x, torch.ones_like(x)], dim=1) * w.sqrt()[:, None]
    sol = torch.linalg.lstsq(design, (v * w.sqrt())[:, None]).solution[:, 0]
    a, b = float(sol[0]), float(sol[1])
    if a < 0:  # no signal dependence visible: constant variance
        return 0.0, float((w * v).sum() / w.sum())
    if b < 0:
        return _wls(x, v, w, a_only=True)
    return a, b


def fit_variance_line(
    means: Tensor, variances: Tensor, counts: Tensor, b_zero: bool = False
) -> tuple[float, float]:
    """Weighted least squares of var = a·mean + b (b = 0 if ``b_zero``), a, b ≥ 0, clipped bins dropped."""
    if means.numel() == 0:
        raise ValueError("no intensity bin had enough patches to estimate the noise; use larger images")
    a, b = _wls(means, variances, counts / variances.clamp_min(1e-12).square(), b_zero)
    for _ in range(2):
        fitted = (a * means + b).clamp_min(1e-12)
        std = fitted.sqrt()
        keep = (means - CLIP_MARGIN * std > 0) & (means + CLIP_MARGIN * std < 1)
        if int(keep.sum()) < 2:
            break
        a, b = _wls(means[keep], variances[keep], counts[keep] / fitted[keep].square(), b_zero)
    return a, b


def estimate_poisson_gaussian(image: Tensor, b_zero: bool = False) -> tuple[float, float]:
    """(a, b) of Var[y | x] = a·x + b for a (C, H, W) image in [0, 1] units; ``b_zero`` fits pure Poisson."""
    return fit_variance_line(*binned_variances(image), b_zero=b_zero)
