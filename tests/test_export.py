"""ssdn.export: TorchScript and ONNX (through onnxruntime) give the module's outputs on random inputs of
sizes other than the traced one, square or not, multiples of 32 or not (the graph pads); safetensors round-trips
to an equal module; bad input is a UserError; an existing file is replaced only when asked."""

from __future__ import annotations

import functools
import io
import json
import struct
import zipfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import tifffile
import torch
from omegaconf import OmegaConf

from ssdn.data import stacks as st
from ssdn.data.intensity import Intensity
from ssdn.errors import UserError
from ssdn.export import main
from ssdn.inference.export_formats import export, export_bf16, load_safetensors
from ssdn.inference.zoo import synthetic_input
from ssdn.nets import UNet
from ssdn.nets.padding import crop, pad_to_multiple
from ssdn.training import precision
from ssdn.training.checkpoints import CheckpointError, load_denoiser
from ssdn.training.module import DenoiserModule
from tests.conftest import compose_config

ONNX_ATOL, ONNX_MEAN = 1e-3, 2e-6
"""onnxruntime's float32 convolutions sum in another order than torch's (~1e-7 relative), and the posterior
mean passes that through inv(Σ_x), ill-conditioned in places for an untrained net: the largest pixel difference
observed is 2e-4 here (1.3e-6 with the trained σ = 25 checkpoint), a quarter of an 8-bit level at 1e-3; the mean
over pixels stays at float32 rounding (≤ 6e-7 observed). The posterior maths runs in float64 inside the graph."""


@functools.cache
def build(*overrides: str) -> DenoiserModule:
    cfg = compose_config(*overrides, output_dir="unused")  # never written: no training here
    torch.manual_seed(0)
    module = DenoiserModule(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)).eval()
    with torch.no_grad():  # a non-trivial learned level, so that its use is visible
        for name, p in module.named_parameters():
            if "level" in name:
                p.add_(0.3)
    return module


def reference(
    module: DenoiserModule, noisy: torch.Tensor, param: float | None, bf16: bool = False
) -> torch.Tensor:
    """What the module reports on ``noisy`` mirror-padded to multiples of 32 and cropped back (what
    ``python -m ssdn.denoise`` does); with ``param`` the level is that value whatever the level source."""
    h, w = noisy.shape[-2:]
    noisy = pad_to_multiple(noisy)[0]
    if param is None:
        params = module.noise.sample_params(noisy.shape[0])
        return crop(next(iter(module.denoise(noisy, params, bf16=bf16).values())), h, w)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        level = module.noise.to_level(torch.full((noisy.shape[0],), param, dtype=torch.float64))
        outs = module.method.objective.outputs(module.net(noisy), noisy, module.noise, level)
    return crop(next(iter(outs.values())), h, w)


CASES = [
    (("noise=gaussian", "method=ssdn"), None),  # the configured σ = 25
    (("noise=gaussian", "method=ssdn"), 40.0),
    (("noise=gaussian", "method=ssdn", "noise_params=sigma_global"), None),  # the learned level
    (("noise=poisson", "method=ssdn_diag"), None),
    (("noise=gaussian", "method=n2c"), None),
]


