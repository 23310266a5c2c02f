"""data.offset / data.peak (ssdn.data.intensity): the scale of noisy counts, exact both ways, measured with
``auto``, stored in the checkpoint and applied by the denoiser on the way in and out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from ssdn import denoise
from ssdn.config.schema import ConfigError, DataSettings
from ssdn.data import stacks as st
from ssdn.data.crops import RandomCropStream
from ssdn.data.datamodule import DenoisingDataModule
from ssdn.data.intensity import AUTO_PEAK_PERCENTILE, Intensity, IntensityError, measured_peak, range_used
from ssdn.data.training_files import DataWarning
from ssdn.training.checkpoints import training_intensity
from tests.test_denoise_stacks import SIZES, _checkpoint, _main, identity  # noqa: F401 (a fixture)
from tests.test_stack_training import settings

SIDE = 64
OFFSET = 100


def test_the_depth_scale_is_v_over_the_maximum_and_inverts_exactly() -> None:
    v16 = np.array([0, 1, 32768, 65535], np.uint16)
    scale16 = Intensity.of_depth(16)
    np.testing.assert_array_equal(scale16.to_unit(v16), v16.astype(np.float32) / np.float32(65535))
    np.testing.assert_array_equal(scale16.from_unit(scale16.to_unit(v16), np.uint16), v16)
    v8 = np.arange(256, dtype=np.uint8)
    scale8 = Intensity.of_depth(8)
    np.testing.assert_array_equal(scale8.from_unit(scale8.to_unit(v8), np.uint8), v8)
    np.testing.assert_array_equal(scale8.from_unit(np.array([-0.2, 1.3]), np.uint8), [0, 255])
    assert torch.equal(scale8.tensor_to_unit(torch.from_numpy(v8)), torch.from_numpy(v8).float() / 255)


def test_offset_and_peak_map_counts_linearly_and_back() -> None:
    scale = Intensity(100.0, 40.0)
    v = np.array([90, 100, 120, 140, 65535], np.uint16)
    np.testing.assert_array_equal(scale.to_unit(v), np.array([-0.25, 0, 0.5, 1, 65435 / 40], np.float32))
    np.testing.assert_array_equal(scale.from_unit(scale.to_unit(v), np.uint16), v)  # below the offset too
    np.testing.assert_array_equal(scale.from_unit(np.array([-3.0, 1e9]), np.uint16), [0, 65535])
    np.testing.assert_array_equal(scale.std_to_stored(np.array([0.5])), [20.0])
    assert torch.equal(scale.tensor_to_unit(torch.tensor([100, 140])), torch.tensor([0.0, 1.0]))
    assert Intensity.from_record(scale.record(), 16) == scale
    assert Intensity.from_record({"bit_depth": 16, "max_value": 65535}, 16) == Intensity.of_depth(16)
    with pytest.raises(ValueError, match="positive peak"):
        Intensity(0.0, 0.0)


def test_auto_peak_is_the_percentile_above_the_offset() -> None:
    images = [np.arange(1000, dtype=np.uint16).reshape(10, 100), np.full((5, 5), 7, np.uint16)]
    pooled = np.concatenate([im.reshape(-1) for im in images]).astype(np.float64)
    expected = float(np.percentile(pooled, AUTO_PEAK_PERCENTILE)) - 5
    assert range_used(images, 5) == expected
    assert measured_peak(images, 5, "x") == expected
    with pytest.raises(IntensityError, match=r"data\.peak=auto: .* in dark/ is not above data\.offset=2000"):
        measured_peak(images, 2000, "dark/")


def test_settings_are_checked_beside_their_fields(tmp_path: Path) -> None:
    base = dict(train_dir=tmp_path, add_noise=False, channels=1)
    for bad, match in (
        ({"offset": -1.0}, r"data\.offset=-1\.0 must be a finite number >= 0"),
        ({"peak": 0}, r"data\.peak=0 must be a positive number"),
        ({"peak": "max"}, r"data\.peak=max must be a positive number .* auto"),
        ({"add_noise": True, "offset": 100.0}, r"data\.offset / data\.peak scale noisy files"),
        ({"add_noise": True, "peak": "auto"}, r"data\.offset / data\.peak scale noisy files"),
    ):
        with pytest.raises(ConfigError, match=match):
            DataSettings(**(base | bad))  # type: ignore[arg-type]
    DataSettings(**base, offset=100.0, peak="auto")  # type: ignore[arg-type]
    DataSettings(**base, peak=250)  # type: ignore[arg-type]


def _dim_stacks(folder: Path, count: int = 2, planes: int = 3) -> list[np.ndarray]:
    """Low-light counts: an offset of 100 ADU, signal up to ~60 ADU above it, as a microscope camera gives."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        data = (OFFSET + rng.poisson(rng.uniform(0, 30, (planes, SIDE, SIDE))) * 2).astype(np.uint16)
        tifffile.imwrite(folder / f"s{i}.tif", data, photometric="minisblack")
        out.append(data)
    return out


