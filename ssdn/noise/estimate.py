"""Classical noise-level estimators, the models' ``estimate_params`` (also CBM3D's "σ unknown" row).

**Chen, Zhu and Heng** (ICCV 2015, the estimator the paper pairs with CBM3D): natural patches live near a
low-dimensional subspace, so the small eigenvalues of the patch covariance are pure noise variance σ².
**Poisson–Gaussian, in the spirit of Foi et al.** (IEEE TIP 2008): Var[y | x] = a·x + b fitted over intensity
bins, with Chen's PCA per bin in place of Foi's wavelet MAD (natural RGB photos rather than raw data) and
clipped bins dropped rather than modelled (heavily clipped images still bias a and b low). Memory: above
``MAX_PATCHES`` patches per channel a fixed, seeded sample is used (64 MiB per channel rather than 3 GB at
24 MP); smaller images (up to about 730×730, e.g. KODAK and every training crop) use every patch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MAX_PATCHES",
    "PATCH_SIZE",
    "binned_variances",
    "channel_patches",
    "estimate_poisson_gaussian",
    "estimate_sigma",
    "fit_variance_line",
    "noise_variance_from_eigenvalues",
    "patch_covariance",
]

PATCH_SIZE = 8
"""Patch side d of Chen et al. (r = 64 dimensions per channel)."""

_ROWS_PER_CHUNK = 64
"""Chen: patch rows unfolded at a time, bounding memory to ~64·W·C·d² values however large the image is."""

STRIDE = 2
"""Foi-style fit: patch stride, a quarter of the overlapping patches, 4× faster and nearly as informative."""

NUM_BINS = 12
"""Foi-style fit: intensity bins per channel."""

CLIP_MARGIN = 2.0
"""Foi-style fit: bins closer than this many noise stds to 0 or 1 are treated as clipped and dropped."""

MAX_PATCHES = 2**17
"""Foi-style fit: most patches used per channel (64·8 bytes each: 64 MiB); beyond it a seeded sample."""

SAMPLE_SEED = 0
"""Seed of the patch sample, so that an image's estimate never changes from one call to the next."""


# ------------------------------------------------------------------------------------------------ Chen


def _check_image(image: Tensor, patch: int) -> None:
    if image.ndim != 3:
        raise ValueError(f"expected a (C, H, W) image, got shape {tuple(image.shape)}")
    h, w = image.shape[1:]
    if h < patch or w < patch:
        raise ValueError(f"image {h}x{w} is smaller than the {patch}x{patch} patch")


def patch_covariance(image: Tensor, patch: int = PATCH_SIZE) -> Tensor:
    """Covariance (r, r) float64 of all overlapping ``patch``² patches of a (C, H, W) image, r = C·patch²."""
    _check_image(image, patch)
    c, h, w = image.shape
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
    """Mean of the largest set of smallest eigenvalues whose mean is its median (Chen et al.'s Algorithm 1)."""
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


# ------------------------------------------------------------------------------------------ Foi-style fit


def channel_patches(
    channel: Tensor, patch: int = PATCH_SIZE, stride: int = STRIDE, limit: int | None = MAX_PATCHES
) -> Tensor:
    """(patch², L) float64 patches of one (H, W) channel on the ``stride`` grid, L ≤ ``limit``.

    Up to ``limit`` positions: all of them, in ``F.unfold``'s order. Beyond: ``limit`` positions drawn without
    replacement by a generator seeded ``SAMPLE_SEED``, gathered one pixel offset at a time, so no more than
    the sample is ever held in float64 (``limit=None``: always all)."""
    h, w = channel.shape
    rows, cols = (h - patch) // stride + 1, (w - patch) // stride + 1
    if limit is None or rows * cols <= limit:
        return F.unfold(channel[None, None].to(torch.float64), kernel_size=patch, stride=stride)[0]
    g = torch.Generator().manual_seed(SAMPLE_SEED)
    pick = torch.randperm(rows * cols, generator=g)[:limit].sort().values
    corner = (pick // cols) * stride * w + (pick % cols) * stride  # flat index of each patch's top-left pixel
    flat = channel.reshape(-1)
    out = torch.empty(patch * patch, limit, dtype=torch.float64)
    for dy in range(patch):
        for dx in range(patch):
            out[dy * patch + dx] = flat[corner + (dy * w + dx)]
    return out


def binned_variances(
    image: Tensor, bins: int = NUM_BINS, patch: int = PATCH_SIZE, max_patches: int | None = MAX_PATCHES
) -> tuple[Tensor, Tensor, Tensor]:
    """(means, variances, counts) float64 of the intensity bins of every channel of a (C, H, W) image, from
    at most ``max_patches`` patches per channel (``channel_patches``).

    Per channel, the patches are grouped in bins of equal counts (quantiles of the patch means) and each bin's
    variance is Chen's estimate of its patches."""
    _check_image(image, patch)
    means, variances, counts = [], [], []
    for ch in range(image.shape[0]):
        cols = channel_patches(image[ch], patch, STRIDE, max_patches)  # (r, L)
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
    """Weighted least squares of var = a·mean + b (b = 0 if ``b_zero``), a, b ≥ 0, clipped bins dropped.

    Clipped bins: those within 2 fitted noise stds of 0 or 1, then refitted. Weights n_k / var_k² (a variance's
    sampling variance is ∝ var²/n), refitted with the fitted variance; a, b ≥ 0 by refitting with the offending
    coefficient at 0.
    """
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


def estimate_poisson_gaussian(
    image: Tensor, b_zero: bool = False, max_patches: int | None = MAX_PATCHES
) -> tuple[float, float]:
    """(a, b) of Var[y | x] = a·x + b for a (C, H, W) image in [0, 1] units; ``b_zero`` fits pure Poisson.

    8-bit quantisation adds 1/(12·255²) ≈ 1.3e-6 to b.
    """
    return fit_variance_line(*binned_variances(image, max_patches=max_patches), b_zero=b_zero)
