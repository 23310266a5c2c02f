"""Spatial correlation of the noise, measured from noisy images alone, to size the blind region (issue 27).

The paper's blind-spot net (§2) assumes pixel-independent noise; camera processing (demosaicing, sharpening,
JPEG) spreads each pixel's noise into its neighbours, which such a net then learns to hand back. Why this
way: flat windows are judged on a frame around them, past a gap wider than the correlation radius, never on
their own pixels (selecting on their own noise biases σ low and ρ positive). First differences less a fitted
plane remove the image; R (zero beyond radius K) is then recovered by least-squares deconvolution, exact for
stationary noise (white noise gives ρ = 0, not the filter's −0.5 at one pixel). Differences rather than a
Laplacian (|H(ω)|² ∝ ω², not ω⁴) amplify the low frequencies' sampling error less. Images in [0, 1]; σ is
reported in 8-bit units (×255), the paper's.

The same windows give the noise's covariance between channels at one pixel (``NoiseCorrelation.channel_cov``):
demosaicing and colour processing make much of a camera's noise common to R, G and B, which a model with
Σ_n = σ²·I misreads as signal (``ssdn.noise.gaussian_channels``). Cross products are symmetrised,
½(e_c(p)·e_k(p + d) + e_k(p)·e_c(p + d)), whose expectation is the same deconvolution of the symmetric part of
the cross-covariance, so its value at offset 0 (symmetric by definition) is recovered as R(0) is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ssdn.noise.estimate import binned_variances, fit_variance_line

__all__ = [
    "CHANNEL_RHO_THRESHOLD",
    "FLAT_FRACTION",
    "FOI_CROP",
    "MIN_INTENSITY_SPAN",
    "RADIUS",
    "RHO_THRESHOLD",
    "SIGNAL_DEPENDENT_FRACTION",
    "WINDOW",
    "NoiseCorrelation",
    "Recommendation",
    "VarianceLine",
    "estimate_correlation",
    "noise_correlation",
    "noise_model_for",
    "recommend",
    "signal_dependence",
]

RADIUS = 3
"""Largest offset (in each of dy, dx) at which ρ is estimated and beyond which R is assumed to vanish.
The simulated camera's demosaiced noise has |ρ| > 0.1 at 1 pixel only, with a weak tail (≈ 0.08 at 3 px,
bench/README.md) that this truncation leaves unmeasured; a larger radius costs more windows for the same error."""

RHO_THRESHOLD = 0.1
"""|ρ| above which an offset counts as correlated. Why 0.1: a photo's own fine structure left in the flattest
windows (film grain, JPEG) reads as ρ(0, 1) up to ≈ 0.07 under independent noise (Poisson–Gaussian a = 0.01,
b = (5/255)² on the bsd300 crops, bench/README.md; ≤ 0.03 on KODAK with Gaussian σ = 10–25), so the
threshold must stand clear of that;
and with ρ = 0.1 at the four nearest neighbours a linear predictor explains ≈ 4ρ² = 4% of a pixel's noise
variance, the most a 1-pixel blind spot could hand back, against ≈ 17% for the simulated camera's demosaiced
noise (ρ(0, 1) ≈ 0.21 averaged over R, G, B; bench/README.md, ``bench/camera.py diagnose``)."""

WINDOW = 32
"""Side of the windows whose noise is measured: 31·32 residual samples per channel each."""

GAP = RADIUS + 1
"""Pixels between a window and its flatness frame: wider than the radius, so their noises are independent."""

FRAME = 8
"""Width of the frame around a window (beyond the gap) on which its flatness is judged."""

FLAT_FRACTION = 0.1
"""Share of all candidate windows kept (of all images together), the flattest by frame score. A tenth: photos
are mostly textured, and a window kept must be nearly free of structure, which would pass for positive
correlation (with an earlier flatness score, a quarter left +0.07 at ρ(0, 1) with σ = 25 on KODAK, a tenth
+0.02)."""

CLIPPED_FRACTION = 0.02
"""Windows with more of their values at 0 or at the maximum are never used. Clipping shrinks the noise and
makes its mean follow the image, which reads as positive correlation (+0.03 at σ = 25 on KODAK when kept,
measured with an earlier flatness score).
2% rather than none: at σ = 50 even mid-grey windows have a few clipped values, and so few do no harm."""

TEXTURE_LAG = 2 * GAP
"""Lag of the pixel differences whose energy in the frame scores its flatness: beyond the noise's correlation,
so the noise contributes 2·R(0) whatever its correlation, and image structure (which grows with the lag)
stands out more than at lag 1."""

BRIGHTNESS_BINS = 8
"""Candidates are grouped in this many brightness bins (equal counts) to find the noise floor of the frame
energy as a function of brightness; a frame's score is its energy over that floor. Why: under
signal-dependent noise the plain energy would prefer the darkest windows, textured or not (+0.15 false
correlation on KODAK with Poisson–Gaussian noise, scoring by the plain lag-1 energy); relative to the
floor, a window is scored by its structure, not by its brightness."""

FLOOR_QUANTILE = 0.2
"""Quantile of a bin's frame energies taken as its noise-only energy."""

