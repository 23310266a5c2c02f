"""Spatial correlation of the noise, measured from noisy images alone (issue 27).

Why: the paper's blind-spot net (§2) assumes that a pixel's noise is independent of its neighbours'. Camera
processing (demosaicing above all, then sharpening and JPEG) spreads each pixel's noise into its neighbours; a
blind-spot net trained on such photos learns to predict the noise from the surrounding noise and hands it back.
This module measures that correlation before training so the user can pick a larger blind region.

How, and why this way:

- **Flat windows, chosen without looking at their own noise.** Image structure would pass for correlated
  noise, so only flat 32×32 windows are used. A window's flatness is judged on a frame of pixels around it,
  separated from the window by a gap wider than the correlation radius, never on the window itself:
  selecting windows whose own high-pass energy happens to be low would bias both σ (low) and ρ (towards
  smooth, i.e. positive, correlation). The frame's noise is independent of the window's (beyond the gap), so
  the windows kept are an unbiased sample of the noise.
- **First differences, then a least-squares deconvolution.** Inside a window the residuals
  ``e_x = y(p + x̂) − y(p)`` and ``e_y`` remove the (locally constant or linear) image; what is left is the
  noise n filtered by a known kernel h. Their autocovariances are linear in the noise autocovariance R:
  ``Cov[e(p), e(p + d)] = Σ_{u,v} h(u) h(v) R(d + v − u)``. R is taken to vanish beyond the radius K, and the
  (2K+1)² symmetric values of R are recovered by least squares from the residual autocovariances at offsets up
  to K + 1. This is exact for any stationary noise with that support, in particular R = σ²·δ for white noise
  gives ρ = 0 at every non-zero offset in expectation, whereas the raw correlation of a high-pass residual
  would show the filter's own correlation (−0.5 at one pixel for a first difference). First differences rather
  than a Laplacian: |H(ω)|² of a difference grows as ω² near DC (a Laplacian's as ω⁴), so the low frequencies
  that carry a smooth correlation are recovered with less amplification of the sampling error.
- **Bounded memory.** Only ``MAX_WINDOWS_PER_IMAGE`` candidate regions are read from each image (drawn with an
  explicit seeded numpy Generator when an image has more), so a 24-MP photo costs a few MB beyond its pixels.

Units: images in [0, 1]; σ is reported in 8-bit units (×255), the paper's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "FLAT_FRACTION",
    "RADIUS",
    "RHO_THRESHOLD",
    "WINDOW",
    "NoiseCorrelation",
    "estimate_correlation",
    "noise_correlation",
]

RADIUS = 3
"""Largest offset (in each of dy, dx) at which ρ is estimated and beyond which R is assumed to vanish.
Demosaicing spreads noise over 1–2 pixels; 3 covers that with a margin without making the fit ill-posed."""

RHO_THRESHOLD = 0.05
"""|ρ| above which an offset counts as correlated. Why 0.05: with ρ = 0.05 at the four nearest neighbours a
linear predictor of a pixel's noise from them explains ≈ 4ρ² = 1% of its variance — the noise a blind-spot
net can learn to hand back — which is below what its training can exploit; at ρ = 0.1 it is 4%, already a
visible loss against a denoised output whose error is a few percent of the noise variance. The estimator's
own spread on a few hundred windows is ≈ 0.01 (tests/test_correlation.py), well below it."""

WINDOW = 32
"""Side of the windows whose noise is measured: 31·32 residual samples per channel each."""

GAP = RADIUS + 1
"""Pixels between a window and its flatness frame: wider than the radius, so their noises are independent."""

FRAME = 8
"""Width of the frame around a window (beyond the gap) on which its flatness is judged."""

FLAT_FRACTION = 0.25
"""Share of each image's candidate windows kept, the flattest by frame energy. A quarter: photos are mostly
textured, and a window kept must be nearly free of structure (which would pass for positive correlation)."""

MAX_WINDOWS_PER_IMAGE = 512
"""Candidate windows read per image; more are drawn at random (bounded memory for 24-MP photos)."""

MIN_WINDOWS = 4
"""Fewest windows kept per image (when it has that many candidates)."""

_REGION = WINDOW + 2 * (GAP + FRAME)


@dataclass(frozen=True)
class NoiseCorrelation:
    """What the diagnostic measured: level and normalised autocorrelation of the noise.

    ``rho[K + dy, K + dx]`` is ρ(dy, dx) averaged over channels (weighted by variance), ρ(0, 0) = 1, and
    symmetric: ρ(−dy, −dx) = ρ(dy, dx). ``extent`` is the largest Chebyshev distance max(|dy|, |dx|) > 0 at
    which |ρ| > ``threshold`` (0 when none), so ``independent`` means the paper's blind spot applies.
    """

    sigma: float
    sigma_per_channel: tuple[float, ...]
    rho: np.ndarray = field(repr=False)
    rho_per_channel: np.ndarray = field(repr=False)
    threshold: float = RHO_THRESHOLD
    windows: int = 0

    @property
    def radius(self) -> int:
        return (self.rho.shape[0] - 1) // 2

    def at(self, dy: int, dx: int) -> float:
        """ρ(dy, dx)."""
        k = self.radius
        return float(self.rho[k + dy, k + dx])

    @property
    def extent(self) -> int:
        k = self.radius
        dy, dx = np.nonzero(np.abs(self.rho) > self.threshold)
        dist = np.maximum(np.abs(dy - k), np.abs(dx - k))
        return int(dist.max(initial=0))

    @property
    def independent(self) -> bool:
        return self.extent == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (ρ rounded to 4 decimals: its sampling error is ≈ 0.01)."""
        return {
            "sigma": round(self.sigma, 4),
            "sigma_per_channel": [round(s, 4) for s in self.sigma_per_channel],
            "radius": self.radius,
            "rho": np.round(self.rho, 4).tolist(),
            "threshold": self.threshold,
            "extent": self.extent,
            "independent": self.independent,
            "windows": self.windows,
        }


