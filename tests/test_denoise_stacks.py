"""python -m ssdn.denoise on microscopy stacks: every plane denoised, the same axes/dtype/metadata written back
one plane at a time, the std stack beside it, channels as the model's or independent, refusals per file."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from omegaconf import OmegaConf

from ssdn import denoise
from ssdn.data import stacks as st
from ssdn.inference import stacks as inf
from ssdn.training.module import DenoiserModule
from tests.conftest import compose_config

SIZES = {"Z": (0.5, "µm"), "Y": (0.1, "µm"), "X": (0.1, "µm")}


@functools.cache
def _config(channels: int) -> dict:
    cfg = compose_config(
        "noise=gaussian",
        "method=ssdn",
        "noise_params=sigma_global",
        f"channels={channels}",
        output_dir="unused",
    )
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def _checkpoint(folder: Path, channels: int = 1, depth: int = 16) -> Path:
    """An untrained model's checkpoint as train.py writes its essentials (config, weights, pixel scale)."""
    torch.manual_seed(0)
    module = DenoiserModule(_config(channels))
    path = folder / f"c{channels}.ckpt"
    torch.save(
        {
            "hyper_parameters": {"config": _config(channels)},
            "state_dict": module.state_dict(),
            "ssdn_pixel_scale": {"add_noise": False, "bit_depth": depth, "max_value": 2**depth - 1},
        },
        path,
    )
    return path


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch) -> list[DenoiserModule]:
    """Checkpoints load as models that return their input and a std of 0.01: what is written must equal what
    was read, bit for bit. The loaded modules are listed (to count their calls)."""
    loaded: list[DenoiserModule] = []
    real = denoise.load_denoiser

    def load(path: Path, device: str = "cpu") -> DenoiserModule:
        module = real(path, device)
        module.calls = []  # type: ignore[attr-defined]

        def fake(
            noisy: torch.Tensor, params: torch.Tensor, bf16: bool | None = None, uncertainty: bool = False
        ):
            module.calls.append(tuple(noisy.shape))  # type: ignore[attr-defined]
            out = {"pme": noisy.float().clone()}
            return out | ({"posterior_std": torch.full_like(noisy, 0.01)} if uncertainty else {})

        module.denoise = fake  # type: ignore[method-assign]
        loaded.append(module)
        return module

    monkeypatch.setattr(denoise, "load_denoiser", load)
    return loaded


def _data(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)


def _main(*args: str | Path) -> int:
    try:
        denoise.main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_zcyx_stack_channels_independent_same_form_and_std_beside(identity, tmp_path: Path) -> None:
    data = _data((3, 2, 40, 48))
    meta = st.StackMeta("ZCYX", np.dtype(np.uint16), SIZES, ("DAPI", "GFP"))
    src = st.write_stack(tmp_path / "cells.ome.tif", data, meta)
    ckpt = _checkpoint(tmp_path)
    assert _main(ckpt, src, "--out", tmp_path / "out", "--uncertainty") == 0
    out = st.read_stack(tmp_path / "out" / "cells.ome.tif")
    assert out.meta == meta
    np.testing.assert_array_equal(out.read(), data)
    std = st.read_stack(tmp_path / "out" / "cells.std.ome.tif", counts=False)
    assert std.meta == meta.as_float32()
    np.testing.assert_allclose(std.read(), np.float32(0.01) * np.float32(65535), rtol=1e-6)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cells.ome.tif", "cells.std.ome.tif"]
    # each channel of each plane alone through the 1-channel model (one tile each)
    assert identity[0].calls == [(1, 1, 64, 64)] * 6  # type: ignore[attr-defined]


