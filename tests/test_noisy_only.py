"""Training on noisy photos alone (data.add_noise=false): loading at the file's depth, held-out noisy validation
scored by val/nll, the level initialised from the data, and denoising with the learned level."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import numpy as np
import png
import pytest
import tifffile
import torch
from omegaconf import OmegaConf
from PIL import Image

from ssdn.config.compose import ConfigError
from ssdn.config.run import RunConfig
from ssdn.config.schema import DataSettings
from ssdn.data.datamodule import DenoisingDataModule
from ssdn.data.intensity import Intensity
from ssdn.data.io import check_one_bit_depth, load_native
from ssdn.denoise import main as denoise_main
from ssdn.noise import build_noise
from ssdn.train import run
from ssdn.training.checkpoints import read_checkpoint
from ssdn.training.initial_level import initialise_level
from ssdn.training.module import DenoiserModule
from tests.cli_subprocess import logged_losses, train_cli
from tests.conftest import TINY, compose_config

SIDE = 64


def _noisy(rng: np.random.Generator, channels: int, peak: int, sigma: float) -> np.ndarray:
    """A smooth ramp plus Gaussian noise of ``sigma`` (in units of ``peak``), rounded and clipped to 0..peak."""
    ramp = np.linspace(0.3, 0.7, SIDE)[None, :, None] * np.ones((SIDE, 1, channels))
    return np.clip(np.rint(ramp * peak + rng.normal(0, sigma, ramp.shape)), 0, peak)


def _write_png16(path: Path, pixels: np.ndarray) -> None:
    h, w, c = pixels.shape
    with path.open("wb") as f:
        png.Writer(w, h, greyscale=c == 1, bitdepth=16).write(f, pixels.astype(np.uint16).reshape(h, w * c))


def write_set(folder: Path, kind: str, count: int = 4, sigma8: float = 25.0) -> Path:
    """``count`` noisy files: rgb8 (8-bit RGB PNG), png16 (16-bit mono PNG) or tif16 (16-bit mono TIFF)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        if kind == "rgb8":
            Image.fromarray(_noisy(rng, 3, 255, sigma8).astype(np.uint8)).save(folder / f"{i:02d}.png")
        elif kind == "png16":
            _write_png16(folder / f"{i:02d}.png", _noisy(rng, 1, 65535, sigma8 * 257))
        else:
            tifffile.imwrite(
                folder / f"{i:02d}.tif", _noisy(rng, 1, 65535, sigma8 * 257)[:, :, 0].astype(np.uint16)
            )
    return folder


def noisy_overrides(train_dir: Path, *extra: str) -> tuple[str, ...]:
    return (
        *TINY,
        "data=folder",
        f"data.train_dir={train_dir}",
        "data.add_noise=false",
        "data.num_workers=0",
        "noise_params=sigma_global",
        *extra,
    )


