"""bench/camera_compare.py: the coverage count, the rows' settings and the set's checks (no training here)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from ssdn.errors import UserError
from tests.conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "bench"))

import camera_compare as cc  # a script under bench/, imported by path


def test_coverage_counts_exact_values_with_boundaries_inclusive() -> None:
    clean = np.zeros((1, 5, 1), np.uint8)
    pme = np.array([0, 1, 2, 3, 5], np.uint8).reshape(1, 5, 1)
    std = np.full((1, 5, 1), 1.5, np.float32)
    # |err| = 0, 1, 2, 3, 5 against σ = 1.5: two within σ, four within 2σ (3 ≤ 3 counts)
    assert cc.coverage_counts(pme, clean, std) == (2, 4, 5)


def test_coverage_counts_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        cc.coverage_counts(np.zeros((2, 2, 3)), np.zeros((2, 2, 3)), np.zeros((2, 2, 1)))


def test_psnr_of_is_the_projects_8_bit_psnr() -> None:
    clean = np.zeros((4, 4, 3), np.uint8)
    pred = clean.copy()
    pred[0, 0, 0] = 255  # MSE = 255² / 48 → PSNR = 10·log10(48)
    assert cc.psnr_of(pred, clean) == pytest.approx(10 * np.log10(48.0), abs=1e-12)


def test_rows_with_a_posterior_are_the_ssdn_ones_without_r3() -> None:
    table = cc.configs(cc.DEFAULT_BEST, best_r3=8)
    with_std = {n for n, c in table.items() if c.posterior}
    assert with_std == {
        n + suffix
        for n in ("plain", "hole3", "hole3-infer1", "hole5", "pd5", "best")
        for suffix in ("", "-ch")
    }
    infer1 = table["hole3-infer1-ch"]  # the hole3-ch model, denoised with --blind-hole 1
    assert (infer1.run, infer1.infer_hole, table["hole3-ch"].infer_hole) == ("hole3-ch", 1, None)
    assert table["hole3-ch"].overrides == ("method=ssdn", "method.blind_hole=3", "noise=gaussian_channels")
    assert table["pd5-r3-ch"].run == "pd5-ch" and "n2v-dense-ch" not in table
    assert table["n2v-dense"].overrides == ("method=n2v_random_dense", "optim.lr=3e-4")
    assert table["pd5-r3"].run == table["pd5"].run  # R³ re-denoises the pd5 model, no second training
    assert table["best"].overrides == ("method=ssdn", "method.blind_hole=3", "method.pd_stride=2")
    best_r3 = table["best-r3"]
    assert not best_r3.posterior and best_r3.r3_passes == 8 and best_r3.run == "best"


def test_budget_overrides() -> None:
    assert cc.budget_overrides(20.0, None) == ["train.minutes=20"]
    assert cc.budget_overrides(None, 64) == ["train.minutes=null", "train.images=64"]


def test_missing_set_is_one_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="build the set first"):
        cc.CameraSet.open(tmp_path, "iso1600", None)


def test_set_without_clean_references_is_refused(tmp_path: Path) -> None:
    for sub in ("train/noisy", "test/noisy", "test/clean"):
        (tmp_path / "iso1600" / sub).mkdir(parents=True)
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "iso1600" / "test" / "noisy" / "a.png")
    with pytest.raises(UserError, match="lacks clean references"):
        cc.CameraSet.open(tmp_path, "iso1600", None)


def test_learned_levels_of_one_or_several_parameters() -> None:
    assert cc._level(11.004) == "11.00"
    assert cc._level({"sigma_r": 10.0, "sigma_g": 6.26, "sigma_b": 11.0, "sigma_common": 13.0}) == (
        "r 10.0, g 6.3, b 11.0, common 13.0"
    )
    assert cc._level(None) == "–"
