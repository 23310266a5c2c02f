"""Real noisy/clean pairs as the validation set of a noisy-only run: the SIDD layout, sibling folders, errors,
and PSNR against the clean partner in training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssdn.config.schema import DataSettings
from ssdn.data.datamodule import DenoisingDataModule
from ssdn.data.pairs import ImagePair, PairsError, find_pairs
from ssdn.noise import build_noise
from ssdn.train import run
from tests.conftest import compose_config
from tests.test_noisy_only import noisy_overrides, write_set


def _save(path: Path, seed: int, side: int = 64) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def test_sidd_scenes_and_sibling_folders_are_paired(tmp_path: Path) -> None:
    root = tmp_path / "val"
    for scene in ("0002_S6", "0001_GP"):
        _save(root / "Data" / scene / "NOISY_SRGB_010.PNG", 1)
        _save(root / "Data" / scene / "GT_SRGB_010.PNG", 2)
    _save(root / "phone" / "img-noisy.png", 3)  # lower case, CLEAN partner
    _save(root / "phone" / "img-clean.png", 4)
    _save(root / "phone" / "noisyish.png", 5)  # "noisy" inside a word: not a pair
    _save(root / "phone" / "cleanish.png", 6)
    _save(root / "crops" / "noisy" / "a.png", 7)
    _save(root / "crops" / "clean" / "a.png", 8)
    _save(root / "crops" / "noisy" / "b.png", 9)  # no clean b: skipped
    pairs = find_pairs(root)
    assert pairs == [
        ImagePair(root / "Data/0001_GP/NOISY_SRGB_010.PNG", root / "Data/0001_GP/GT_SRGB_010.PNG"),
        ImagePair(root / "Data/0002_S6/NOISY_SRGB_010.PNG", root / "Data/0002_S6/GT_SRGB_010.PNG"),
        ImagePair(root / "crops/noisy/a.png", root / "crops/clean/a.png"),
        ImagePair(root / "phone/img-noisy.png", root / "phone/img-clean.png"),
    ]
    assert find_pairs(root / "phone", recursive=False) == [pairs[3]]


def test_no_pairs_is_one_line_naming_the_setting_and_the_layouts(tmp_path: Path) -> None:
    _save(tmp_path / "clean-only" / "a.png", 0)
    with pytest.raises(PairsError, match=r"data\.val_dir=.*clean-only: no noisy/clean pairs found.*SIDD"):
        find_pairs(tmp_path / "clean-only")
    with pytest.raises(PairsError, match="folder not found"):
        find_pairs(tmp_path / "missing")


def _settings(train: Path, val: Path, **kw: object) -> DataSettings:
    return DataSettings(
        train_dir=train, val_dir=val, add_noise=False, crop_size=64, val_size=32, val_count=4, batch_size=1,
        in_memory=True, num_workers=0, **kw,
    )  # fmt: skip


def test_paired_validation_is_the_files_as_read_centre_cropped(tmp_path: Path) -> None:
    train = write_set(tmp_path / "train", "rgb8")
    noisy = _save(tmp_path / "val" / "noisy" / "a.png", 1)
    clean = _save(tmp_path / "val" / "clean" / "a.png", 2)
    _save(tmp_path / "val" / "noisy" / "small.png", 3, side=16)
    _save(tmp_path / "val" / "clean" / "small.png", 4, side=16)
    dm = DenoisingDataModule(_settings(train, tmp_path / "val"), noise=build_noise("gaussian", 25))
    with pytest.warns(UserWarning, match=r"skipped 1 pair\(s\) smaller than val_size=32: small\.png"):
        dm.setup("fit")
    val = dm._val
    assert val is not None and set(val) == {"clean", "noisy", "index"}
    assert torch.equal(
        val["noisy"][0], torch.from_numpy(noisy[16:48, 16:48].transpose(2, 0, 1) / np.float32(255))
    )
    assert torch.equal(
        val["clean"][0], torch.from_numpy(clean[16:48, 16:48].transpose(2, 0, 1) / np.float32(255))
    )
    assert dm.val_files == [tmp_path / "val" / "noisy" / "a.png"]


def test_a_pair_of_two_sizes_is_refused_naming_both_files(tmp_path: Path) -> None:
    train = write_set(tmp_path / "train", "rgb8")
    _save(tmp_path / "val" / "NOISY_1.png", 1, side=64)
    _save(tmp_path / "val" / "GT_1.png", 2, side=48)
    dm = DenoisingDataModule(_settings(train, tmp_path / "val"), noise=build_noise("gaussian", 25))
    with pytest.raises(
        PairsError, match=r"NOISY_1\.png \(64x64, 8-bit\) and its clean partner .*GT_1\.png \(48x48"
    ):
        dm.setup("fit")


def test_noisy_only_training_reports_psnr_against_the_pairs(tmp_path: Path) -> None:
    train = write_set(tmp_path / "train", "rgb8")
    clean = np.full((64, 64, 3), 128, np.uint8)
    Image.fromarray(clean).save(tmp_path / "val_clean.png")
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    (tmp_path / "pairs").mkdir()
    Image.fromarray(noisy).save(tmp_path / "pairs" / "NOISY_flat.png")
    Image.fromarray(clean).save(tmp_path / "pairs" / "GT_flat.png")
    overrides = noisy_overrides(train, f"data.val_dir={tmp_path / 'pairs'}", "data.val_size=32")
    metrics = run(compose_config(*overrides, output_dir=tmp_path / "run"))
    expected = 10 * np.log10(255**2 / np.mean((noisy[16:48, 16:48].astype(float) - 128) ** 2))
    assert metrics["val/psnr_noisy"] == pytest.approx(expected, abs=1e-3)
    assert "val/psnr" in metrics and "val/nll" not in metrics
