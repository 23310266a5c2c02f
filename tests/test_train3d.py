"""Training and denoising with the 3-D blind-spot net (``model.dims=3``): the config's rules, the sub-volume
sampler, the noise maths per voxel, the module's network, tiled 3-D denoising and the CLIs end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from ssdn.config.compose import ConfigError, compose, validate_config
from ssdn.config.schema import DataSettings, ModelConfig
from ssdn.data import volume_crops
from ssdn.data.datamodule import DenoisingDataModule
from ssdn.data.sources import DataSourceError
from ssdn.data.stacks import Stack, StackError, open_stack, read_stack, take_volume
from ssdn.data.training_files import DataWarning
from ssdn.data.volume_crops import RandomVolumeStream
from ssdn.denoise import main as denoise_main
from ssdn.evaluate import main as evaluate_main
from ssdn.export import main as export_main
from ssdn.inference.volumes import denoise_volumes, tile_cores
from ssdn.methods.objectives import PriorObjective
from ssdn.nets import UNet3D
from ssdn.noise import build_noise
from ssdn.training.checkpoints import read_checkpoint
from ssdn.training.module import DenoiserModule
from tests.cli_subprocess import TINY_CLI, clean_env, train_cli
from tests.conftest import unit16

SIDE = 32
#: a 3-D net that runs in milliseconds: two poolings, 8 channels (Z multiple 4, Y/X multiple 4)
TINY_NET = ("model.levels=2", "model.enc_channels=8", "model.dec_channels=8")
VOLUME = (
    "data=folder", "data.train_dir=/nowhere", "data.axes=ZYX", "data.add_noise=false", "channels=1",
    "noise=poisson_gaussian", "noise_params=sigma_global", "model.dims=3", "data.crop_depth=8",
)  # fmt: skip


def write_stacks(folder: Path, count: int = 3, shape: tuple[int, ...] = (8, SIDE, SIDE)) -> list[np.ndarray]:
    """``count`` random uint16 stacks as TIFFs that name no axes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    stacks = [rng.integers(0, 65535, shape, dtype=np.uint16) for _ in range(count)]
    for i, data in enumerate(stacks):
        tifffile.imwrite(folder / f"s{i}.tif", data, photometric="minisblack")
    return stacks


def settings(folder: Path, **over: object) -> DataSettings:
    model = over.pop("model", ModelConfig(dims=3, levels=2))
    values: dict = dict(
        train_dir=folder, add_noise=False, axes="ZYX", crop_size=16, crop_depth=4, val_size=32, val_count=0,
        batch_size=4, channels=1, num_workers=0,
    )  # fmt: skip
    return DataSettings(**(values | over), model=model)


# ------------------------------------------------------------------------------------------------ config


