"""ssdn.eval.calibration: exact coverage and reliability on synthetic errors, accumulation, files on disk."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ssdn.eval.calibration import Calibration, gaussian_coverage, write_calibration


def test_coverage_and_bins_exact() -> None:
    """Errors of 0.5σ, 1σ (inside: the interval is closed), 1.5σ and 2.5σ: ±1σ holds 2/4, ±2σ 3/4 (powers
    of two, so the errors are exact in floating point)."""
    std = np.array([2.0**-7, 2.0**-7, 2.0**-4, 2.0**-4])
    pme = np.full(4, 0.5)
    clean = pme + np.array([0.5, -1.0, 1.5, 2.5]) * std
    cal = Calibration(edges=[1e-3, 0.05, 1.0])
    cal.update(clean, pme, std)
    r = cal.result()
    assert r["pixels"] == 4
    assert r["coverage"]["1sigma"]["observed"] == 0.5 and r["coverage"]["2sigma"]["observed"] == 0.75
    assert r["coverage"]["1sigma"]["gaussian"] == pytest.approx(0.682689492137, abs=1e-12)
    low, high = r["bins"]
    assert (low["count"], high["count"]) == (2, 2)
    assert low["mean_std"] == 2.0**-7 and high["rms_std"] == 2.0**-4
    assert low["mean_abs_error"] == 0.75 * 2.0**-7  # (0.5 + 1)·σ / 2
    assert high["rms_error"] == pytest.approx(2.0**-4 * math.sqrt((1.5**2 + 2.5**2) / 2), rel=1e-15)
    assert r["rms_error"] == pytest.approx(math.sqrt(np.mean((clean - pme) ** 2)), rel=1e-12)


def test_out_of_range_std_goes_to_the_end_bins_and_empty_bins_are_left_out() -> None:
    cal = Calibration(edges=[0.01, 0.02, 0.04, 0.08])
    std = torch.tensor([1e-4, 0.5])
    cal.update(torch.zeros(2), torch.zeros(2), std)
    bins = cal.result()["bins"]
    assert [(b["low"], b["count"]) for b in bins] == [(0.01, 1), (0.04, 1)]


def test_gaussian_errors_are_calibrated_and_accumulation_is_order_free() -> None:
    """Errors drawn with the predicted std: coverage within 4 binomial standard errors of erf(k/√2), and
    RMS error = RMS std per bin within 4 standard errors; two halves give the same counts as the whole."""
    g = torch.Generator().manual_seed(0)
    n = 400_000
    std = 0.002 + 0.1 * torch.rand(n, generator=g, dtype=torch.float64)
    pme = torch.rand(n, generator=g, dtype=torch.float64)
    clean = pme + std * torch.randn(n, generator=g, dtype=torch.float64)
    whole, halves = Calibration(), Calibration()
    whole.update(clean, pme, std)
    halves.update(clean[: n // 2], pme[: n // 2], std[: n // 2])
    halves.update(clean[n // 2 :], pme[n // 2 :], std[n // 2 :])
    r = whole.result()
    h = halves.result()
    assert [b["count"] for b in h["bins"]] == [b["count"] for b in r["bins"]]
    assert h["coverage"] == r["coverage"]
    for k in (1, 2):
        p = gaussian_coverage(k)
        assert abs(r["coverage"][f"{k}sigma"]["observed"] - p) <= 4 * math.sqrt(p * (1 - p) / n)
    for b in r["bins"]:
        if b["count"] > 10_000:  # E[e²] = σ², relative SE of the RMS ≈ 1/√(2·count)
            assert b["rms_error"] / b["rms_std"] == pytest.approx(1, abs=4 / math.sqrt(2 * b["count"]))


def test_errors_are_explicit() -> None:
    with pytest.raises(ValueError, match="one shape"):
        Calibration().update(np.zeros(3), np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="no pixels"):
        Calibration().result()
    with pytest.raises(ValueError, match="increasing"):
        Calibration(edges=[0.1, 0.1])


def test_write_calibration(tmp_path: Path) -> None:
    cal = Calibration()
    g = torch.Generator().manual_seed(1)
    std = 0.05 * torch.rand(3, 32, 32, generator=g) + 0.01
    cal.update(std * torch.randn(3, 32, 32, generator=g), torch.zeros(3, 32, 32), std)
    paths = write_calibration({"kodak": cal.result()}, tmp_path, {"checkpoint": "x.ckpt"})
    assert [p.name for p in paths] == ["calibration.json", "reliability.png"]
    data = json.loads(paths[0].read_text())
    assert data["checkpoint"] == "x.ckpt" and data["sets"]["kodak"]["pixels"] == 3 * 32 * 32
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    two = write_calibration({"a": cal.result(), "b": cal.result()}, tmp_path / "two")
    assert sorted(p.name for p in two[1:]) == ["reliability-a.png", "reliability-b.png"]