def test_load_native_keeps_16_bit_colour_png_and_tiff(tmp_path: Path) -> None:
    pixels = np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3) * 1000 + 7
    _write_png16(tmp_path / "a.png", pixels)
    tifffile.imwrite(tmp_path / "a.tif", pixels, photometric="rgb")
    for name in ("a.png", "a.tif"):
        got = load_native(tmp_path / name)
        assert got.dtype == np.uint16 and np.array_equal(got, pixels)
    mono = load_native(tmp_path / "a.png", channels=1)
    assert np.array_equal(mono[:, :, 0], (pixels.astype(np.uint32).sum(2) + 1) // 3)
    assert Intensity.of_depth(16).to_unit(got)[0, 0, 0] == np.float32(7) / np.float32(65535)


def test_mixed_bit_depths_are_refused_naming_both_files(tmp_path: Path) -> None:
    write_set(tmp_path / "d", "rgb8", count=1)
    write_set(tmp_path / "e", "tif16", count=1)
    files = [tmp_path / "d" / "00.png", tmp_path / "e" / "00.tif"]
    with pytest.raises(ValueError, match=r"00\.png is 8-bit.*00\.tif is 16-bit"):
        check_one_bit_depth(files, "train_dir")


def test_noisy_batches_are_the_files_as_read_and_hold_out_validation(tmp_path: Path) -> None:
    folder = write_set(tmp_path / "n", "png16")
    settings = DataSettings(
        train_dir=folder, val_dir=None, add_noise=False, crop_size=SIDE, val_size=32, val_count=1,
        batch_size=1, channels=1, in_memory=True,
    )  # fmt: skip
    dm = DenoisingDataModule(settings, noise=build_noise("gaussian", 25))
    dm.setup("fit")
    assert dm.val_files == [folder / "00.png"] and dm.train_files == sorted(folder.glob("0[1-3].png"))
    batch = dm.train_stream.batch(0)
    assert set(batch) == {"noisy", "index"}
    path = dm.train_files[int(batch["index"][0])]
    expected = load_native(path, 1).astype(np.float32).transpose(2, 0, 1) / np.float32(65535)
    assert torch.equal(batch["noisy"][0], torch.from_numpy(expected))
    val = dm._val
    assert set(val) == {"noisy", "index"} and val["noisy"].shape == (1, 1, 32, 32)
    scale = {"add_noise": False, "bit_depth": 16, "max_value": 65535, "offset": 0.0, "peak": 65535.0}
    assert dm.pixel_scale() == scale


@pytest.mark.parametrize(
    ("kind", "channels"), [("rgb8", 3), ("png16", 1), ("tif16", 1)], ids=["rgb8", "mono_png16", "mono_tif16"]
)
def test_train_on_noisy_files_then_denoise_without_param(
    kind: str, channels: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_set(tmp_path / "noisy", kind)
    out = tmp_path / "run"
    metrics = run(compose_config(*noisy_overrides(folder, f"channels={channels}"), output_dir=out))
    assert "val/nll" in metrics and "val/noise_level" in metrics and "val/psnr" not in metrics
    ckpt = read_checkpoint(out / "checkpoints" / "last.ckpt")
    depth = 8 if kind == "rgb8" else 16
    top = 2**depth - 1
    scale = {"add_noise": False, "bit_depth": depth, "max_value": top, "offset": 0.0, "peak": float(top)}
    assert ckpt["ssdn_pixel_scale"] == scale
    assert set(ckpt["ssdn_level"]) == {"sigma"} and ckpt["ssdn_level"]["sigma"] == pytest.approx(
        metrics["noise_level"]
    )
    capsys.readouterr()
    denoise_main(
        [str(out / "checkpoints" / "last.ckpt"), str(folder), "--out", str(tmp_path / "d"), "--device", "cpu"]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all(f"sigma={ckpt['ssdn_level']['sigma']:.6g}" in line for line in lines)
    written = sorted((tmp_path / "d").iterdir())
    assert len(written) == 4
    result = load_native(written[0], channels)
    assert result.dtype == (np.uint8 if depth == 8 else np.uint16) and result.shape == (SIDE, SIDE, channels)
    if kind == "tif16":
        assert written[0].suffix == ".tif"


def test_best_checkpoint_follows_lowest_val_nll(tmp_path: Path) -> None:
    folder = write_set(tmp_path / "noisy", "rgb8")
    out = tmp_path / "run"
    run(
        compose_config(
            *noisy_overrides(folder, "trainer.max_steps=6", "trainer.val_check_interval=2"), output_dir=out
        )
    )
    with (out / "csv" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/nll")]
    assert len(rows) == 3 and all(math.isfinite(float(r["val/nll"])) for r in rows)
    best_step = int(min(rows, key=lambda r: float(r["val/nll"]))["step"])
    best = read_checkpoint(out / "checkpoints" / "best.ckpt")
    assert best["global_step"] == best_step + 1


def test_methods_needing_clean_targets_are_refused(tmp_path: Path) -> None:
    folder = write_set(tmp_path / "noisy", "rgb8", count=1)
    with pytest.raises(
        ConfigError,
        match=r"method=n2c.*noisy data alone: mu_only, n2v_copy, n2v_random, n2v_random_dense, ssdn, ssdn_diag",
    ):
        run(compose_config(*noisy_overrides(folder, "method=n2c"), output_dir=tmp_path / "r"))
    with pytest.raises(ConfigError, match="method=n2n"):
        run(compose_config(*noisy_overrides(folder, "method=n2n"), output_dir=tmp_path / "r"))


def test_fixed_noise_and_known_range_are_refused_with_noisy_data(tmp_path: Path) -> None:
    folder = write_set(tmp_path / "noisy", "rgb8", count=1)
    with pytest.raises(ConfigError, match="fixed_noise=true has no meaning"):
        run(compose_config(*noisy_overrides(folder, "data.fixed_noise=true"), output_dir=tmp_path / "r"))
    with pytest.raises(ConfigError, match="true level of each noisy file is unknown"):
        run(
            compose_config(
                *noisy_overrides(folder, "noise=gaussian_range", "noise_params=sigma_known"),
                output_dir=tmp_path / "r",
            )
        )


def test_init_data_starts_the_level_near_the_truth(tmp_path: Path) -> None:
    folder = write_set(tmp_path / "noisy", "png16", count=6, sigma8=25.0)
    cfg = compose_config(*noisy_overrides(folder, "channels=1"), output_dir=tmp_path / "r")
    module = DenoiserModule(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    dm = DenoisingDataModule(RunConfig.from_dictconfig(cfg).data_settings, noise=module.noise)
    assert module.learned_level()["sigma"] == pytest.approx(4.9, abs=0.1)  # the authors' start
    estimate = initialise_level(
        RunConfig.from_dictconfig(cfg).noise_params.init, module, dm
    )  # the default: data
    assert estimate["sigma"] == pytest.approx(25.0, rel=0.15)
    assert module.learned_level()["sigma"] == pytest.approx(estimate["sigma"], rel=1e-6)


def test_paper_rows_keep_the_authors_start() -> None:
    cfg = compose_config("experiment=table1/gauss25-blindspot-sigma_global")
    assert cfg.noise_params.init == "paper"
    assert compose_config().noise_params.init == "data"


class _Keep(L.Callback):
    """Keeps the fitted module; optionally stops after ``stop`` steps (a run interrupted there)."""

    def __init__(self, stop: int | None = None) -> None:
        self.stop = stop

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.module = pl_module

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if self.stop is not None and trainer.global_step >= self.stop:
            trainer.should_stop = True


def test_noisy_only_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    """The held-out files, the crop stream and the learned level continue exactly: the level is initialised
    from the data once, on the fresh run, never again on resume."""
    folder = write_set(tmp_path / "noisy", "rgb8", count=5)
    common = noisy_overrides(
        folder, "trainer.max_steps=6", "trainer.val_check_interval=3", "trainer.checkpoint_every_n_steps=3"
    )
    full = _Keep()
    run(compose_config(*common, output_dir=tmp_path / "full"), extra_callbacks=[full])
    split = tmp_path / "split"
    run(compose_config(*common, output_dir=split), extra_callbacks=[_Keep(stop=3)])
    resumed = _Keep()
    run(compose_config(*common, "resume=auto", output_dir=split), extra_callbacks=[resumed])
    a, b = full.module.state_dict(), resumed.module.state_dict()
    assert resumed.module.trainer.global_step == 6 and a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.slow
def test_noisy_only_ddp_matches_single_process(tmp_path: Path) -> None:
    """Two gloo ranks split the global batch of noisy crops and hold out the same files: their weights follow
    one process (fp32, so the comparison is tight)."""
    folder = write_set(tmp_path / "noisy", "rgb8", count=5)
    common = (
        *noisy_overrides(folder, "data.batch_size=4", "trainer.max_steps=3", "trainer.val_check_interval=3"),
        "trainer.checkpoint_every_n_steps=3",
        "trainer.precision=32-true",
        "trainer.log_every_n_steps=1",
    )
    ddp = tmp_path / "ddp"
    train_cli(*common, "trainer=ddp_cpu", f"hydra.run.dir={ddp}", cwd=tmp_path)
    single = tmp_path / "single"
    run(compose_config(*common, "trainer=cpu", output_dir=single))
    a, b = (read_checkpoint(d / "checkpoints" / "last.ckpt") for d in (ddp, single))
    assert a["ssdn_progress"]["images_seen"] == b["ssdn_progress"]["images_seen"] == 12
    assert a["ssdn_level"]["sigma"] == pytest.approx(b["ssdn_level"]["sigma"], rel=1e-3)
    # the loss of each step (mean over ranks) depends on which crops were drawn: the ranks drew the same ones
    ddp_loss, single_loss = logged_losses(ddp), logged_losses(single)
    assert sorted(ddp_loss) == sorted(single_loss) == [0, 1, 2]
    for step, loss in single_loss.items():
        assert ddp_loss[step] == pytest.approx(loss, rel=1e-4), step
    assert max(float((a["state_dict"][k] - v).abs().max()) for k, v in b["state_dict"].items()) < 1e-3