# ---------------------------------------------------------------------------------------------- model


def _half_offsets(radius: int) -> list[tuple[int, int]]:
    """One of each ±d pair with max(|dy|, |dx|) <= radius, (0, 0) first."""
    return [
        (dy, dx)
        for dy in range(0, radius + 1)
        for dx in range(-radius, radius + 1)
        if dy > 0 or dx >= 0
    ]


_DIFFERENCES: tuple[dict[tuple[int, int], float], ...] = (
    {(0, 1): 1.0, (0, 0): -1.0},  # e_x
    {(1, 0): 1.0, (0, 0): -1.0},  # e_y
)


def _design(radius: int) -> np.ndarray:
    """Matrix A with Cov[e_f(p), e_f(p + d)] = (A R)[f, d], R on ``_half_offsets(radius)``."""
    unknown = {d: i for i, d in enumerate(_half_offsets(radius))}

    def index(dy: int, dx: int) -> int | None:
        if max(abs(dy), abs(dx)) > radius:
            return None  # R assumed 0 beyond the radius
        return unknown[(dy, dx)] if (dy, dx) in unknown else unknown[(-dy, -dx)]

    rows = []
    for taps in _DIFFERENCES:
        for dy, dx in _half_offsets(radius + 1):
            row = np.zeros(len(unknown))
            for (uy, ux), hu in taps.items():
                for (vy, vx), hv in taps.items():
                    j = index(dy + vy - uy, dx + vx - ux)
                    if j is not None:
                        row[j] += hu * hv
            rows.append(row)
    return np.asarray(rows)


def _autocov(e: np.ndarray, offsets: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Sums of e(p)·e(p + d) over windows and pixels, per channel, and their pair counts: (D, C), (D,)."""
    n, h, w, c = e.shape
    sums = np.zeros((len(offsets), c))
    counts = np.zeros(len(offsets))
    for i, (dy, dx) in enumerate(offsets):
        a = e[:, : h - dy, max(0, -dx) : w - max(0, dx)]
        b = e[:, dy:, max(0, dx) : w - max(0, -dx)]
        sums[i] = np.einsum("nhwc,nhwc->c", a, b)
        counts[i] = n * a.shape[1] * a.shape[2]
    return sums, counts


def _full_map(values: np.ndarray, radius: int) -> np.ndarray:
    """(D, C) values on the half offsets -> (2K+1, 2K+1, C) symmetric map."""
    out = np.zeros((2 * radius + 1, 2 * radius + 1, values.shape[1]))
    for (dy, dx), v in zip(_half_offsets(radius), values, strict=True):
        out[radius + dy, radius + dx] = v
        out[radius - dy, radius - dx] = v
    return out


def _result(cov: np.ndarray, radius: int, threshold: float, windows: int) -> NoiseCorrelation:
    """NoiseCorrelation from the autocovariance (D, C) on the half offsets (variance first)."""
    var = cov[0]
    if not np.all(var > 1e-12):
        raise ValueError(
            "no measurable noise (variance ~0 in some channel): the images look clean or constant"
        )
    full = _full_map(cov, radius)
    rho_c = full / var
    rho = full.sum(axis=2) / var.sum()
    return NoiseCorrelation(
        sigma=float(np.sqrt(var.mean()) * 255.0),
        sigma_per_channel=tuple(float(s) for s in np.sqrt(var) * 255.0),
        rho=rho,
        rho_per_channel=np.moveaxis(rho_c, 2, 0),
        threshold=threshold,
        windows=windows,
    )


# ---------------------------------------------------------------------------------------------- estimate


def _as_unit(pixels: np.ndarray) -> np.ndarray:
    """uint8/uint16 -> float64 in [0, 1] by bit depth; float arrays are taken to be in [0, 1] already."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float64) / 255.0
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float64) / 65535.0
    return pixels.astype(np.float64)


