"""bench/camera.py: the simulated camera's pipeline on tiny images (issue 27's benchmark generator)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from ssdn.noise.correlation import estimate_correlation
from tests.conftest import PROJECT_ROOT

pytest.importorskip("colour_demosaicing")  # the optional `bench` extra
sys.path.insert(0, str(PROJECT_ROOT / "bench"))

import camera  # a script under bench/, imported by path


def test_srgb_transfer_round_trips_every_8_bit_value() -> None:
    v = np.arange(256) / 255.0
    back = np.rint(camera.linear_to_srgb(camera.srgb_to_linear(v)) * 255.0)
    np.testing.assert_array_equal(back, np.arange(256))


def test_clean_pipeline_is_exact_on_flat_colours_and_deterministic() -> None:
    """A constant mosaic demosaics to the constant, so without noise a flat photo comes back unchanged."""
    flat = np.broadcast_to(np.array([200, 90, 30], np.uint8), (64, 64, 3)).copy()
    np.testing.assert_array_equal(camera.camera(flat, None), flat)
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(camera.camera(photo, None), camera.camera(photo, None))
    with pytest.raises(ValueError, match="Generator"):
        camera.camera(photo, camera.LEVELS["iso1600"])


def test_noisy_pipeline_is_seeded_and_its_noise_is_correlated() -> None:
    yy, xx = np.mgrid[0:128, 0:128] / 128
    photo = np.rint(np.stack([0.5 + 0.1 * xx, 0.45 + 0.1 * yy, 0.4 + 0.05 * xx * yy], -1) * 255)
    photo = photo.astype(np.uint8)
    level = camera.LEVELS["iso6400"]
    a = camera.camera(photo, level, camera.image_rng("iso6400", "test", 3))
    b = camera.camera(photo, level, camera.image_rng("iso6400", "test", 3))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, camera.camera(photo, level, camera.image_rng("iso6400", "test", 4)))
    clean = camera.camera(photo, None)
    assert 15 < camera.psnr(clean, a) < 25
    assert not estimate_correlation([a]).independent