@pytest.mark.parametrize(("overrides", "param"), CASES)
def test_torchscript_and_onnx_equal_the_module(
    tmp_path: Path, overrides: tuple[str, ...], param: float | None
) -> None:
    import onnxruntime as ort

    module = build(*overrides)
    params = None if param is None else [param]
    ts_path = export(module, "torchscript", tmp_path / "m.pt", params, size=32, precision="fp32")
    ts = torch.jit.load(str(ts_path))
    onnx_path = export(module, "onnx", tmp_path / "m.onnx", params, size=32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    # traced at 32², batch 1; run on a larger square and on non-square inputs both ways round
    for shape in ((2, 3, 64, 64), (1, 3, 32, 96), (2, 3, 64, 32)):
        noisy = torch.rand(shape, generator=torch.Generator().manual_seed(1))
        expected = reference(module, noisy, param)
        with torch.no_grad():
            torch.testing.assert_close(ts(noisy), expected, rtol=0, atol=0)
        (out,) = session.run(None, {"noisy": noisy.numpy()})
        assert out.dtype == np.float32 and out.shape == shape
        diff = (torch.from_numpy(out) - expected).abs()
        assert diff.max() <= ONNX_ATOL and diff.mean() <= ONNX_MEAN
        if param is not None:  # the given level is really used
            assert (torch.from_numpy(out) - reference(module, noisy, None)).abs().max() > 1e-3
    assert all(
        not m.two_pass for m in module.modules() if isinstance(m, UNet)
    )  # the module is left as it was


@pytest.mark.slow  # ~45 s on the shared 2-core CPU: two traces and an ONNX export
def test_any_height_and_width_are_padded_inside_the_graph(tmp_path: Path) -> None:
    """33×33 (once a broadcast error) and 64×96 through TorchScript and onnxruntime: the graph mirror-pads to
    multiples of 32 and crops back, with H and W dynamic (traced at 64²)."""
    import onnxruntime as ort

    module = build("noise=gaussian", "method=ssdn")
    ts = torch.jit.load(str(export(module, "torchscript", tmp_path / "m.pt", [25.0], precision="fp32")))
    session = ort.InferenceSession(
        str(export(module, "onnx", tmp_path / "m.onnx", [25.0])), providers=["CPUExecutionProvider"]
    )
    for shape in ((1, 3, 33, 33), (1, 3, 64, 96)):
        noisy = torch.rand(shape, generator=torch.Generator().manual_seed(4))
        expected = reference(module, noisy, 25.0)
        with torch.no_grad():
            torch.testing.assert_close(ts(noisy), expected, rtol=0, atol=0)
        (out,) = session.run(None, {"noisy": noisy.numpy()})
        assert out.shape == shape
        diff = (torch.from_numpy(out) - expected).abs()
        assert diff.max() <= ONNX_ATOL and diff.mean() <= ONNX_MEAN


def test_safetensors_round_trip_without_pickle(tmp_path: Path) -> None:
    module = build("noise=gaussian", "method=ssdn", "noise_params=sigma_global")
    path = export(module, "safetensors", tmp_path / "w.safetensors")
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])  # the format: a JSON header, then raw tensor bytes
    assert json.loads(header["__metadata__"]["ssdn_config"]) == json.loads(
        json.dumps(module.hparams["config"])
    )
    rebuilt = load_safetensors(path)
    mine, theirs = module.state_dict(), rebuilt.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    noisy = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(
        reference(rebuilt, noisy, None), reference(module, noisy, None), rtol=0, atol=0
    )


def _checkpoint(module: DenoiserModule, path: Path) -> Path:
    """A minimal Lightning checkpoint of an untrained module (what load_from_checkpoint reads)."""
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": L.__version__,
        },
        path,
    )
    return path