def test_stack_channels_as_the_models_and_a_mismatch_refused(identity, tmp_path: Path, capsys) -> None:
    data = _data((2, 3, 32, 32), seed=1)
    src = st.write_stack(tmp_path / "rgb.ome.tif", data, st.StackMeta("TCYX", np.dtype(np.uint16)))
    assert _main(_checkpoint(tmp_path, channels=3), src, "--out", tmp_path / "a") == 0
    np.testing.assert_array_equal(st.read_stack(tmp_path / "a" / "rgb.ome.tif").read(), data)
    assert identity[0].calls == [(1, 3, 32, 32)] * 2  # type: ignore[attr-defined]

    two = st.write_stack(tmp_path / "two.ome.tif", data[:, :2], st.StackMeta("TCYX", np.dtype(np.uint16)))
    capsys.readouterr()
    assert _main(_checkpoint(tmp_path, channels=3), two, "--out", tmp_path / "b") == 1
    err = capsys.readouterr().err
    assert "a stack with 2 channel(s) (axes TCYX), but the model takes 3-channel images" in err
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_reads_and_writes_one_plane_at_a_time(identity, tmp_path: Path, monkeypatch) -> None:
    """Memory bound: no read of the source is larger than one plane, and the writer gets one plane per call."""
    data = _data((5, 32, 64))
    src = tmp_path / "vol.ome.tif"
    st.write_stack(src, data, st.StackMeta("ZYX", np.dtype(np.uint16), SIZES))
    reads: list[tuple[int, ...]] = []
    real_open = st.open_stack

    class Counting:
        def __init__(self, source):
            self.source, self.shape = source, source.shape

        def __getitem__(self, key):
            part = np.asarray(self.source[key])
            reads.append(part.shape)
            return part

    def counting_open(path, axes=None, counts=True):
        stack = real_open(path, axes, counts)
        return st.Stack(Counting(stack.source), stack.source_axes, stack.meta, stack.path)

    writes: list[tuple[object, tuple[int, ...]]] = []
    real_write = st.StackWriter.write

    def counting_write(self, key, values):
        writes.append((key, np.asarray(values).shape))
        real_write(self, key, values)

    monkeypatch.setattr(inf, "open_stack", counting_open)
    monkeypatch.setattr(st.StackWriter, "write", counting_write)
    assert _main(_checkpoint(tmp_path), src, "--out", tmp_path / "out") == 0
    assert reads == [(32, 64)] * 5
    assert writes == [((z, slice(None), slice(None)), (32, 64)) for z in range(5)]
    np.testing.assert_array_equal(st.read_stack(tmp_path / "out" / "vol.ome.tif").read(), data)


def test_a_plain_multipage_tiff_needs_axes_and_single_pages_stay_2d(identity, tmp_path: Path, capsys) -> None:
    data = _data((5, 32, 32), seed=2)  # not 3: tifffile writes 3 × Y × X as one planar RGB page
    tifffile.imwrite(tmp_path / "raw.tif", data, metadata=None)  # names no axes
    tifffile.imwrite(tmp_path / "one.tif", data[0], metadata=None)
    assert inf.is_stack(tmp_path / "raw.tif", None) and not inf.is_stack(tmp_path / "one.tif", None)
    assert inf.is_stack(tmp_path / "one.tif", "ZYX")  # --axes with Z: every TIFF is a stack
    ckpt = _checkpoint(tmp_path)
    assert _main(ckpt, tmp_path / "raw.tif", tmp_path / "one.tif", "--out", tmp_path / "a") == 1
    err = capsys.readouterr().err
    assert "raw.tif: the file does not name its axes (3 dimensions); set --axes" in err
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a" / "one.tif"), data[0])  # the 2-D path
    assert _main(ckpt, tmp_path / "raw.tif", "--out", tmp_path / "b", "--axes", "TYX") == 0
    out = st.read_stack(tmp_path / "b" / "raw.tif")
    assert out.axes == "TYX"
    np.testing.assert_array_equal(out.read(), data)
    assert _main(ckpt, tmp_path / "raw.tif", "--out", tmp_path / "c", "--axes", "QYX") == 2
    assert "--axes='QYX' is not a valid axes string" in capsys.readouterr().err


