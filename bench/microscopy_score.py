"""One scoring convention for every denoiser on bench/microscopy.py's held-out volume (ssdn and CAREamics alike).

Why a module of its own, importing only numpy: the CAREamics baseline runs in its own environment (no ssdn, no
tifffile of ours), and the ssdn runs must score the same way, so the convention lives in one place both import.

The convention: a prediction is mapped back to photons, (ADU − offset) / gain with the camera constants of
``truth.json``, and compared with the clean expected photons by PSNR, no clipping on either side. The data range
(the "peak" of PSNR) is the level's peak plus its background, also from ``truth.json``: by construction of the
generator this is the clean volume's 99.9th percentile, so it describes the clean photons without letting a few
of the brightest voxels set it. A prediction in ssdn's [0, 1] units u = ADU / 65535 is brought to ADU first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

ADU_FULL_SCALE = 65535.0  # ssdn reads uint16 stacks as u = ADU / 65535


def adu_to_photons(adu: np.ndarray, offset: float, gain: float) -> np.ndarray:
    """Camera ADU (any float or integer array) to photons, in float64: (ADU − offset) / gain."""
    return (np.asarray(adu, np.float64) - offset) / gain


def unit_to_photons(u: np.ndarray, offset: float, gain: float) -> np.ndarray:
    """ssdn's [0, 1] units (u = ADU / 65535) to photons."""
    return adu_to_photons(np.asarray(u, np.float64) * ADU_FULL_SCALE, offset, gain)


def peak_photons(truth: Mapping[str, Any], level: str) -> float:
    """The PSNR data range of a level: its peak photons plus background (the clean volume's 99.9th percentile)."""
    entry = truth["levels"][level]
    return float(entry["peak_photons"]) + float(entry["background_photons"])


def psnr(pred: np.ndarray, clean: np.ndarray, peak: float) -> float:
    """PSNR in dB of ``pred`` against ``clean`` (same shape, photons), data range ``peak``, computed in float64."""
    pred64, clean64 = np.asarray(pred, np.float64), np.asarray(clean, np.float64)
    if pred64.shape != clean64.shape:
        raise ValueError(f"prediction shape {pred64.shape} differs from the clean volume's {clean64.shape}")
    mse = float(np.mean((pred64 - clean64) ** 2))
    return float(10.0 * np.log10(peak**2 / mse)) if mse > 0 else float("inf")


def score_adu(pred_adu: np.ndarray, clean_photons: np.ndarray, truth: Mapping[str, Any], level: str) -> float:
    """PSNR (dB) of a prediction in camera ADU against the clean photons of ``level``, by the convention above."""
    camera = truth["camera"]
    photons = adu_to_photons(pred_adu, float(camera["offset"]), float(camera["gain"]))
    return psnr(photons, clean_photons, peak_photons(truth, level))


def coverage(
    pred_adu: np.ndarray, std_adu: np.ndarray, clean_photons: np.ndarray, truth: Mapping[str, Any], k: float
) -> float:
    """Share of voxels whose clean photons lie within ``k`` posterior stds of the prediction (both from ADU):
    an honest Gaussian posterior gives 0.683 at k = 1 and 0.954 at k = 2."""
    camera = truth["camera"]
    gain = float(camera["gain"])
    photons = adu_to_photons(pred_adu, float(camera["offset"]), gain)
    err = np.abs(photons - np.asarray(clean_photons, np.float64))
    return float(np.mean(err <= k * np.asarray(std_adu, np.float64) / gain))
