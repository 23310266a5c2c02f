"""bench/microscopy_score.py: the one PSNR convention every denoiser on the synthetic microscopy set is scored by."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "bench"))

import microscopy_score as score  # a module under bench/, imported by path

TRUTH = {
    "camera": {"offset": 100.0, "gain": 2.0},
    "levels": {"low": {"peak_photons": 20.0, "background_photons": 1.0}},
}


def test_adu_and_unit_scale_map_to_photons():
    adu = np.array([100, 102, 140], np.uint16)
    np.testing.assert_array_equal(score.adu_to_photons(adu, 100.0, 2.0), [0.0, 1.0, 20.0])
    assert score.adu_to_photons(adu, 100.0, 2.0).dtype == np.float64  # no uint16 wrap-around below the offset
    np.testing.assert_array_equal(score.adu_to_photons(np.array([98]), 100.0, 2.0), [-1.0])
    np.testing.assert_allclose(score.unit_to_photons(adu / 65535.0, 100.0, 2.0), [0.0, 1.0, 20.0], atol=1e-9)


def test_peak_is_level_peak_plus_background():
    assert score.peak_photons(TRUTH, "low") == 21.0


def test_psnr_exact_values():
    clean = np.zeros((2, 2))
    # every voxel off by 1 photon: MSE 1, PSNR = 20 log10(peak)
    assert score.psnr(clean + 1.0, clean, 10.0) == pytest.approx(20.0, abs=1e-12)
    # one voxel of four off by 2: MSE 1 again
    pred = clean.copy()
    pred[0, 0] = 2.0
    assert score.psnr(pred, clean, 100.0) == pytest.approx(40.0, abs=1e-12)
    assert score.psnr(clean, clean, 1.0) == float("inf")
    with pytest.raises(ValueError, match="differs"):
        score.psnr(np.zeros(3), np.zeros(4), 1.0)


def test_score_adu_goes_through_photons_and_is_not_clipped():
    clean = np.full((1, 2, 2), 10.0, np.float32)
    # ADU 100 + 2·(10 ± 1) → photons 10 ± 1: MSE 1, peak 21 → 20 log10(21)
    pred = np.array([[[122.0, 118.0], [122.0, 118.0]]])
    assert score.score_adu(pred, clean, TRUTH, "low") == pytest.approx(20 * np.log10(21.0), abs=1e-12)
    # below the offset (negative photons) counts in full: photons −10 vs 10, error 20 everywhere
    assert score.score_adu(np.full((1, 2, 2), 80.0), clean, TRUTH, "low") == pytest.approx(
        20 * np.log10(21.0 / 20.0), abs=1e-12
    )


def test_coverage_counts_voxels_within_k_stds_in_photons():
    clean = np.full((1, 2, 2), 10.0)
    # ADU 100 + 2·(10 + e) with e = 0.5, 1.5, -2.5, 3.5 photons; std 2 ADU = 1 photon
    pred = 100.0 + 2.0 * (10.0 + np.array([[[0.5, 1.5], [-2.5, 3.5]]]))
    std = np.full((1, 2, 2), 2.0)
    assert score.coverage(pred, std, clean, TRUTH, 1.0) == 0.25
    assert score.coverage(pred, std, clean, TRUTH, 2.0) == 0.5
    assert score.coverage(pred, std, clean, TRUTH, 4.0) == 1.0