def test_existing_stack_outputs_need_overwrite(identity, tmp_path: Path, capsys) -> None:
    data = _data((2, 32, 32), seed=3)
    src = st.write_stack(tmp_path / "s.ome.tif", data, st.StackMeta("ZYX", np.dtype(np.uint16)))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "s.std.ome.tif").write_bytes(b"user's")
    ckpt = _checkpoint(tmp_path)
    assert _main(ckpt, src, "--out", tmp_path / "out", "--uncertainty") == 2
    assert "s.std.ome.tif" in capsys.readouterr().err
    assert (tmp_path / "out" / "s.std.ome.tif").read_bytes() == b"user's"
    assert _main(ckpt, src, "--out", tmp_path / "out", "--uncertainty", "--overwrite") == 0
    assert st.read_stack(tmp_path / "out" / "s.std.ome.tif", counts=False).dtype == np.float32


def test_ome_zarr_in_ome_tiff_out(identity, tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr", reason="OME-Zarr is an optional extra (ssdn[zarr])")
    data = _data((2, 32, 32), seed=4)
    root = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w", zarr_format=2)
    root.create_array("0", data=data)
    root.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [0.5, 0.1, 0.1]}]}
            ],
        }
    ]
    assert _main(_checkpoint(tmp_path), tmp_path / "img.ome.zarr", "--out", tmp_path / "out") == 0
    out = st.read_stack(tmp_path / "out" / "img.ome.tif")
    assert out.axes == "ZYX" and out.meta.physical_sizes["Z"] == (0.5, "micrometer")
    np.testing.assert_array_equal(out.read(), data)


def test_real_model_denoises_a_stack_and_warns_on_another_depth(tmp_path: Path) -> None:
    data = _data((2, 40, 40), seed=5).astype(np.uint8)
    src = st.write_stack(tmp_path / "v.ome.tif", data, st.StackMeta("ZYX", np.dtype(np.uint8), SIZES))
    with pytest.warns(UserWarning, match="v.ome.tif is 8-bit but the model was trained on 16-bit"):
        status = _main(_checkpoint(tmp_path), src, "--out", tmp_path / "out", "--uncertainty")
    assert status == 0
    out = st.read_stack(tmp_path / "out" / "v.ome.tif")
    assert out.dtype == np.uint8 and out.shape == data.shape and out.meta.physical_sizes == SIZES
    std = st.read_stack(tmp_path / "out" / "v.std.ome.tif", counts=False).read()
    assert std.dtype == np.float32 and std.shape == data.shape and np.isfinite(std).all() and (std > 0).all()


def test_output_names() -> None:
    assert inf.stack_output_name(Path("a/b.ome.zarr")) == Path("a/b.ome.tif")
    assert inf.stack_output_name(Path("b.zarr")) == Path("b.ome.tif")
    assert inf.stack_output_name(Path("b.ome.tiff")) == Path("b.ome.tif")
    assert inf.stack_outputs(Path("o/b.ome.tif"), True) == (Path("o/b.ome.tif"), Path("o/b.std.ome.tif"))
    assert inf.stack_outputs(Path("o/b.tif"), False) == (Path("o/b.tif"),)


def test_param_auto_estimates_each_plane_and_reports_the_mean(identity, tmp_path: Path, capsys) -> None:
    gen = np.random.default_rng(6)
    sigmas = (10.0, 30.0)  # 8-bit units, one per plane
    data = np.stack([np.clip(np.rint(128 + gen.normal(0, s, (96, 96))), 0, 255) for s in sigmas]).astype(
        np.uint8
    )
    src = st.write_stack(tmp_path / "n.ome.tif", data, st.StackMeta("ZYX", np.dtype(np.uint8)))
    assert _main(_checkpoint(tmp_path, depth=8), src, "--out", tmp_path / "out", "--param", "auto") == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert (
        line.startswith(f"{tmp_path / 'out' / 'n.ome.tif'}\tlevel sigma=") and "(auto)\t2 planes ZYX" in line
    )
    assert float(line.split("sigma=")[1].split()[0]) == pytest.approx(np.mean(sigmas), rel=0.1)