def test_cli_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = build("noise=gaussian", "method=ssdn")
    ckpt = _checkpoint(module, tmp_path / "m.ckpt")
    out = main([str(ckpt), "--format", "torchscript", "--out", str(tmp_path / "m.pt"), "--param", "25"])
    assert out.is_file() and json.loads(capsys.readouterr().out.splitlines()[-1])["format"] == "torchscript"
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_denoiser(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as exc:  # one line, exit status 2
        main([str(tmp_path / "junk.ckpt"), "--format", "onnx", "--out", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "junk.ckpt: not a checkpoint" in err and len(err.splitlines()) == 1
    with pytest.raises(UserError, match="--format must be one of"):
        export(module, "tflite", tmp_path / "x")
    with pytest.raises(UserError, match="sigma must satisfy"):
        export(module, "onnx", tmp_path / "x.onnx", [-25.0])
    with pytest.raises(UserError, match="--param needs 1 value"):
        export(module, "onnx", tmp_path / "x.onnx", [25.0, 1.0])
    with pytest.raises(UserError, match="multiple of 32"):
        export(module, "torchscript", tmp_path / "x.pt", size=48)
    with pytest.raises(UserError, match="pass the level to export with --param"):
        export(build("noise=gaussian_range", "method=ssdn"), "onnx", tmp_path / "x.onnx")
    (tmp_path / "plain.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(UserError, match="no 'ssdn_config' metadata"):
        load_safetensors(tmp_path / "plain.safetensors")
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x").exists()


def _main_status(*argv: str) -> int:
    try:
        main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_an_existing_out_is_replaced_only_with_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _checkpoint(build("noise=gaussian", "method=ssdn"), tmp_path / "m.ckpt")
    for fmt, name in (("safetensors", "w.safetensors"), ("torchscript", "m.pt")):
        target = tmp_path / name
        target.write_bytes(b"the user's own file")
        args = [str(ckpt), "--format", fmt, "--out", str(target)]
        args += [] if fmt == "safetensors" else ["--param", "25"]
        assert _main_status(*args) == 2
        err = capsys.readouterr().err
        assert f"--out {target} exists already; pass --overwrite" in err and len(err.splitlines()) == 1
        assert target.read_bytes() == b"the user's own file"
        assert _main_status(*args, "--overwrite") == 0
        assert target.read_bytes() != b"the user's own file"
    assert _main_status(str(ckpt), "--format", "onnx", "--out", str(tmp_path)) == 2
    assert "is a folder; give the file to write" in capsys.readouterr().err


@pytest.mark.slow  # ~25 s: two TorchScript traces
def test_bf16_torchscript_is_the_modules_bf16_and_auto_follows_the_cpu_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = build("noise=gaussian", "method=ssdn")
    ts = torch.jit.load(str(export(module, "torchscript", tmp_path / "b.pt", [25.0], precision="bf16")))
    noisy = torch.rand((1, 3, 33, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ts(noisy), reference(module, noisy, 25.0, bf16=True), rtol=0, atol=0)
    assert (ts(noisy) - reference(module, noisy, 25.0)).abs().max() > 1e-4  # really bf16
    for flags, fmt, expected in (
        ({"avx512_bf16"}, "torchscript", True),
        ({"amx_bf16"}, "torchscript", True),
        ({"avx2"}, "torchscript", False),
        ({"avx512_bf16"}, "onnx", False),
    ):
        monkeypatch.setattr(precision, "cpu_flags", lambda flags=flags: frozenset(flags))
        assert export_bf16(fmt, "auto") is expected
        assert export_bf16(fmt, "fp32") is False
    ckpt = _checkpoint(module, tmp_path / "m.ckpt")
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    main([str(ckpt), "--format", "torchscript", "--out", str(tmp_path / "auto.pt"), "--param", "25"])
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["precision"] == "fp32"
    assert (
        _main_status(str(ckpt), "--format", "onnx", "--out", str(tmp_path / "x.onnx"), "--precision", "bf16")
        == 2
    )
    assert "--precision bf16 does not apply to ONNX" in capsys.readouterr().err


def _zoo_checkpoint(path: Path, depth: int = 16, scale: Intensity | None = None) -> Path:
    """A 1-channel ssdn checkpoint with the pixel scale train.py records (the package's input depth, and the
    intensity scale of data.offset / data.peak when given)."""
    module = build("noise=gaussian", "method=ssdn", "channels=1")
    _checkpoint(module, path)
    state = torch.load(path, weights_only=True)
    state["ssdn_pixel_scale"] = {"add_noise": False, "bit_depth": depth, "max_value": 2**depth - 1}
    state["ssdn_pixel_scale"] |= (scale or Intensity.of_depth(depth)).record()
    torch.save(state, path)
    return path


def test_bioimageio_refusals_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An existing --out is kept unless --overwrite; a sample of another depth or too small is one line."""
    ckpt = _zoo_checkpoint(tmp_path / "m.ckpt")
    (tmp_path / "model.zip").write_bytes(b"the user's own file")
    args = (str(ckpt), "--format", "bioimageio", "--out")
    assert _main_status(*args, str(tmp_path / "model.zip")) == 2
    assert "model.zip exists already; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "model.zip").read_bytes() == b"the user's own file"
    tifffile.imwrite(tmp_path / "s8.tif", np.zeros((64, 64), np.uint8))
    assert _main_status(*args, str(tmp_path / "a.zip"), "--sample", str(tmp_path / "s8.tif")) == 2
    assert "s8.tif is 8-bit but the model was trained on 16-bit data" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "s16.tif", np.zeros((40, 64), np.uint16))
    assert _main_status(*args, str(tmp_path / "a.zip"), "--sample", str(tmp_path / "s16.tif")) == 2
    assert "40×64 is smaller than the --size 64 crop" in capsys.readouterr().err
    assert _main_status(*args, str(tmp_path / "a.zip"), "--precision", "bf16") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt", "model.zip", "s16.tif", "s8.tif"]


def test_synthetic_test_input_is_seeded_and_at_the_depth() -> None:
    a, b = synthetic_input(1, 64, 16), synthetic_input(1, 64, 16)
    assert a.dtype == np.uint16 and a.shape == (1, 1, 64, 64)
    np.testing.assert_array_equal(a, b)
    assert (
        0.2 * 65535 < a.mean() < 0.6 * 65535 and a.std() > 0.04 * 65535
    )  # noisy mid-range, not clipped flat
    assert synthetic_input(3, 32, 8).dtype == np.uint8
    f = synthetic_input(1, 32, None)
    assert f.dtype == np.float32 and 0 <= f.min() and f.max() <= 1
    dim = synthetic_input(
        1, 64, 16, Intensity(100.0, 2900.0)
    )  # mid-range of the trained scale, above the offset
    assert 100 + 0.2 * 2900 < dim.mean() < 100 + 0.6 * 2900 and dim.min() >= 100


@pytest.mark.slow  # ~65 s: two traces, the spec's validation, bioimageio.core running both weights formats
def test_bioimageio_package_validates_and_passes_the_zoo_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("bioimageio.core", reason="Model Zoo export is an optional extra: ssdn[bioimageio]")
    from ssdn.inference import bioimageio

    try:
        bioimageio.check_installed()
    except bioimageio.PackageError as exc:
        pytest.skip(str(exc))
    from bioimageio.core import test_model
    from bioimageio.spec import load_model_description
    from bioimageio.spec.model import v0_5

    scale = Intensity(100.0, 2900.0)  # data.offset=100 data.peak=2900: the package scales as training did
    ckpt = _zoo_checkpoint(tmp_path / "m.ckpt", scale=scale)
    stack = np.random.default_rng(0).integers(200, 3000, (3, 80, 96), dtype=np.uint16)
    st.write_stack(tmp_path / "s.ome.tif", stack, st.StackMeta("ZYX", np.dtype(np.uint16)))
    out = main(
        [
            str(ckpt),
            "--format",
            "bioimageio",
            "--out",
            str(tmp_path / "model.zip"),
            "--param",
            "25",
            "--sample",
            str(tmp_path / "s.ome.tif"),
            "--author",
            "A. Microscopist",
        ]
    )
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert line["format"] == "bioimageio" and line["input_scale"] == {"offset": 100.0, "peak": 2900.0}
    descr = load_model_description(out)
    assert isinstance(descr, v0_5.ModelDescr), getattr(descr, "validation_summary", descr)
    assert [a.name for a in descr.authors] == ["A. Microscopist"]
    (inp,) = descr.inputs
    assert [str(a.id) for a in inp.axes] == ["batch", "channel", "y", "x"]
    assert inp.data.type == "uint16"
    pre = [p.kwargs for p in inp.preprocessing if p.id == "scale_linear"]
    assert [(k.gain, k.offset) for k in pre] == [(1 / 2900, -100 / 2900)]  # type: ignore[union-attr]
    with zipfile.ZipFile(out) as z:
        test_input = np.load(io.BytesIO(z.read("test_input.npy")))
        test_output = np.load(io.BytesIO(z.read("test_output.npy")))
        ts = torch.jit.load(io.BytesIO(z.read("denoiser.pt")))
    np.testing.assert_array_equal(test_input, stack[1, 8:72, 16:80][None, None])  # centred crop, middle plane
    with torch.no_grad():
        unit = (test_input.astype(np.float32) - np.float32(100)) * np.float32(1 / 2900)
        again = ts(torch.from_numpy(unit)).numpy() * np.float32(2900) + np.float32(100)
    np.testing.assert_array_equal(test_output, again.astype(np.float32))
    summary = test_model(out, devices=["cpu"])
    assert summary.status == "passed", summary.format()
    assert _main_status(str(ckpt), "--format", "bioimageio", "--out", str(out), "--overwrite") == 0
    np.testing.assert_array_equal(
        np.load(io.BytesIO(zipfile.ZipFile(out).read("test_input.npy"))), synthetic_input(1, 64, 16, scale)
    )