def _flat_windows(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, WINDOW, WINDOW, C) float64 windows of ``image`` whose surrounding frame is among the flattest."""
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {image.shape}")
    h, w, _ = image.shape
    ny, nx = h // _REGION, w // _REGION
    if ny * nx == 0:
        return np.zeros((0, WINDOW, WINDOW, image.shape[2]))
    cells = np.arange(ny * nx)
    if cells.size > MAX_WINDOWS_PER_IMAGE:
        cells = np.sort(rng.choice(cells, size=MAX_WINDOWS_PER_IMAGE, replace=False))
    # centre the grid so the unused margin is split between the borders
    top, left = (h - ny * _REGION) // 2, (w - nx * _REGION) // 2
    regions = np.stack(
        [
            _as_unit(image[top + (i // nx) * _REGION :, left + (i % nx) * _REGION :][:_REGION, :_REGION])
            for i in cells
        ]
    )
    inner = slice(FRAME, _REGION - FRAME)
    energy = np.zeros(len(regions))
    for axis in (1, 2):
        d2 = np.diff(regions, axis=axis) ** 2
        frame_mask = np.ones(d2.shape[1:3], dtype=bool)
        frame_mask[inner, inner] = False
        energy += d2[:, frame_mask].sum(axis=(1, 2))
    keep = max(min(MIN_WINDOWS, len(regions)), round(FLAT_FRACTION * len(regions)))
    flattest = np.sort(np.argsort(energy, kind="stable")[:keep])
    o = FRAME + GAP
    return regions[flattest, o : o + WINDOW, o : o + WINDOW]


def estimate_correlation(
    images: Iterable[np.ndarray],
    radius: int = RADIUS,
    threshold: float = RHO_THRESHOLD,
    seed: int = 0,
) -> NoiseCorrelation:
    """Noise level and autocorrelation of noisy (H, W, C) images (float in [0, 1], or uint8/uint16).

    Images smaller than ``WINDOW + 2·(GAP + FRAME)`` = 56 px on a side contribute nothing. Raises ValueError
    when no image is large enough or the noise is not measurable.
    """
    if radius < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    rng = np.random.default_rng(seed)
    offsets = _half_offsets(radius + 1)
    sums: np.ndarray | None = None
    counts = np.zeros((len(_DIFFERENCES), len(offsets)))
    windows = 0
    for image in images:
        win = _flat_windows(image, rng)
        if not len(win):
            continue
        windows += len(win)
        residuals = (np.diff(win, axis=2), np.diff(win, axis=1))
        parts = []
        for f, e in enumerate(residuals):
            e = e - e.mean(axis=(1, 2), keepdims=True)  # a linear ramp leaves a constant difference
            s, n = _autocov(e, offsets)
            parts.append(s)
            counts[f] += n
        stacked = np.concatenate(parts)
        sums = stacked if sums is None else sums + stacked
    if sums is None:
        raise ValueError(f"no image is large enough: each side must be at least {_REGION} pixels")
    observed = sums / counts.reshape(-1)[:, None]
    cov, *_ = np.linalg.lstsq(_design(radius), observed, rcond=None)
    return _result(cov, radius, threshold, windows)


def noise_correlation(
    noise: Iterable[np.ndarray], radius: int = RADIUS, threshold: float = RHO_THRESHOLD
) -> NoiseCorrelation:
    """The true autocorrelation of known noise arrays (H, W, C) in [0, 1] units, e.g. noisy − clean.

    For checking ``estimate_correlation`` on simulated data: every pixel pair is used, per-channel means
    removed (clipping makes the noise mean depend on the image).
    """
    offsets = _half_offsets(radius)
    total: np.ndarray | None = None
    pairs = np.zeros(len(offsets))
    for n in noise:
        e = np.asarray(n, dtype=np.float64)
        e = (e - e.mean(axis=(0, 1), keepdims=True))[None]
        s, c = _autocov(e, offsets)
        total = s if total is None else total + s
        pairs += c
    if total is None:
        raise ValueError("no noise arrays given")
    return _result(total / pairs[:, None], radius, threshold, windows=0)