MAX_WINDOWS_PER_IMAGE = 512
"""Candidate windows read per image; more are drawn at random (bounded memory for 24-MP photos)."""

MIN_WINDOWS = 24
"""Fewest windows kept (of those usable) when a tenth is fewer: on a few small images a tenth is a handful
of windows whose sampling error (±0.03 per channel) would decide the verdict near the threshold."""


@dataclass(frozen=True)
class NoiseCorrelation:
    """What the diagnostic measured: level and normalised autocorrelation of the noise.

    ``rho[K + dy, K + dx]`` is ρ(dy, dx) averaged over channels (weighted by variance), ρ(0, 0) = 1, and
    symmetric: ρ(−dy, −dx) = ρ(dy, dx); ``rho_per_channel[c]`` the same per channel. ``extent`` is the largest
    Chebyshev distance max(|dy|, |dx|) > 0 at which |ρ| > ``threshold`` in some channel (0 when none), so
    ``independent`` means the paper's blind spot applies. ``channel_cov`` is the (C, C) covariance of the noise
    between channels at the same pixel in 8-bit units² (its diagonal the squares of ``sigma_per_channel``).
    """

    sigma: float
    sigma_per_channel: tuple[float, ...]
    rho: np.ndarray = field(repr=False)
    rho_per_channel: np.ndarray = field(repr=False)
    channel_cov: np.ndarray = field(repr=False)
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
        """Judged per channel: a channel whose noise its neighbours predict is handed back, whatever the others."""
        k = self.radius
        worst = np.abs(self.rho_per_channel).max(axis=0)
        dy, dx = np.nonzero(worst > self.threshold)
        dist = np.maximum(np.abs(dy - k), np.abs(dx - k))
        return int(dist.max(initial=0))

    @property
    def independent(self) -> bool:
        return self.extent == 0

    @property
    def channel_rho(self) -> np.ndarray:
        """(C, C) correlation of the noise between channels at the same pixel (1 on the diagonal)."""
        std = np.sqrt(np.diag(self.channel_cov))
        return self.channel_cov / np.outer(std, std)

    @property
    def channel_correlation(self) -> float:
        """Mean correlation over pairs of distinct channels at the same pixel; 0 for one channel."""
        c = self.channel_cov.shape[0]
        if c < 2:
            return 0.0
        return float(self.channel_rho[np.triu_indices(c, 1)].mean())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (ρ rounded to 4 decimals: its sampling error is ≈ 0.01)."""
        return {
            "sigma": round(self.sigma, 4),
            "sigma_per_channel": [round(s, 4) for s in self.sigma_per_channel],
            "radius": self.radius,
            "rho": np.round(self.rho, 4).tolist(),
            "rho_per_channel": np.round(self.rho_per_channel, 4).tolist(),
            "channel_cov": np.round(self.channel_cov, 4).tolist(),
            "channel_rho": np.round(self.channel_rho, 4).tolist(),
            "channel_correlation": round(self.channel_correlation, 4),
            "threshold": self.threshold,
            "extent": self.extent,
            "independent": self.independent,
            "windows": self.windows,
        }


# ---------------------------------------------------------------------------------------------- model


def _half_offsets(radius: int) -> list[tuple[int, int]]:
    """One of each ±d pair with max(|dy|, |dx|) <= radius, (0, 0) first."""
    return [(dy, dx) for dy in range(0, radius + 1) for dx in range(-radius, radius + 1) if dy > 0 or dx >= 0]


_DIFFERENCES: tuple[dict[tuple[int, int], float], ...] = (
    {(0, 1): 1.0, (0, 0): -1.0},  # e_x
    {(1, 0): 1.0, (0, 0): -1.0},  # e_y
)


def _design(radius: int) -> np.ndarray:
    """Matrix A with Cov[e_f(p), e_f(p + d)] = (A R)[f, d], R on ``_half_offsets(radius)``.

    For a residual e = h * n, Cov[e(p), e(p + d)] = Σ_{u,v} h(u) h(v) R(d + v − u); R vanishes beyond
    ``radius``, and the residual offsets reach ``radius + 1``.
    """
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


def _filtered(win: np.ndarray, taps: dict[tuple[int, int], float]) -> np.ndarray:
    """e(p) = Σ_u h(u)·win(p + u) over the positions where every tap is inside: (N, H', W', C)."""
    n, h, w, c = win.shape
    sy = max(dy for dy, _ in taps) - min(dy for dy, _ in taps)
    sx = max(dx for _, dx in taps) - min(dx for _, dx in taps)
    oy, ox = min(dy for dy, _ in taps), min(dx for _, dx in taps)
    out = np.zeros((n, h - sy, w - sx, c))
    for (dy, dx), weight in taps.items():
        out += weight * win[:, dy - oy : dy - oy + h - sy, dx - ox : dx - ox + w - sx]
    return out


def _autocov(e: np.ndarray, offsets: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Sums of e(p)·e(p + d) over each window's pixels, per channel, and pair counts per window: (N, D, C), (D,)."""
    n, h, w, c = e.shape
    sums = np.zeros((n, len(offsets), c))
    counts = np.zeros(len(offsets))
    for i, (dy, dx) in enumerate(offsets):
        a = e[:, : h - dy, max(0, -dx) : w - max(0, dx)]
        b = e[:, dy:, max(0, dx) : w - max(0, -dx)]
        sums[:, i] = np.einsum("nhwc,nhwc->nc", a, b)
        counts[i] = a.shape[1] * a.shape[2]
    return sums, counts


