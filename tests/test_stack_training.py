"""Training a 2-D model on the planes of microscopy stacks (``data.axes``): the listing, the crops, independent
channels, held-out stacks, the level's estimation images, the CLI and the axes stored in the checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from ssdn.config.schema import ConfigError, DataSettings
from ssdn.data.crops import RandomCropStream
from ssdn.data.datamodule import DenoisingDataModule
from ssdn.data.sources import DataSourceError
from ssdn.data.stack_planes import PLANE_CACHE
from ssdn.data.stacks import Stack
from ssdn.denoise import main as denoise_main
from ssdn.inference.stacks import trained_axes
from ssdn.training.checkpoints import read_checkpoint
from tests.cli_subprocess import TINY_CLI, clean_env, train_cli
from tests.conftest import unit16

SIDE = 64


def write_stacks(folder: Path, count: int = 2, planes: int = 3, dtype: type = np.uint16) -> list[np.ndarray]:
    """``count`` ZYX stacks of ``planes`` random planes, as multi-page TIFFs that do not name their axes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    top = np.iinfo(dtype).max
    stacks = [rng.integers(0, top, (planes, SIDE, SIDE), dtype=dtype) for _ in range(count)]
    for i, data in enumerate(stacks):
        tifffile.imwrite(folder / f"s{i}.tif", data, photometric="minisblack")
    return stacks


def settings(folder: Path, **over: object) -> DataSettings:
    values: dict = dict(
        train_dir=folder, add_noise=False, axes="ZYX", crop_size=SIDE, val_size=32, val_count=0,
        batch_size=8, channels=1, num_workers=0,
    )  # fmt: skip
    return DataSettings(**(values | over))


