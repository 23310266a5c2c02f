"""bench/microscopy.py --small: the synthetic microscopy stacks and their truth follow the stated camera model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ssdn.data.stacks import read_stack
from tests.conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "bench"))

import microscopy  # a script under bench/, imported by path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("micro")
    microscopy.main(["--out", str(out), "--small", "--train", "2", "--seed", "3"])
    return out


def test_layout_dtype_axes_and_physical_sizes(dataset):
    cam = microscopy.Camera()
    sizes = {"Z": (cam.pixel_z_um, "µm"), "Y": (cam.pixel_xy_um, "µm"), "X": (cam.pixel_xy_um, "µm")}
    for level in ("low", "high"):
        files = sorted(p.relative_to(dataset / level).as_posix() for p in (dataset / level).rglob("*.tif"))
        assert files == [
            "test/heldout.ome.tif",
            "test/heldout_clean.ome.tif",
            "train/vol000.ome.tif",
            "train/vol001.ome.tif",
        ]
        noisy = read_stack(dataset / level / "test/heldout.ome.tif")
        clean = read_stack(dataset / level / "test/heldout_clean.ome.tif", counts=False)
        assert clean.axes == "ZYX" and clean.dtype == np.float32 and dict(clean.meta.physical_sizes) == sizes
        assert noisy.axes == "ZYX" and noisy.dtype == np.uint16 and noisy.shape == microscopy.SMALL_SHAPE
        assert dict(noisy.meta.physical_sizes) == sizes
    truth = json.loads((dataset / "truth.json").read_text())
    assert truth["camera"]["offset"] == cam.offset and truth["levels"]["low"]["peak_photons"] == 20.0


def _pair(dataset: Path, level: str) -> tuple[np.ndarray, np.ndarray]:
    noisy = read_stack(dataset / level / "test/heldout.ome.tif").read().astype(np.float64)
    clean = read_stack(dataset / level / "test/heldout_clean.ome.tif", counts=False).read().astype(np.float64)
    return noisy, clean


@pytest.mark.parametrize("level", ["low", "high"])
def test_noisy_counts_follow_the_camera_model(dataset, level):
    """(ADU − offset)/gain is unbiased for the clean photons, with variance photons + read noise + rounding."""
    cam = microscopy.Camera()
    noisy, clean = _pair(dataset, level)
    peak = microscopy.LEVELS[level]
    assert np.percentile(clean - cam.background_fraction * peak, cam.peak_percentile) == pytest.approx(
        peak, rel=1e-5
    )
    assert noisy.min() > 0  # the offset keeps the read noise away from 0: nothing was clipped
    photons = (noisy - cam.offset) / cam.gain
    extra = (cam.read_noise / cam.gain) ** 2 + 1 / (12 * cam.gain**2)  # read noise and integer rounding
    var = clean + extra
    # means and variances within 4 standard errors (fixed seed: deterministic, not flaky)
    assert abs(photons.mean() - clean.mean()) < 4 * np.sqrt(var.sum()) / clean.size
    bright = clean > np.percentile(clean, 90)
    assert abs(photons[bright].mean() - clean[bright].mean()) < 4 * np.sqrt(var[bright].sum()) / bright.sum()
    resid = photons - clean
    # Var of resid ≈ mean(var); its standard error ≈ sqrt(2/N)·mean(var) (Gaussian approximation)
    assert abs(resid.var() - var.mean()) < 4 * np.sqrt(2 / resid.size) * var.mean() + 0.05 * var.mean()


def test_same_seed_same_data_and_out_refused_inside_repo(dataset, tmp_path):
    again = tmp_path / "again"
    microscopy.main(["--out", str(again), "--small", "--train", "2", "--seed", "3"])
    for name in ("low/train/vol001.ome.tif", "high/test/heldout.ome.tif"):
        np.testing.assert_array_equal(read_stack(again / name).read(), read_stack(dataset / name).read())
    with pytest.raises(SystemExit, match="not git-ignored"):
        microscopy.main(["--out", str(PROJECT_ROOT / "ssdn" / "micro-data"), "--small"])
    assert not (PROJECT_ROOT / "ssdn" / "micro-data").exists()