def _settings(folder: Path, **over: object) -> DataSettings:
    return settings(folder, batch_size=4, **over)


def _scaled(tmp_path: Path, data: np.ndarray) -> tuple[Path, Path]:
    """The stack ``data`` as an OME-TIFF and an untrained model's checkpoint trained on (v − 100) / 40."""
    src = st.write_stack(tmp_path / "cells.ome.tif", data, st.StackMeta("ZYX", np.dtype(np.uint16), SIZES))
    ckpt_path = _checkpoint(tmp_path)
    state = torch.load(ckpt_path, weights_only=False)
    state["ssdn_pixel_scale"] |= {"offset": 100.0, "peak": 40.0}
    torch.save(state, ckpt_path)
    return src, ckpt_path


def test_training_crops_are_scaled_by_the_offset_and_the_measured_peak(tmp_path: Path) -> None:
    stacks = _dim_stacks(tmp_path / "s")
    stream = RandomCropStream(_settings(tmp_path / "s", offset=float(OFFSET), peak="auto"))
    planes = [stream.pixels(i) for i in range(stream.item_count)]  # 6 planes < 32: all of them
    peak = (
        float(np.percentile(np.concatenate([p.reshape(-1) for p in planes]), AUTO_PEAK_PERCENTILE)) - OFFSET
    )
    assert stream.intensity == Intensity(float(OFFSET), peak)
    batch = stream.batch(0)
    for crop, k in zip(batch["noisy"], batch["index"].tolist(), strict=True):  # crop_size = the plane
        expected = (stacks[k // 3][k % 3].astype(np.float32) - np.float32(OFFSET)) / np.float32(peak)
        assert torch.equal(crop[0], torch.from_numpy(expected))
    dm = DenoisingDataModule(_settings(tmp_path / "s", offset=float(OFFSET), peak=80))
    dm.setup("fit")
    assert dm.pixel_scale() == {"add_noise": False, "bit_depth": 16, "max_value": 65535, "offset": 100.0,
                                "peak": 80.0}  # fmt: skip
    image = dm.estimation_images(1)[0]
    assert torch.equal(image[0], torch.from_numpy((stacks[0][0].astype(np.float32) - 100) / np.float32(80)))


def test_dim_16_bit_counts_on_the_depth_scale_warn_naming_the_setting(tmp_path: Path) -> None:
    _dim_stacks(tmp_path / "s")
    with pytest.warns(DataWarning, match=r"span \d+ of 65535 .*set data\.peak=auto"):
        stream = RandomCropStream(_settings(tmp_path / "s"))
    assert stream.intensity == Intensity.of_depth(16)


def test_denoiser_applies_the_trained_scale_both_ways(identity, tmp_path: Path) -> None:  # noqa: F811
    data = _dim_stacks(tmp_path / "s", count=1)[0]
    src, ckpt_path = _scaled(tmp_path, data)
    assert training_intensity(torch.load(ckpt_path, weights_only=False)) == Intensity(100.0, 40.0)
    seen: list[torch.Tensor] = []
    assert _main(ckpt_path, src, "--out", tmp_path / "out", "--uncertainty") == 0
    module = identity[0]
    real = module.denoise
    # the model saw (v - 100) / 40: run it again recording its input
    module.denoise = lambda noisy, *a, **k: seen.append(noisy) or real(noisy, *a, **k)  # type: ignore[method-assign]
    from ssdn.inference.stacks import denoise_stack

    denoise_stack(module, st.open_stack(src), (tmp_path / "again.ome.tif",), lambda p: torch.zeros(1, 1),
                  intensity=Intensity(100.0, 40.0))  # fmt: skip
    first = seen[0][0, 0, : data.shape[1], : data.shape[2]]
    assert torch.equal(first, (torch.from_numpy(data[0].astype(np.float32)) - 100) / 40)
    # identity model: the counts come back exactly; the std of 0.01 model units is 0.4 ADU
    np.testing.assert_array_equal(st.read_stack(tmp_path / "out" / "cells.ome.tif").read(), data)
    std = st.read_stack(tmp_path / "out" / "cells.std.ome.tif", counts=False).read()
    np.testing.assert_allclose(std, np.float32(0.01) * np.float32(40), rtol=1e-6)
    # a checkpoint on the depth's own scale (or from before the settings) gives None: each input by its depth
    assert training_intensity({"ssdn_pixel_scale": {"bit_depth": 16, "offset": 0.0, "peak": 65535.0}}) is None
    assert training_intensity({"ssdn_pixel_scale": {"bit_depth": 8, "max_value": 255}}) is None


@pytest.mark.slow  # ~15 s: a training subprocess
def test_train_with_offset_and_auto_peak_then_denoise_back_to_counts(tmp_path: Path) -> None:
    from ssdn.denoise import main as denoise_main
    from tests.test_stack_training import _cli, train_cli

    stacks = _dim_stacks(tmp_path / "s", count=3)
    run_dir = tmp_path / "run"
    overrides = ("data.axes=ZYX", f"data.offset={OFFSET}", "data.peak=auto", f"hydra.run.dir={run_dir}")
    train_cli(*_cli(tmp_path / "s", *overrides), cwd=tmp_path)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    scale = training_intensity(torch.load(ckpt, weights_only=False))
    # 2 ADU per photon of Poisson(<= 30): the 99.9th percentile near 2 × 47 ADU above the offset
    assert scale is not None and scale.offset == OFFSET and 70 < scale.peak < 110
    denoise_main([str(ckpt), str(tmp_path / "s" / "s1.tif"), "--out", str(tmp_path / "d"), "--device", "cpu"])
    out = tifffile.imread(tmp_path / "d" / "s1.tif")
    assert out.dtype == np.uint16 and out.shape == stacks[1].shape
    # counts around the offset, not model units nor zero
    assert abs(float(out.mean()) - float(stacks[1].mean())) < 10


def test_float32_output_keeps_the_counts_between_whole_ones(
    identity,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = _dim_stacks(tmp_path / "s", count=1)[0]
    src, ckpt_path = _scaled(tmp_path, data)
    real = denoise.load_denoiser

    def load(path: Path, device: str = "cpu"):  # the identity model, plus 0.01 model units = 0.4 ADU
        module = real(path, device)
        inner = module.denoise
        module.denoise = lambda noisy, *a, **k: {  # type: ignore[method-assign]
            key: value + 0.01 if key == "pme" else value for key, value in inner(noisy, *a, **k).items()
        }
        return module

    monkeypatch.setattr(denoise, "load_denoiser", load)
    assert _main(ckpt_path, src, "--out", tmp_path / "f", "--float32") == 0
    out = st.read_stack(tmp_path / "f" / "cells.ome.tif", counts=False)
    assert out.meta == st.read_stack(src).meta.as_float32()
    np.testing.assert_allclose(out.read(), data.astype(np.float64) + 0.4, rtol=0, atol=1e-3)
    assert _main(ckpt_path, src, "--out", tmp_path / "i") == 0  # the input's type: rounded to whole counts
    np.testing.assert_array_equal(st.read_stack(tmp_path / "i" / "cells.ome.tif").read(), data)
    tifffile.imwrite(tmp_path / "plane.tif", data[0])
    assert _main(ckpt_path, tmp_path / "plane.tif", "--out", tmp_path / "p", "--float32") == 1
    assert "--float32 applies to stacks" in capsys.readouterr().err
    assert not any((tmp_path / "p").rglob("*.*"))