def test_listing_yields_every_plane_of_every_stack(tmp_path: Path) -> None:
    stacks = write_stacks(tmp_path / "s")
    stream = RandomCropStream(settings(tmp_path / "s"))
    assert stream.stacked and stream.item_count == 6
    assert stream.files == [tmp_path / "s" / "s0.tif", tmp_path / "s" / "s1.tif"]
    assert [stream.item_name(k) for k in (0, 5)] == [
        f"{tmp_path / 's' / 's0.tif'}[Z=0]",
        f"{tmp_path / 's' / 's1.tif'}[Z=2]",
    ]
    for k in range(6):
        assert np.array_equal(stream.pixels(k)[:, :, 0], stacks[k // 3][k % 3])
    assert stream.describe()["axes"] == "ZYX" and stream.describe()["planes"] == 6


def test_crops_come_from_several_planes_read_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stacks = write_stacks(tmp_path / "s")
    monkeypatch.setattr(Stack, "read", lambda self: pytest.fail("a crop read a whole stack"))
    stream = RandomCropStream(settings(tmp_path / "s"))
    batch = stream.batch(0)
    planes = batch["index"].tolist()
    assert batch["noisy"].shape == (8, 1, SIDE, SIDE) and len(set(planes)) >= 3
    for crop, k in zip(batch["noisy"], planes, strict=True):  # crop_size = the plane: the crop is the plane
        assert torch.equal(crop[0], torch.from_numpy(unit16(stacks[k // 3][k % 3])))
    assert len(stream._planes._kept) <= PLANE_CACHE  # type: ignore[union-attr]


def test_channels_independent_gives_one_channel_planes_of_each_channel(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 65535, (2, 2, SIDE, SIDE), dtype=np.uint16)  # Z, C, Y, X
    (tmp_path / "c").mkdir()
    tifffile.imwrite(tmp_path / "c" / "a.ome.tif", data, ome=True, metadata={"axes": "ZCYX"})
    stream = RandomCropStream(settings(tmp_path / "c", axes="ZCYX", channels_independent=True))
    assert stream.item_count == 4
    seen = {stream.item_name(k).rsplit("[", 1)[1] for k in range(4)}
    assert seen == {"Z=0,C=0]", "Z=0,C=1]", "Z=1,C=0]", "Z=1,C=1]"}
    for k in range(4):
        z, c = divmod(k, 2)
        assert stream.pixels(k).shape == (SIDE, SIDE, 1)
        assert np.array_equal(stream.pixels(k)[:, :, 0], data[z, c])
    assert stream.batch(0)["noisy"].shape == (8, 1, SIDE, SIDE)
    with pytest.raises(DataSourceError, match=r"has 2 channel\(s\).*channels_independent=true"):
        RandomCropStream(settings(tmp_path / "c", axes="ZCYX"))


def test_whole_stacks_are_held_out_and_the_level_is_estimated_from_planes(tmp_path: Path) -> None:
    stacks = write_stacks(tmp_path / "s", count=3)
    dm = DenoisingDataModule(settings(tmp_path / "s", val_count=1))
    dm.setup("fit")
    assert dm.train_stream is not None and dm._val is not None
    assert dm.val_files == [tmp_path / "s" / "s0.tif"] and dm.train_stream.item_count == 6
    middle = stacks[0][1, 16:48, 16:48]  # the held-out stack's middle plane, centre val_size² crop
    assert torch.equal(dm._val["noisy"][0, 0], torch.from_numpy(unit16(middle)))
    images = dm.estimation_images(3)
    expected = [stacks[1][0], stacks[1][2], stacks[2][2]]  # planes 0, 2.5 -> 2 (round half even), 5
    assert [im.shape for im in images] == [(1, SIDE, SIDE)] * 3
    for image, plane in zip(images, expected, strict=True):
        assert torch.equal(image[0], torch.from_numpy(unit16(plane)))
    # val_count counts planes: whole stacks are held out until they have as many, the planes spread over them
    dm = DenoisingDataModule(settings(tmp_path / "s", val_count=4))
    dm.setup("fit")
    assert dm.train_stream is not None and dm._val is not None
    assert dm.val_files == [tmp_path / "s" / "s0.tif", tmp_path / "s" / "s1.tif"]
    assert dm.train_stream.files == [tmp_path / "s" / "s2.tif"]
    for crop, (s, z) in zip(dm._val["noisy"][:, 0], [(0, 0), (0, 2), (1, 0), (1, 2)], strict=True):
        assert torch.equal(crop, torch.from_numpy(unit16(stacks[s][z, 16:48, 16:48])))
    with pytest.raises(DataSourceError, match=r"data\.val_count=7 plane\(s\) would take all 3 usable stack"):
        RandomCropStream(settings(tmp_path / "s", val_count=7))


def test_mixed_bit_depths_and_bad_settings_are_refused(tmp_path: Path) -> None:
    write_stacks(tmp_path / "m", count=1)
    tifffile.imwrite(tmp_path / "m" / "t.tif", np.zeros((2, SIDE, SIDE), np.uint8), photometric="minisblack")
    with pytest.raises(DataSourceError, match="train_dir: the stacks mix bit depths"):
        RandomCropStream(settings(tmp_path / "m"))
    with pytest.raises(ConfigError, match=r"data.axes='ZQYX' is not a valid axes string"):
        settings(tmp_path / "m", axes="ZQYX")
    with pytest.raises(ConfigError, match=r"set data\.add_noise=false"):
        settings(tmp_path / "m", add_noise=True)
    with pytest.raises(ConfigError, match=r"data\.channels_independent=true with data\.axes=ZYX: no C axis"):
        settings(tmp_path / "m", channels_independent=True)


def _cli(folder: Path, *extra: str) -> tuple[str, ...]:
    return (
        *TINY_CLI,
        "data=folder",
        f"data.train_dir={folder}",
        "data.add_noise=false",
        "data.num_workers=0",
        "channels=1",
        "noise=poisson_gaussian",
        "noise_params=sigma_global",
        "trainer=cpu",
        *extra,
    )


@pytest.mark.slow  # ~15 s: a training subprocess
def test_train_on_a_stack_folder_through_the_cli_then_denoise_with_its_axes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_stacks(tmp_path / "s", count=3)
    run_dir = tmp_path / "run"
    train_cli(*_cli(tmp_path / "s", "data.axes=ZYX", f"hydra.run.dir={run_dir}"), cwd=tmp_path)
    ckpt = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["ssdn_config"]["data"]["axes"] == "ZYX"
    assert ckpt["global_step"] == 2 and ckpt["ssdn_pixel_scale"]["bit_depth"] == 16
    # the files name no axes: without --axes the denoiser reads them with the checkpoint's data.axes
    capsys.readouterr()
    denoise_main([str(run_dir / "checkpoints" / "last.ckpt"), str(tmp_path / "s" / "s1.tif"),
                  "--out", str(tmp_path / "d"), "--device", "cpu"])  # fmt: skip
    assert "3 planes ZYX" in capsys.readouterr().out
    assert tifffile.imread(tmp_path / "d" / "s1.tif").shape == (3, SIDE, SIDE)


def test_the_denoiser_reads_the_trained_axes_from_the_run_config() -> None:
    assert trained_axes({"ssdn_config": {"data": {"axes": "zyx"}}}) == "ZYX"
    assert trained_axes({"ssdn_config": {"data": {"axes": None}}}) is None
    assert trained_axes({"ssdn_config": {"data": {}}}) is None  # a checkpoint from before data.axes


def test_a_bad_axes_setting_is_one_line_naming_the_key(tmp_path: Path) -> None:
    write_stacks(tmp_path / "s", count=1)
    args = _cli(tmp_path / "s", "data.axes=ZQYX", f"hydra.run.dir={tmp_path / 'r'}")
    proc = subprocess.run(
        [sys.executable, "-m", "ssdn.train", *args],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "data.axes='ZQYX'" in lines[0] and "Traceback" not in proc.stderr
