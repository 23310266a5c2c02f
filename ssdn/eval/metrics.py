"""PSNR and SSIM exactly as the paper's evaluation scores them.

Both images are first quantised like an 8-bit image file: ``clip(floor(x·255 + 0.5), 0, 255)``, i.e. round
half up (not ``torch.round``'s half-to-even). The arithmetic runs in float64 so that a float32 value lands
on the same side of a .5 boundary on every device. PSNR is per image over C, H, W; a set's score is the
arithmetic mean of the per-image PSNRs (not the PSNR of the mean MSE). An image reproduced exactly has PSNR
``inf``; ``mean_psnr`` then returns ``inf`` too, as the mathematics says (with noise on the input this does
not happen in practice).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure


def quantize(x: Tensor) -> Tensor:
    """[0, 1] floats → uint8 by ``clip(floor(x·255 + 0.5), 0, 255)``; uint8 input is returned unchanged."""
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise TypeError(f"quantize expects a floating or uint8 tensor, got {x.dtype}")
    return torch.floor(x.to(torch.float64) * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)


def _as_batch(x: Tensor) -> Tensor:
    if x.ndim == 3:
        return x.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(f"expected a (C, H, W) or (N, C, H, W) image, got shape {tuple(x.shape)}")
    return x


def _pair(pred: Tensor, clean: Tensor) -> tuple[Tensor, Tensor]:
    p, c = _as_batch(quantize(pred)), _as_batch(quantize(clean))
    if p.shape != c.shape:
        raise ValueError(f"prediction {tuple(p.shape)} and clean image {tuple(c.shape)} differ in shape")
    return p, c


def psnr(pred: Tensor, clean: Tensor) -> Tensor:
    """Per-image PSNR (N,) float64 in dB on the quantised images; ``inf`` where they are identical."""
    p, c = _pair(pred, clean)
    mse = (p.to(torch.float64) - c.to(torch.float64)).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0**2 / mse)  # 1/0 → inf, as documented


def ssim(pred: Tensor, clean: Tensor) -> Tensor:
    """Per-image SSIM (N,) float64 of the quantised images /255 (torchmetrics: Gaussian 11², σ 1.5, range 1).

    One image at a time, so a value cannot depend on how images were batched; in float32, which is ~30× faster
    than float64 on CPU (seconds per KODAK image) and differs by ~1e-7.
    """
    p, c = _pair(pred, clean)
    values = [
        structural_similarity_index_measure(
            p[i : i + 1].to(torch.float32) / 255.0, c[i : i + 1].to(torch.float32) / 255.0, data_range=1.0
        )
        for i in range(p.shape[0])
    ]
    return torch.stack([torch.as_tensor(v).reshape(()) for v in values]).to(torch.float64)


def mean_psnr(values: Iterable[float]) -> float:
    """A set's score: the arithmetic mean of per-image PSNRs (``inf`` if any image is exact)."""
    vals = list(values)
    if not vals:
        raise ValueError("mean_psnr of an empty set")
    return math.fsum(vals) / len(vals)
