"""Model Zoo packages (ssdn.inference.bioimageio): written from TorchScript + ONNX, validated by
bioimageio.core's own test."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from ssdn.errors import UserError
from ssdn.inference import bioimageio as bz
from ssdn.nets import UNet


def _zoo_tools() -> None:
    """Skip unless bioimageio.core (and a pydantic its spec works with) and onnx are installed."""
    pytest.importorskip("bioimageio.core", reason="Model Zoo export is an optional extra: ssdn[bioimageio]")
    pytest.importorskip("onnx", reason="the ONNX weights need onnx (the export extra)")
    try:
        bz.check_installed()
    except bz.PackageError as exc:
        pytest.skip(str(exc))


class _Tiny(nn.Module):
    """A small ssdn net that maps (N, 1, H, W) to the same shape (the shape of the exported denoisers)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = UNet(1, 1, blindspot=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.01 * self.net(x)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    _zoo_tools()
    torch.manual_seed(0)
    model = _Tiny().eval()
    folder = tmp_path_factory.mktemp("weights")
    example = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(folder / "denoiser.pt"))
        torch.onnx.export(
            model,
            (example,),
            str(folder / "denoiser.onnx"),
            input_names=["noisy"],
            output_names=["denoised"],
            dynamic_axes={n: {0: "batch", 2: "height", 3: "width"} for n in ("noisy", "denoised")},
            opset_version=bz.ONNX_OPSET,
            dynamo=False,
        )
    counts = np.random.default_rng(0).integers(100, 400, size=(1, 1, 64, 64), dtype=np.uint16)
    with torch.no_grad():
        unit = torch.from_numpy(counts.astype(np.float32) * np.float32(1 / 65535))
        out = traced(unit).numpy() * np.float32(65535)
    return folder, counts, out.astype(np.float32)


def _write(weights, out, **kw):
    folder, counts, denoised = weights
    args = dict(
        torchscript=folder / "denoiser.pt",
        onnx=folder / "denoiser.onnx",
        name="ssdn tiny test denoiser",
        description="A tiny test model for the package writer.",
        axes="CYX",
        channels=["GFP"],
        test_input=counts,
        test_output=denoised,
        authors=["ssdn tests"],
        bit_depth=16,
    )
    args.update(kw)
    return bz.write_package(out, **args)


@pytest.mark.slow  # ~35 s: bioimageio.core runs both weights formats at 6 input sizes
def test_package_passes_bioimageio_core_test(weights, tmp_path):
    from bioimageio.core import test_model
    from bioimageio.spec import load_model_description

    path = _write(weights, tmp_path / "model.zip")
    names = zipfile.ZipFile(path).namelist()
    assert {
        "rdf.yaml",
        "README.md",
        "denoiser.pt",
        "denoiser.onnx",
        "test_input.npy",
        "test_output.npy",
    } <= set(names)
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]
    descr = load_model_description(path)
    (inp,), (outp,) = descr.inputs, descr.outputs
    y, x = inp.axes[2].size, inp.axes[3].size
    assert (y.min, y.step, x.min, x.step) == (32, 32, 32, 32)
    assert [p.kwargs.gain for p in inp.preprocessing if p.id == "scale_linear"] == [pytest.approx(1 / 65535)]
    assert [p.kwargs.gain for p in outp.postprocessing if p.id == "scale_linear"] == [65535]
    assert descr.cite[0].url is not None and "1901.10277" in str(descr.cite[0].url)
    summary = test_model(path, devices=["cpu"])
    assert summary.status == "passed", summary.format()


@pytest.mark.slow  # ~15 s
def test_wrong_test_output_fails_the_zoo_test(weights, tmp_path):
    from bioimageio.core import test_model

    denoised = weights[2]
    path = _write(weights, tmp_path / "bad.zip", test_output=denoised + 50)
    summary = test_model(path, devices=["cpu"], weight_format="torchscript", stop_early=True)
    assert summary.status != "passed"
    failed = [d.name for d in summary.details if d.status == "failed"]
    assert any("Reproduce test outputs" in name for name in failed), failed


def test_refuses_bad_inputs_and_existing_file(tmp_path):
    """Checked before the spec is built (no bioimageio needed): each message names the argument."""
    (tmp_path / "denoiser.pt").write_bytes(b"")
    (tmp_path / "denoiser.onnx").write_bytes(b"")
    counts = np.zeros((1, 1, 64, 64), np.uint16)
    denoised = np.zeros((1, 1, 64, 64), np.float32)
    weights = (tmp_path, counts, denoised)
    with pytest.raises(UserError, match="multiple of its step 32"):
        _write(weights, tmp_path / "a.zip", test_input=counts[..., :48], test_output=denoised[..., :48])
    with pytest.raises(UserError, match="uint8 or uint16"):
        _write(weights, tmp_path / "a.zip", test_input=counts.astype(np.float32))
    with pytest.raises(UserError, match=r"test output of shape \(1, 1, 64, 32\)"):
        _write(weights, tmp_path / "a.zip", test_output=denoised[..., :32])
    with pytest.raises(UserError, match=r"not \(1, 2, Y, X\)"):
        _write(weights, tmp_path / "a.zip", channels=["a", "b"])
    with pytest.raises(UserError, match="axes='ZYX'"):
        _write(weights, tmp_path / "a.zip", axes="ZYX")
    with pytest.raises(UserError, match="not found"):
        _write(weights, tmp_path / "a.zip", onnx=tmp_path / "missing.onnx")
    (tmp_path / "a.zip").write_bytes(b"user's")
    with pytest.raises(UserError, match="already exists"):
        _write(weights, tmp_path / "a.zip")
    assert (tmp_path / "a.zip").read_bytes() == b"user's"