def test_a_volume_run_config_validates_and_the_default_stays_2d() -> None:
    run = validate_config(compose(*VOLUME, *TINY_NET, "data.crop_size=32", "data.val_size=32"))
    assert (run.model.dims, run.model.side_multiple3d, run.data.crop_depth) == (3, (4, 4, 4), 8)
    assert run.data_settings.dims == 3 and run.record["model"]["dims"] == 3
    default = validate_config(compose())
    assert (
        default.model == ModelConfig() and default.data_settings.dims == 2 and default.data.crop_depth is None
    )
    validate_config(compose(*VOLUME, "data.crop_depth=32", "method=mu_only", "model.pool_z=false"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.dims=4"], "model.dims=4: use 2"),
        (["model.levels=3"], "model.levels=3 is a setting of the 3-D net; set model.dims=3"),
        (["data.crop_depth=8"], "data.crop_depth=8 is the depth of 3-D training crops; set model.dims=3"),
        ([*VOLUME, "data.axes=null"], "model.dims=3 trains on volumes of stacks with a Z axis, but data.axes=None"),
        ([*VOLUME, "data.axes=TYX"], "data.axes=TYX; set data.axes"),
        ([*VOLUME, "data.crop_depth=null"], "model.dims=3 needs data.crop_depth"),
        ([*VOLUME, "data.crop_depth=8"], "data.crop_depth=8: the 3-D net pools Z 5 time(s) (model.pool_z)"),
        ([*VOLUME, *TINY_NET, "model.pool_z=1", "data.crop_depth=3"], "needs a positive multiple of 2"),
        ([*VOLUME, *TINY_NET, "model.pool_z=3"], "model.pool_z=3: true (Z pooled at every level)"),
        ([*VOLUME, *TINY_NET, "data.crop_size=30"], "data.crop_size=30: the 3-D net (model.levels)"),
        ([*VOLUME, *TINY_NET, "data.curriculum=[{until: 0.5, crop_size: 64, batch_size: 4}]"],
         "data.curriculum with model.dims=3"),
        ([*VOLUME, *TINY_NET, "method=n2v_random"], "method=n2v_random (method.blindspot=false) with model.dims=3"),
        ([*VOLUME, *TINY_NET, "method=n2c"], "method=n2c (method.target=clean) with model.dims=3"),
        ([*VOLUME, *TINY_NET, "method.pd_stride=2"], "method.pd_stride=2 (pd_stride_infer=None) with model.dims=3"),
        ([*VOLUME, *TINY_NET, "method.blind_hole=3"], "method.blind_hole=3 with model.dims=3"),
        ([*VOLUME, *TINY_NET, "method.blind_hole_infer=3"], "method.blind_hole_infer=3 with model.dims=3"),
        ([*VOLUME, *TINY_NET, "noise_params=sigma_per_image"], "noise_params=sigma_per_image with model.dims=3"),
        ([*VOLUME, *TINY_NET, "eval.sets=[kodak]"], "eval.sets=['kodak'] with model.dims=3"),
    ],
)  # fmt: skip
def test_each_rule_names_its_setting(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match="invalid configuration") as err:
        validate_config(compose(*overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_cli_refuses_a_volume_run_without_crop_depth_in_one_line(tmp_path: Path) -> None:
    args = [*TINY_CLI, *VOLUME, "data.crop_depth=null", f"hydra.run.dir={tmp_path / 'r'}"]
    proc = subprocess.run(
        [sys.executable, "-m", "ssdn.train", *args],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and "model.dims=3 needs data.crop_depth" in lines[0]
        and "Traceback" not in proc.stderr
    )


# ------------------------------------------------------------------------------------------------ sampler


def test_volume_crops_have_the_crop_shape_and_come_from_their_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stacks = write_stacks(tmp_path / "s")
    monkeypatch.setattr(Stack, "read", lambda self: pytest.fail("a crop read a whole stack"))
    stream = RandomVolumeStream(settings(tmp_path / "s"))
    assert stream.item_count == 3 and stream.item_name(1) == str(tmp_path / "s" / "s1.tif")
    batch = stream.batch(0)
    assert batch["noisy"].shape == (4, 1, 4, 16, 16) and batch["noisy"].dtype == torch.float32
    for crop, k in zip(batch["noisy"][:, 0], batch["index"].tolist(), strict=True):
        whole = torch.from_numpy(unit16(stacks[k]))  # the crop is a window of its volume
        found = [
            (z, y, x)
            for z in range(5)
            for y in range(17)
            for x in range(17)
            if torch.equal(whole[z : z + 4, y : y + 16, x : x + 16], crop)
        ]
        assert len(found) == 1
    described = stream.describe()
    assert (described["volumes"], described["planes"], described["crop_depth"]) == (3, 24, 4)


def test_volume_crops_are_a_function_of_the_seed_and_reach_every_stack(tmp_path: Path) -> None:
    write_stacks(tmp_path / "s")
    a, b = RandomVolumeStream(settings(tmp_path / "s")), RandomVolumeStream(settings(tmp_path / "s"))
    other = RandomVolumeStream(settings(tmp_path / "s", seed=1))
    assert torch.equal(a.batch(3)["noisy"], b.batch(3)["noisy"])
    assert not torch.equal(a.batch(3)["noisy"], other.batch(3)["noisy"])
    # one epoch of samples (3 volumes): every stack once
    assert sorted(a.batch(0)["index"][:3].tolist()) == [0, 1, 2]
    rotated = RandomVolumeStream(settings(tmp_path / "s", rotate_aug=True))
    assert rotated.batch(0)["noisy"].shape == (4, 1, 4, 16, 16)
    # the same window, turned: every rotated crop holds the multiset of values of the unrotated one
    plain, turned = a.batch(0)["noisy"], rotated.batch(0)["noisy"]
    for p, t in zip(plain, turned, strict=True):
        assert torch.equal(p.flatten().sort().values, t.flatten().sort().values)


def test_a_window_reads_only_its_part_of_a_lazy_stack(tmp_path: Path) -> None:
    data = write_stacks(tmp_path / "s", count=1, shape=(6, 20, 12))[0]
    stack = open_stack(tmp_path / "s" / "s0.tif", "ZYX")
    window = {"Z": slice(1, 5), "Y": slice(3, 17), "X": slice(2, 9)}
    assert np.array_equal(stack.take(None, window), data[1:5, 3:17, 2:9])
    assert np.array_equal(take_volume(stack, {}, window)[0], data[1:5, 3:17, 2:9])
    assert np.array_equal(stack.take({"Z": 2}, {"Y": slice(5, 6)}), data[2, 5:6])
    with pytest.raises(IndexError, match="Y=slice"):
        stack.take(None, {"Y": slice(10, 30)})


def test_a_volume_that_fails_at_crop_time_is_skipped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_stacks(tmp_path / "s")
    stream = RandomVolumeStream(settings(tmp_path / "s"))
    read = volume_crops.take_volume

    def broken(stack: Stack, index: dict[str, int], window: dict[str, slice]) -> np.ndarray:
        if stack.path is not None and stack.path.name == "s1.tif":
            raise StackError("truncated")
        return read(stack, index, window)

    monkeypatch.setattr(volume_crops, "take_volume", broken)
    with pytest.warns(DataWarning, match=r"s1\.tif failed at crop time \(truncated\)"):
        batch = stream.batch(0)
    assert 1 not in batch["index"].tolist() and batch["crop_failed"].tolist() == [1]
    assert stream.crop_failed_files == [str(tmp_path / "s" / "s1.tif")]
    assert "crop_failed" not in stream.batch(1)


def test_every_t_and_independent_channel_is_its_own_volume(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 65535, (2, 8, 2, SIDE, SIDE), dtype=np.uint16)  # T, Z, C, Y, X
    (tmp_path / "t").mkdir()
    tifffile.imwrite(tmp_path / "t" / "a.ome.tif", data, ome=True, metadata={"axes": "TZCYX"})
    stream = RandomVolumeStream(settings(tmp_path / "t", axes="TZCYX", channels_independent=True))
    assert stream.item_count == 4
    assert {stream.item_name(k).rsplit("[", 1)[1] for k in range(4)} == {
        "T=0,C=0]",
        "T=0,C=1]",
        "T=1,C=0]",
        "T=1,C=1]",
    }
    assert stream.batch(0)["noisy"].shape == (4, 1, 4, 16, 16)


def test_stacks_too_shallow_are_refused_and_validation_holds_out_whole_stacks(tmp_path: Path) -> None:
    stacks = write_stacks(tmp_path / "s")
    with pytest.raises(DataSourceError, match=r"s0\.tif has 8 Z plane\(s\), fewer than data\.crop_depth=12"):
        RandomVolumeStream(settings(tmp_path / "s", crop_depth=12))
    # val_count counts crop_depth-plane slabs of held-out stacks: 8 planes hold two of 4
    dm = DenoisingDataModule(settings(tmp_path / "s", val_count=3))
    dm.setup("fit")
    assert dm.val_files == [tmp_path / "s" / "s0.tif", tmp_path / "s" / "s1.tif"]
    assert dm._val is not None and dm._val["noisy"].shape == (3, 1, 4, SIDE, SIDE)
    with pytest.raises(
        DataSourceError, match=r"data\.val_count=5 sub-volume\(s\) would take all 3 usable stack"
    ):
        RandomVolumeStream(settings(tmp_path / "s", val_count=5))
    dm = DenoisingDataModule(settings(tmp_path / "s", val_count=2))
    dm.setup("fit")
    assert dm.val_files == [tmp_path / "s" / "s0.tif"] and dm.train_stream is not None
    assert dm.train_stream.files == [tmp_path / "s" / "s1.tif", tmp_path / "s" / "s2.tif"]
    assert dm._val is not None and dm._val["noisy"].shape == (2, 1, 4, SIDE, SIDE)
    for crop, z in zip(dm._val["noisy"][:, 0], (0, 4), strict=True):
        assert torch.equal(crop, torch.from_numpy(unit16(stacks[0][z : z + 4])))
    planes = dm.estimation_images(3)  # the level is estimated from planes of the training stacks
    assert [p.shape for p in planes] == [(1, SIDE, SIDE)] * 3
    assert torch.equal(planes[0][0], torch.from_numpy(unit16(stacks[1][0])))


# ------------------------------------------------------------------------------------------------ maths


@pytest.mark.parametrize(
    ("name", "value", "channels"),
    [("gaussian", [5, 50], 3), ("poisson", [5, 50], 1), ("poisson_gaussian", {"a": 0.01, "b": [1e-4, 4e-4]}, 1),
     ("impulse", [0.1, 0.5], 3)],
)  # fmt: skip
def test_the_posterior_of_a_volume_is_the_posterior_of_its_voxels(
    name: str, value: object, channels: int
) -> None:
    """Volumes (N, K, D, H, W) through the objective equal the same voxels laid out as images (N, K, D·H, W),
    exactly: the likelihood and the posterior act on each voxel's channel vector, in float64."""
    noise = build_noise(name, value)
    objective = PriorObjective()
    gen = torch.Generator().manual_seed(0)
    n, d, h, w = 2, 3, 4, 5
    k = objective.out_channels(channels)
    out = torch.randn(n, k, d, h, w, generator=gen)
    noisy = torch.rand(n, channels, d, h, w, generator=gen)
    level = noise.to_level(noise.sample_params(n, gen))
    vol = objective.outputs(out, noisy, noise, level, uncertainty=True)
    img = objective.outputs(out.flatten(2, 3), noisy.flatten(2, 3), noise, level, uncertainty=True)
    assert vol.keys() == img.keys()
    for key in vol:
        assert vol[key].shape == (n, channels, d, h, w)
        assert torch.equal(vol[key].flatten(2, 3), img[key])
    loss_vol = objective.loss_map(out, noisy, noise, level, regularise=True, progress=0.0)
    loss_img = objective.loss_map(
        out.flatten(2, 3), noisy.flatten(2, 3), noise, level, regularise=True, progress=0.0
    )
    assert loss_vol.shape == (n, d, h, w) and loss_vol.dtype == torch.float64
    assert torch.equal(loss_vol.flatten(1, 2), loss_img)
    assert noise.pixel_level(level, 3).shape == (n, 1, 1, 1, *noise.low.shape)


# ------------------------------------------------------------------------------------------------ module


def _module(*extra: str) -> DenoiserModule:
    cfg = compose(*VOLUME, *TINY_NET, "data.crop_size=32", "data.val_size=32", *extra)
    return DenoiserModule(validate_config(cfg).record)


def test_the_module_builds_the_3d_net_and_its_memory_format_follows_the_precision() -> None:
    module = _module("trainer.precision=bf16-mixed")
    assert isinstance(module.net, UNet3D) and module.net.levels == 2 and module.dims == 3
    assert module.net.side_multiple == (4, 4, 4) and module.memory_format is None  # oneDNN bf16 conv3d NaNs
    fp32 = _module("trainer.precision=32-true")
    assert fp32.memory_format is torch.channels_last_3d
    assert fp32.net.nin_c.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert _module("channels_last=false", "trainer.precision=32-true").memory_format is None
    out = fp32.denoise(torch.rand(1, 1, 4, 8, 8), torch.zeros(1, dtype=torch.float64), uncertainty=True)
    assert [v.shape for v in out.values()] == [(1, 1, 4, 8, 8)] * 3


def test_tiles_with_full_context_equal_one_tile_and_cover_every_voxel(tmp_path: Path) -> None:
    assert tile_cores(10, 4) == [(0, 4), (4, 8), (8, 10)] and tile_cores(3, 8) == [(0, 3)]
    write_stacks(tmp_path / "s", count=1, shape=(6, 20, 12))  # no side a multiple of the net's
    module = _module("trainer.precision=32-true").eval()
    stack = read_stack(tmp_path / "s" / "s0.tif", "ZYX")
    outs = {}
    for name, tiling in {"whole": (64, 0, 64, 0), "tiled": (8, 64, 4, 64)}.items():
        target = (tmp_path / name / "o.tif", tmp_path / name / "o.std.tif")
        tile, overlap, tile_depth, overlap_depth = tiling
        result = denoise_volumes(
            module, stack, target, lambda _: torch.tensor([[0.01, 1e-4]], dtype=torch.float64),
            tile=tile, overlap=overlap, tile_depth=tile_depth, overlap_depth=overlap_depth,
        )  # fmt: skip
        assert result.planes == 6 and set(result.level) == {"a", "b"}
        outs[name] = [tifffile.imread(p) for p in target]
    assert outs["whole"][0].dtype == np.uint16 and outs["whole"][1].dtype == np.float32
    assert outs["whole"][0].shape == (6, 20, 12) and outs["whole"][1].min() > 0
    for whole, tiled in zip(outs["whole"], outs["tiled"], strict=True):
        assert np.array_equal(whole, tiled)


# ------------------------------------------------------------------------------------------------ CLI


@pytest.mark.slow  # ~15 s: a training subprocess, then the denoiser and the exporter in process
def test_train_a_3d_model_through_the_cli_then_denoise_a_stack_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(2)
    (tmp_path / "s").mkdir()
    meta = {"axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2, "PhysicalSizeZ": 1.0}
    for i in range(3):
        data = rng.integers(0, 65535, (8, SIDE, SIDE), dtype=np.uint16)
        tifffile.imwrite(tmp_path / "s" / f"s{i}.ome.tif", data, ome=True, metadata=meta)
    run_dir = tmp_path / "run"
    overrides = [o for o in VOLUME if not o.startswith("data.train_dir")]
    train_cli(
        *TINY_CLI, *overrides, *TINY_NET, f"data.train_dir={tmp_path / 's'}", "data.num_workers=0",
        "trainer=cpu", f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )  # fmt: skip
    ckpt_path = run_dir / "checkpoints" / "last.ckpt"
    ckpt = read_checkpoint(ckpt_path)
    assert ckpt["ssdn_config"]["model"]["dims"] == 3 and ckpt["ssdn_config"]["data"]["axes"] == "ZYX"
    assert ckpt["global_step"] == 2 and ckpt["ssdn_pixel_scale"]["bit_depth"] == 16
    capsys.readouterr()
    source = tmp_path / "s" / "s1.ome.tif"
    denoise_main(
        [str(ckpt_path), str(source), "--out", str(tmp_path / "d"), "--device", "cpu", "--uncertainty"]
    )
    assert "8 planes ZYX (3-D)" in capsys.readouterr().out
    given, result = read_stack(source), read_stack(tmp_path / "d" / "s1.ome.tif")
    assert result.shape == given.shape and result.dtype == np.uint16 and result.axes == "ZYX"
    assert result.meta.physical_sizes == given.meta.physical_sizes
    std = read_stack(tmp_path / "d" / "s1.std.ome.tif", counts=False)
    assert std.shape == given.shape and std.dtype == np.float32
    # a 2-D image: one line naming the mismatch, the run fails with status 1
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((SIDE, SIDE), np.uint16))
    with pytest.raises(SystemExit) as exit_:
        denoise_main(
            [str(ckpt_path), str(tmp_path / "flat.tif"), "--out", str(tmp_path / "e"), "--device", "cpu"]
        )
    assert exit_.value.code == 1
    assert "a 2-D image, but the model is 3-D (model.dims=3)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        export_main([str(ckpt_path), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    assert exit_.value.code == 2 and "a 3-D model (model.dims=3)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        evaluate_main(["--checkpoint", str(ckpt_path), "--device", "cpu", "--out", str(tmp_path / "ev")])
    assert exit_.value.code == 2 and "the test sets are 2-D photos" in capsys.readouterr().err
