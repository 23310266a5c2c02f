"""CBM3D (BM3D for grayscale) through the optional ``bm3d`` package, the paper's classical Gaussian baseline.

σ is either the known per-image value (``params``, 8-bit units) or estimated from each noisy image with the
method of Chen et al. (``ssdn.noise.estimate``), as in the paper's "CBM3D, σ unknown" row. ``bm3d``'s
licence allows non-commercial use only, so it is an extra (``pip install 'ssdn[bm3d]'``), imported only
when a denoiser runs.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from ssdn.noise.estimate import estimate_sigma

SIGMA_MODES = ("known", "estimated")
PROFILES = {
    "np": "BM3DProfile",
    "refilter": "BM3DProfileRefilter",
    "vn": "BM3DProfileVN",
    "high": "BM3DProfileHigh",
}
"""bm3d's named parameter profiles ("np", the default, is the reference implementation's normal one)."""
_MIN_SIGMA = 1e-6
"""BM3D needs σ > 0; a known σ of 0 is run at this tiny level instead (the output is then ≈ the input)."""


def require_bm3d() -> ModuleType:
    """Import ``bm3d`` or explain how to get it (and its licence terms)."""
    try:
        import bm3d
    except ImportError as exc:
        raise ImportError(
            "the CBM3D/Anscombe baselines need the optional 'bm3d' package: pip install 'ssdn[bm3d]' "
            "(bm3d is free for non-commercial use only; see its licence before using it commercially)"
        ) from exc
    return bm3d


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"BM3D profile must be one of {sorted(PROFILES)}, got {profile!r}")


def bm3d_denoise(image: np.ndarray, sigma: float, profile: str = "np", threads: int = 1) -> np.ndarray:
    """BM3D of one (H, W, C) float64 image with noise std ``sigma`` in the image's units: CBM3D (opponent
    colour space) for C = 3, grayscale BM3D for C = 1.

    ``threads=1`` by default because bm3d's multi-threaded aggregation adds in a varying order, so its output
    changes in the 7th digit from run to run; evaluate(..., workers=N) parallelises over images instead.
    """
    check_profile(profile)
    bm3d = require_bm3d()
    pro = getattr(bm3d, PROFILES[profile])()
    pro.num_threads = threads
    sigma = max(float(sigma), _MIN_SIGMA)
    if image.shape[2] == 3:
        return np.asarray(bm3d.bm3d_rgb(image, sigma, profile=pro))
    if image.shape[2] == 1:
        return np.asarray(bm3d.bm3d(image[:, :, 0], sigma, profile=pro)).reshape(image.shape)
    raise ValueError(f"BM3D handles 1 or 3 channels, got {image.shape[2]}")


def to_hwc(x: Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).permute(1, 2, 0).numpy()


def from_hwc(images: list[np.ndarray], like: Tensor) -> Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(device=like.device, dtype=torch.float32)


class CBM3D:
    """Denoiser-contract wrapper: ``denoise(noisy (N, C, H, W), σ (N,) in 8-bit units) -> {"out": ...}``.

    ``sigma="known"`` uses ``params``; ``"estimated"`` ignores them and estimates σ per image (Chen et al.).
    """

    requires_square_multiple: int | None = None

    def __init__(self, sigma: str = "known", profile: str = "np", threads: int = 1) -> None:
        if sigma not in SIGMA_MODES:
            raise ValueError(f"sigma must be one of {SIGMA_MODES}, got {sigma!r}")
        check_profile(profile)
        require_bm3d()
        self.sigma = sigma
        self.profile = profile
        self.threads = threads
        self.name = f"cbm3d-{sigma}"

    def sigmas(self, noisy: Tensor, params: Tensor) -> list[float]:
        """The σ each image is denoised with, in [0, 1] units."""
        if self.sigma == "known":
            return [float(p) / 255.0 for p in params.detach().cpu().tolist()]
        return [estimate_sigma(x.detach().cpu()) for x in noisy]

    def denoise(self, noisy: Tensor, params: Tensor) -> dict[str, Tensor]:
        outs = [
            bm3d_denoise(to_hwc(x), s, self.profile, self.threads)
            for x, s in zip(noisy, self.sigmas(noisy, params), strict=True)
        ]
        return {"out": from_hwc(outs, noisy)}
