"""Is the posterior std honest? Coverage of the ±kσ posterior intervals and a binned reliability curve.

A calibrated posterior std σ puts the clean value x inside pme ± σ for 68.3 % of pixels and inside ±2σ for 95.4 %
(if the posterior is Gaussian), and within each range of predicted σ the root-mean-square error |x − pme| equals
the root-mean-square σ. ``Calibration`` accumulates these counts over images (every pixel and channel counts
once), so a whole test set is summarised without keeping its pixels; ``write_calibration`` puts
``calibration.json`` and ``reliability.png`` in a folder. Values are in [0, 1] pixel units, plot axes in 8-bit.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ssdn.utils import atomic_write, atomic_write_json

__all__ = ["DEFAULT_EDGES", "Calibration", "gaussian_coverage", "plot_reliability", "write_calibration"]

DEFAULT_EDGES: tuple[float, ...] = tuple(float(e) for e in np.geomspace(1e-3, 1.0, 31))
"""Bin edges of the predicted std, log-spaced from 1e-3 (0.26 in 8-bit units) to 1; values outside fall
into the first or last bin."""


MIN_PLOT_COUNT = 100
"""Bins with fewer pixels are left out of the reliability plot."""


def gaussian_coverage(k: float) -> float:
    """P(|z| ≤ k) for z ~ N(0, 1): the ideal coverage of a ±kσ interval (0.6827 for k = 1, 0.9545 for 2)."""
    return math.erf(k / math.sqrt(2))


def _flat64(x: Tensor | np.ndarray) -> np.ndarray:
    return torch.as_tensor(x).detach().cpu().to(torch.float64).reshape(-1).numpy()


class Calibration:
    """Running coverage and reliability counts of (clean, pme, std) triples of equal shape."""

    def __init__(self, ks: Sequence[float] = (1.0, 2.0), edges: Sequence[float] = DEFAULT_EDGES) -> None:
        if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError(f"edges must be at least two increasing values, got {list(edges)}")
        self.ks = tuple(float(k) for k in ks)
        self.edges = np.asarray(edges, dtype=np.float64)
        bins = len(self.edges) - 1
        self.pixels = 0
        self.inside = np.zeros(len(self.ks), dtype=np.int64)
        self.count = np.zeros(bins, dtype=np.int64)
        self.sum_std = np.zeros(bins)
        self.sum_var = np.zeros(bins)
        self.sum_abs = np.zeros(bins)
        self.sum_sq = np.zeros(bins)

    def update(self, clean: Tensor | np.ndarray, pme: Tensor | np.ndarray, std: Tensor | np.ndarray) -> None:
        """Add one image or batch; the three must have one shape (e.g. (C, H, W) cropped to the image)."""
        if not (tuple(np.shape(clean)) == tuple(np.shape(pme)) == tuple(np.shape(std))):
            raise ValueError(
                f"clean, pme and std must have one shape, got {tuple(np.shape(clean))}, "
                f"{tuple(np.shape(pme))} and {tuple(np.shape(std))}"
            )
        x, m, s = _flat64(clean), _flat64(pme), _flat64(std)
        err = np.abs(x - m)
        self.pixels += err.size
        self.inside += np.array([np.count_nonzero(err <= k * s) for k in self.ks], dtype=np.int64)
        b = np.clip(np.searchsorted(self.edges, s, side="right") - 1, 0, len(self.count) - 1)
        self.count += np.bincount(b, minlength=len(self.count))
        self.sum_std += np.bincount(b, weights=s, minlength=len(self.count))
        self.sum_var += np.bincount(b, weights=s * s, minlength=len(self.count))
        self.sum_abs += np.bincount(b, weights=err, minlength=len(self.count))
        self.sum_sq += np.bincount(b, weights=err * err, minlength=len(self.count))

    def result(self) -> dict[str, Any]:
        """Coverage per k (with the Gaussian ideal), overall RMS std/error, and the non-empty bins."""
        if self.pixels == 0:
            raise ValueError("no pixels: call update() with at least one image first")
        n = self.count
        used = n > 0
        bins = [
            {
                "low": float(self.edges[i]),
                "high": float(self.edges[i + 1]),
                "count": int(n[i]),
                "mean_std": float(self.sum_std[i] / n[i]),
                "rms_std": float(math.sqrt(self.sum_var[i] / n[i])),
                "mean_abs_error": float(self.sum_abs[i] / n[i]),
                "rms_error": float(math.sqrt(self.sum_sq[i] / n[i])),
            }
            for i in np.flatnonzero(used)
        ]
        return {
            "units": "[0, 1] pixel values",
            "pixels": int(self.pixels),
            "coverage": {
                f"{k:g}sigma": {"observed": float(c / self.pixels), "gaussian": gaussian_coverage(k)}
                for k, c in zip(self.ks, self.inside, strict=True)
            },
            "rms_std": float(math.sqrt(self.sum_var.sum() / self.pixels)),
            "rms_error": float(math.sqrt(self.sum_sq.sum() / self.pixels)),
            "bins": bins,
        }


def write_calibration(
    per_set: Mapping[str, dict[str, Any]], out_dir: str | Path, info: Mapping[str, Any] | None = None
) -> list[Path]:
    """``calibration.json`` (``info``, e.g. the checkpoint, and ``Calibration.result()`` per set) and a
    reliability plot per set: ``reliability.png`` for one set, ``reliability-<set>.png`` for several.
    Each file is written atomically; returns the paths written."""
    if not per_set:
        raise ValueError("no calibration results to write")
    out = Path(out_dir)
    paths = [out / "calibration.json"]
    atomic_write_json(paths[0], {**(info or {}), "sets": dict(per_set)})
    for name, data in per_set.items():
        png = "reliability.png" if len(per_set) == 1 else f"reliability-{name}.png"
        paths.append(plot_reliability(data, out / png))
    return paths


def plot_reliability(data: dict[str, Any], path: str | Path) -> Path:
    """Observed error against predicted std per bin (8-bit units, log–log), with the calibrated diagonals:
    RMS error = RMS std, and mean |error| = √(2/π)·mean std for a Gaussian posterior."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    # Bins of a handful of pixels only add noise to the picture (calibration.json keeps them all).
    bins = [b for b in data["bins"] if b["count"] >= MIN_PLOT_COUNT] or data["bins"]
    rms_std = np.array([b["rms_std"] for b in bins]) * 255
    mean_std = np.array([b["mean_std"] for b in bins]) * 255
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    lo, hi = min(rms_std.min(), mean_std.min()) / 1.5, max(rms_std.max(), mean_std.max()) * 1.5
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="calibrated (RMS)")
    ax.plot(
        [lo, hi],
        [lo * math.sqrt(2 / math.pi), hi * math.sqrt(2 / math.pi)],
        "k:",
        lw=1,
        label="calibrated (mean |error|, Gaussian)",
    )
    ax.plot(rms_std, np.array([b["rms_error"] for b in bins]) * 255, "o-", label="RMS error")
    ax.plot(mean_std, np.array([b["mean_abs_error"] for b in bins]) * 255, "s-", ms=4, label="mean |error|")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="predicted posterior std (8-bit units)",
        ylabel="observed error |x − pme| (8-bit units)",
    )
    cov = data["coverage"]
    title = ", ".join(f"±{k.replace('sigma', 'σ')}: {v['observed']:.1%}" for k, v in cov.items())
    ax.set_title(f"inside the posterior interval: {title}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    atomic_write(out, lambda fh: fig.savefig(fh, format="png", dpi=110))
    return out