def _cross_autocov(e: np.ndarray, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """Symmetrised cross products ½(e_c(p)·e_k(p + d) + e_k(p)·e_c(p + d)) summed over each window's pixels, per
    pair of channels c < k (``np.triu_indices(C, 1)`` order): (N, D, C(C−1)/2); pair counts as ``_autocov``'s."""
    n, h, w, c = e.shape
    first, second = np.triu_indices(c, 1)
    sums = np.zeros((n, len(offsets), len(first)))
    for i, (dy, dx) in enumerate(offsets):
        a = e[:, : h - dy, max(0, -dx) : w - max(0, dx)]
        b = e[:, dy:, max(0, dx) : w - max(0, -dx)]
        m = np.matmul(a.reshape(n, -1, c).transpose(0, 2, 1), b.reshape(n, -1, c))  # (N, C, C)
        sums[:, i] = 0.5 * (m[:, first, second] + m[:, second, first])
    return sums


def _full_map(values: np.ndarray, radius: int) -> np.ndarray:
    """(D, C) values on the half offsets -> (2K+1, 2K+1, C) symmetric map."""
    out = np.zeros((2 * radius + 1, 2 * radius + 1, values.shape[1]))
    for (dy, dx), v in zip(_half_offsets(radius), values, strict=True):
        out[radius + dy, radius + dx] = v
        out[radius - dy, radius - dx] = v
    return out


def _result(
    cov: np.ndarray, cross: np.ndarray, radius: int, threshold: float, windows: int
) -> NoiseCorrelation:
    """NoiseCorrelation from the autocovariance (D, C) and the cross-covariance of channel pairs (D, C(C−1)/2) on
    the half offsets (offset 0 first)."""
    var = cov[0]
    if not np.all(var > 1e-12):
        raise ValueError(
            "no measurable noise (variance ~0 in some channel): the images look clean or constant"
        )
    full = _full_map(cov, radius)
    rho_c = full / var
    rho = full.sum(axis=2) / var.sum()
    channel_cov = np.diag(var)
    first, second = np.triu_indices(len(var), 1)
    channel_cov[first, second] = channel_cov[second, first] = cross[0]
    return NoiseCorrelation(
        sigma=float(np.sqrt(var.mean()) * 255.0),
        sigma_per_channel=tuple(float(s) for s in np.sqrt(var) * 255.0),
        rho=rho,
        rho_per_channel=np.moveaxis(rho_c, 2, 0),
        channel_cov=channel_cov * 255.0**2,
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


def _frame_energy(regions: np.ndarray, lag: int) -> np.ndarray:
    """Mean squared difference at ``lag`` (along y and x) between pixel pairs inside each region's frame: (N,)."""
    size = regions.shape[1]
    frame = np.ones((size, size), dtype=bool)
    frame[FRAME : size - FRAME, FRAME : size - FRAME] = False
    total = np.zeros(len(regions))
    for axis in (1, 2):
        ahead = np.take(regions, np.arange(lag, size), axis=axis)
        behind = np.take(regions, np.arange(size - lag), axis=axis)
        pair = np.take(frame, np.arange(lag, size), axis=axis - 1) & np.take(
            frame, np.arange(size - lag), axis=axis - 1
        )
        total += ((ahead - behind) ** 2)[:, pair].mean(axis=(1, 2))
    return total


def _candidates(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame energy (N,), mean brightness (N,), windows (N, WINDOW, WINDOW, C) float64) of up to
    MAX_WINDOWS_PER_IMAGE regions; clipped windows get an infinite energy.

    An image with more regions has them drawn with an explicit seeded numpy Generator, so memory stays
    bounded: a 24-MP photo costs ~40 MB beyond its pixels."""
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {image.shape}")
    h, w, c = image.shape
    region = WINDOW + 2 * (GAP + FRAME)
    ny, nx = h // region, w // region
    if ny * nx == 0:
        return np.zeros(0), np.zeros(0), np.zeros((0, WINDOW, WINDOW, c))
    cells = np.arange(ny * nx)
    if cells.size > MAX_WINDOWS_PER_IMAGE:
        cells = np.sort(rng.choice(cells, size=MAX_WINDOWS_PER_IMAGE, replace=False))
    top, left = (h - ny * region) // 2, (w - nx * region) // 2  # centred grid
    regions = np.stack(
        [
            _as_unit(image[top + (i // nx) * region :, left + (i % nx) * region :][:region, :region])
            for i in cells
        ]
    )
    energy = _frame_energy(regions, TEXTURE_LAG)
    o = FRAME + GAP
    win = regions[:, o : o + WINDOW, o : o + WINDOW]
    clipped = ((win <= 0.0) | (win >= 1.0)).mean(axis=(1, 2, 3))
    energy[clipped > CLIPPED_FRACTION] = np.inf
    return energy, regions.mean(axis=(1, 2, 3)), win


def _relative_energy(energy: np.ndarray, brightness: np.ndarray) -> np.ndarray:
    """Each finite frame energy over the noise floor at its brightness (inf stays inf).

    The floor is a line in brightness (the noise variance a·x + b of ssdn.noise.estimate, roughly, seen through
    the camera's tone curve) through the bins' ``FLOOR_QUANTILE`` energies, refitted twice on the bins at or
    below it: a bin made only of textured windows lies above the line instead of setting its own floor.
    """
    finite = np.isfinite(energy)
    out = np.full_like(energy, np.inf)
    if not finite.any():
        return out
    e, m = energy[finite], brightness[finite]
    edges = np.quantile(m, np.linspace(0, 1, BRIGHTNESS_BINS + 1)[1:-1])
    bins = np.searchsorted(edges, m)
    centres = np.array([m[bins == k].mean() for k in np.unique(bins)])
    floors = np.array([np.quantile(e[bins == k], FLOOR_QUANTILE) for k in np.unique(bins)])
    design = np.stack([np.ones_like(centres), centres], axis=1)
    keep = np.ones(len(floors), dtype=bool)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(design[keep], floors[keep], rcond=None)
        line = design @ coef
        keep = floors <= line * 1.000001
        if keep.sum() < 2:
            break
    floor = np.maximum(coef[0] + coef[1] * m, max(0.1 * float(floors.min()), 1e-20))
    out[finite] = e / floor
    return out


def _detrended(e: np.ndarray) -> np.ndarray:
    """e (N, H, W, C) less its least-squares plane per window and channel.

    The difference of a smooth (quadratic) shading is a plane, whose products at every offset would read as
    positive correlation; removing 3 of ~1000 degrees of freedom biases ρ by ≈ −0.003.
    """
    n, h, w, c = e.shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    basis = np.stack([np.ones(h * w), yy.ravel(), xx.ravel()], axis=1)  # orthogonal on the grid
    basis /= np.linalg.norm(basis, axis=0)
    flat = e.reshape(n, h * w, c)
    return (flat - basis @ np.einsum("pk,npc->nkc", basis, flat)).reshape(e.shape)


def _window_sums(
    win: np.ndarray, offsets: Sequence[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window, residual products summed per filter and offset: (N, F·D, C), the symmetrised cross products
    of channel pairs (N, F·D, C(C−1)/2), and pair counts (F·D,)."""
    sums, cross, counts = [], [], []
    for taps in _DIFFERENCES:
        e = _detrended(_filtered(win, taps))
        s, n = _autocov(e, offsets)
        sums.append(s)
        cross.append(_cross_autocov(e, offsets))
        counts.append(n)
    return np.concatenate(sums, axis=1), np.concatenate(cross, axis=1), np.concatenate(counts)


def estimate_correlation(
    images: Iterable[np.ndarray],
    radius: int = RADIUS,
    threshold: float = RHO_THRESHOLD,
    seed: int = 0,
) -> NoiseCorrelation:
    """Noise level and autocorrelation of noisy (H, W, C) images (float in [0, 1], or uint8/uint16).

    The flattest ``FLAT_FRACTION`` of the candidate windows of all images together are used, so an image that
    is textured everywhere contributes few or none. Images smaller than ``WINDOW + 2·(GAP + FRAME)`` pixels
    on a side contribute nothing. Raises ValueError when no image is large enough or no noise is measurable.
    """
    if radius < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    rng = np.random.default_rng(seed)
    offsets = _half_offsets(radius + 1)
    energies, brightness, sums, crosses = [], [], [], []
    counts = np.zeros(0)
    for image in images:
        energy, mean, win = _candidates(image, rng)
        if len(win):
            s, cross, counts = _window_sums(win, offsets)
            energies.append(energy)
            brightness.append(mean)
            sums.append(s)
            crosses.append(cross)
    if not sums:
        raise ValueError(
            f"no image is large enough: each side must be at least {WINDOW + 2 * (GAP + FRAME)} pixels"
        )
    energy = _relative_energy(np.concatenate(energies), np.concatenate(brightness))
    all_sums = np.concatenate(sums)
    usable = int(np.isfinite(energy).sum())
    keep = max(min(MIN_WINDOWS, usable), round(FLAT_FRACTION * usable))
    if keep == 0:
        raise ValueError("every window is clipped (values at 0 or at the maximum): no noise can be measured")
    flattest = np.argsort(energy, kind="stable")[:keep]
    observed = all_sums[flattest].sum(axis=0) / (keep * counts[:, None])
    design = _design(radius)
    cov, *_ = np.linalg.lstsq(design, observed, rcond=None)
    # A solve of its own: the per-channel figures stay what they were before cross-channel ones were added.
    observed_cross = np.concatenate(crosses)[flattest].sum(axis=0) / (keep * counts[:, None])
    cross, *_ = np.linalg.lstsq(design, observed_cross, rcond=None)
    return _result(cov, cross, radius, threshold, keep)


def noise_correlation(
    noise: Iterable[np.ndarray], radius: int = RADIUS, threshold: float = RHO_THRESHOLD
) -> NoiseCorrelation:
    """The true autocorrelation of known noise arrays (H, W, C) in [0, 1] units, e.g. noisy − clean.

    For checking ``estimate_correlation`` on simulated data: every pixel pair is used, per-channel means
    removed (clipping makes the noise mean depend on the image).
    """
    offsets = _half_offsets(radius)
    total: np.ndarray | None = None
    total_cross: np.ndarray | None = None
    pairs = np.zeros(len(offsets))
    for n in noise:
        e = np.asarray(n, dtype=np.float64)
        e = (e - e.mean(axis=(0, 1), keepdims=True))[None]
        s, c = _autocov(e, offsets)
        x = _cross_autocov(e, offsets)
        total = s[0] if total is None else total + s[0]
        total_cross = x[0] if total_cross is None else total_cross + x[0]
        pairs += c
    if total is None or total_cross is None:
        raise ValueError("no noise arrays given")
    return _result(total / pairs[:, None], total_cross / pairs[:, None], radius, threshold, windows=0)


# ---------------------------------------------------------------------------------------------- recommend

FOI_CROP = 512
"""Side of the centre crop of each image on which the variance-vs-brightness line is fitted (bounded time)."""

SIGNAL_DEPENDENT_FRACTION = 0.25
"""Recommend ``poisson_gaussian`` when the signal-dependent term a·x is at least this share of the variance at
mid-grey (x = 0.5). Below it the noise std varies by less than ±13% from black to white (σ² = b to a + b), which
a Gaussian model with one learned σ absorbs; above it one σ is wrong in the shadows or the highlights."""


MIN_INTENSITY_SPAN = 0.25
"""Recommend ``poisson_gaussian`` only when the variance line's bins span at least this much of [0, 1]. On
images of one brightness (a flat field, a dim fluorescence background) every bin has about the same mean, so the
slope a and the offset b cannot be told apart and the split between them is noise: one learned σ is then the
model that cannot be wrong about what was never seen."""


CHANNEL_RHO_THRESHOLD = 0.35
"""Recommend ``gaussian_channels`` for RGB images whose noise is not signal-dependent when the mean correlation
between the channels' noise at a pixel (``NoiseCorrelation.channel_correlation``) exceeds this. Why 0.35: the
simulated camera's noise has 0.53-0.70 (0.64 over its 100 iso1600 test crops, measured 0.79: image structure
left in the flattest windows is common to R, G, B and reads as positive correlation), while independent noise
added to photos measures ≤ 0.07 at σ = 10-50 on KODAK and σ = 25-50 on 256² bsd300 crops, 0.11 with
Poisson–Gaussian a = 0.01, b = (5/255)² there, but 0.27 at σ = 10 and 0.59 at σ = 5 on those JPEG crops (the
regime where the spatial verdict errs too: ρ(0, 1) = 0.18 and 0.40). Above 0.35 the common part is at least a
third of the noise variance, which σ²·I would leave in the posterior mean as signal."""


@dataclass(frozen=True)
class VarianceLine:
    """Var[y | x] = a·x + b fitted over intensity bins, and the brightness range [low, high] those bins cover
    (the range over which the fit says anything)."""

    a: float
    b: float
    low: float
    high: float

    @property
    def span(self) -> float:
        return self.high - self.low


def signal_dependence(images: Iterable[np.ndarray]) -> VarianceLine:
    """Var[y | x] = a·x + b pooled over images (H, W, C), ssdn.noise.estimate's binned PCA fit.

    Under correlated noise the PCA variances are too low, but by about the same factor in every intensity bin
    (the correlation's shape does not depend on brightness), so the share a·x / (a·x + b) is still right.
    """
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for image in images:
        h, w, _ = image.shape
        top, left = max(0, (h - FOI_CROP) // 2), max(0, (w - FOI_CROP) // 2)
        crop = _as_unit(image[top : top + FOI_CROP, left : left + FOI_CROP])
        try:
            parts.append(binned_variances(torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))))
        except ValueError:  # smaller than a patch
            continue
    means, variances, counts = (
        torch.cat([p[i] for p in parts]) if parts else torch.zeros(0) for i in range(3)
    )
    a, b = fit_variance_line(means, variances, counts)
    return VarianceLine(a, b, float(means.min()), float(means.max()))


@dataclass(frozen=True)
class Recommendation:
    """A noise model and blind-spot settings for training on these noisy images alone.

    ``alternatives`` are complete override lists for ``train.py``, best first: for independent noise the
    paper's 1-pixel blind spot; for correlated noise a blind square covering the correlation (TM-BSN; for a
    correlation over 1 px trained with the 3×3 square and denoised with the 1-pixel one, which gained 0.1–0.6 dB
    over either on the simulated camera) or pixel-shuffle sub-images whose pixels lie farther apart than it
    reaches (AP-BSN).
    """

    noise: str
    noise_reason: str
    a: float
    b: float
    blind_hole: int
    pd_stride: int
    blind_spot_applies: bool
    alternatives: tuple[tuple[str, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "noise": self.noise,
            "noise_reason": self.noise_reason,
            "a": self.a,
            "b": self.b,
            "blind_hole": self.blind_hole,
            "pd_stride": self.pd_stride,
            "blind_spot_applies": self.blind_spot_applies,
            "overrides": [list(a) for a in self.alternatives],
        }


def recommend(correlation: NoiseCorrelation, line: VarianceLine) -> Recommendation:
    """Noise model from the variance line and the channel correlation, blind region from the correlation's
    extent."""
    noise, reason = noise_model_for(line, correlation)
    base = ("data.add_noise=false", f"noise={noise}", "noise_params=sigma_global")
    extent = correlation.extent
    hole, stride = 2 * extent + 1, extent + 1
    if extent == 0:
        alternatives: tuple[tuple[str, ...], ...] = ((*base, "method.blind_hole=1", "method.pd_stride=1"),)
    else:
        square: tuple[str, ...] = (*base, f"method.blind_hole={hole}")
        if (
            extent == 1
        ):  # trained blind to the nearest ring, denoising with it measured better (bench/README.md)
            square = (*square, "method.blind_hole_infer=1")
        alternatives = (square, (*base, f"method.pd_stride={stride}"))
    return Recommendation(
        noise=noise,
        noise_reason=reason,
        a=line.a,
        b=line.b,
        blind_hole=hole,
        pd_stride=stride,
        blind_spot_applies=extent == 0,
        alternatives=alternatives,
    )


def noise_model_for(line: VarianceLine, correlation: NoiseCorrelation | None = None) -> tuple[str, str]:
    """(``noise`` setting, why) from the variance line: Poisson–Gaussian when the signal-dependent share at
    mid-grey reaches `SIGNAL_DEPENDENT_FRACTION` over a brightness range of at least `MIN_INTENSITY_SPAN`;
    otherwise, with ``correlation`` of RGB noise whose channels correlate above `CHANNEL_RHO_THRESHOLD`, the
    channel-correlated Gaussian model; else one Gaussian σ."""
    if line.span < MIN_INTENSITY_SPAN:
        noise = "gaussian"
        reason = (
            f"the images span brightness {line.low:.2f}-{line.high:.2f} only, too narrow to tell whether the "
            "noise grows with brightness; a Gaussian model is the safe choice (use noise=poisson_gaussian if "
            "the data are photon counts)"
        )
    else:
        mid = 0.5 * line.a
        share = mid / (mid + line.b) if mid + line.b > 0 else 0.0
        verdict = "at least" if share >= SIGNAL_DEPENDENT_FRACTION else "below"
        reason = (
            f"signal-dependent share of the variance at mid-grey {share:.0%}, {verdict} "
            f"{SIGNAL_DEPENDENT_FRACTION:.0%}, over brightness {line.low:.2f}-{line.high:.2f}"
        )
        if share >= SIGNAL_DEPENDENT_FRACTION:
            return "poisson_gaussian", reason
        noise = "gaussian"
    if correlation is None or correlation.channel_cov.shape[0] != 3:
        return noise, reason
    r = correlation.channel_correlation
    if r > CHANNEL_RHO_THRESHOLD:
        return "gaussian_channels", (
            f"{reason}; the channels' noise at a pixel correlates by {r:.2f} on average, above "
            f"{CHANNEL_RHO_THRESHOLD}: much of it is common to R, G, B (demosaiced camera noise)"
        )
    return noise, f"{reason}; channel correlation {r:.2f}, at most {CHANNEL_RHO_THRESHOLD}"
