"""A trained 2-D denoiser as a BioImage Model Zoo package: the exported graph traced to TorchScript and ONNX, a
test input and the TorchScript model's output for it, handed to ``ssdn.inference.bioimageio.write_package``.

The package takes the camera's stored counts at the training data's bit depth (from the checkpoint's pixel
scale; [0, 1] float32 when a checkpoint does not record it) and scales them as training did (its
``data.offset`` / ``data.peak``, ``ssdn.data.intensity``). Its weights are
fp32 in both formats: a package runs on whatever machine opens it, and its ONNX weights must reproduce the
TorchScript test output. The test input is a centred ``size`` × ``size`` crop of ``--sample`` (an image, or the
middle plane of a stack), else a deterministic synthetic image: a smooth pattern with noise drawn from a seeded
generator.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ssdn.data.intensity import Intensity
from ssdn.data.io import ImageDecodeError, bit_depth, load_as_stored
from ssdn.data.stacks import StackError, open_stack, plane_indices, take_plane
from ssdn.errors import UserError
from ssdn.inference import bioimageio
from ssdn.inference.denoiser import model_input
from ssdn.inference.export_formats import write_onnx, write_torchscript
from ssdn.inference.exported import ExportedDenoiser, fixed_level
from ssdn.inference.stacks import is_stack
from ssdn.nets.unet import SIDE_MULTIPLE
from ssdn.training.module import DenoiserModule

__all__ = ["SYNTHETIC_SEED", "export_bioimageio", "sample_input", "synthetic_input"]

SYNTHETIC_SEED = 0
"""Seed of the generator that draws the synthetic test input's noise."""


def _channel_names(channels: int) -> list[str]:
    return (
        ["red", "green", "blue"]
        if channels == 3
        else ["intensity"]
        if channels == 1
        else [f"channel{i}" for i in range(channels)]
    )


def synthetic_input(
    channels: int, size: int, depth: int | None, intensity: Intensity | None = None
) -> np.ndarray:
    """(1, C, size, size): smooth blobs at mid-range plus Gaussian noise (σ 5 % of the range), at ``depth``
    bits (uint8 / uint16; the range is ``intensity``'s, by default the depth's) or float32 in [0, 1] when
    ``depth`` is None. Reproducible: a seeded generator."""
    gen = torch.Generator().manual_seed(SYNTHETIC_SEED)
    y, x = torch.meshgrid(
        torch.linspace(0, 1, size, dtype=torch.float64),
        torch.linspace(0, 1, size, dtype=torch.float64),
        indexing="ij",
    )
    clean = 0.4 + 0.2 * torch.sin(6.0 * x) * torch.cos(4.0 * y)
    noisy = clean + 0.05 * torch.randn(1, channels, size, size, generator=gen, dtype=torch.float64)
    unit = noisy.clamp(0, 1).numpy()
    if depth is None:
        return unit.astype(np.float32)
    scale = intensity or Intensity.of_depth(depth)
    return scale.from_unit(unit, np.uint8 if depth == 8 else np.uint16)


def sample_input(path: Path, channels: int, size: int, depth: int | None) -> np.ndarray:
    """(1, C, size, size): the centred crop of an image, or of a stack's middle plane, as the model's
    channels. Its bit depth must be the training data's, since the package scales every input by that depth."""
    try:
        if is_stack(path, None):
            stack = open_stack(path)
            planes = plane_indices(stack)
            plane = take_plane(stack, planes[len(planes) // 2])
        else:
            stored, _alpha = load_as_stored(path)
            plane = model_input(stored, channels, path).transpose(2, 0, 1)
    except (ImageDecodeError, StackError, OSError) as exc:
        raise UserError(f"--sample {path}: cannot read it ({exc})") from None
    if plane.shape[0] != channels:
        raise UserError(f"--sample {path}: {plane.shape[0]} channel(s), the model takes {channels}")
    h, w = plane.shape[1:]
    if h < size or w < size:
        raise UserError(
            f"--sample {path}: {h}×{w} is smaller than the --size {size} crop; give --size ≤ {min(h, w)}"
        )
    got = bit_depth(plane)
    if depth is not None and got != depth:
        raise UserError(
            f"--sample {path} is {got}-bit but the model was trained on {depth}-bit data; give a {depth}-bit sample"
        )
    top, left = (h - size) // 2, (w - size) // 2
    crop = np.ascontiguousarray(plane[None, :, top : top + size, left : left + size])
    if depth is None:
        return (crop.astype(np.float32) / np.float32(2**got - 1)).astype(np.float32)
    return crop


def export_bioimageio(
    module: DenoiserModule,
    out: str | Path,
    *,
    param: Sequence[float] | None = None,
    size: int = 64,
    depth: int | None = None,
    intensity: Intensity | None = None,
    sample: str | Path | None = None,
    name: str | None = None,
    authors: Sequence[str] = ("ssdn",),
    overwrite: bool = False,
) -> Path:
    """Write the Model Zoo zip of ``module`` at ``out`` (refused if it exists, unless ``overwrite``).

    ``depth``: the training data's bit depth (the package's input is the stored counts), None for [0, 1] float32;
    ``intensity``: the training's scale of those counts (None: the depth's own).
    ``size``: side of the traced example and of the test input, a multiple of 32.
    """
    path = Path(out)
    if path.exists() and not overwrite:
        raise UserError(
            f"--out {path} exists already; pass --overwrite to replace it, or choose another name"
        )
    if size <= 0 or size % SIDE_MULTIPLE:
        raise UserError(f"--size must be a positive multiple of {SIDE_MULTIPLE}, got {size}")
    if not path.parent.is_dir():
        raise UserError(f"--out {path}: the folder {path.parent} does not exist")
    channels = module.channels
    test_input = (
        sample_input(Path(sample), channels, size, depth)
        if sample is not None
        else synthetic_input(channels, size, depth, intensity)
    )
    bioimageio.check_installed()
    model = ExportedDenoiser(module, fixed_level(module, param), bf16=False).eval()
    scale = intensity or Intensity(0.0, 1.0 if depth is None else float(2**depth - 1))
    top, offset = np.float32(scale.peak), np.float32(scale.offset)
    with tempfile.TemporaryDirectory(prefix="ssdn-zoo-") as tmp:
        work = Path(tmp)
        # as the package's pre-processing computes it: a multiplication by the reciprocal of the peak
        unit = torch.from_numpy((test_input.astype(np.float32) - offset) * (np.float32(1) / top))
        write_torchscript(model, unit, work / "denoiser.pt")
        write_onnx(model, unit, work / "denoiser.onnx")
        with torch.no_grad():
            test_output = torch.jit.load(str(work / "denoiser.pt"))(unit).numpy() * top + offset
        method = module.method.name
        return bioimageio.write_package(
            path,
            torchscript=work / "denoiser.pt",
            onnx=work / "denoiser.onnx",
            name=name or f"ssdn {method} {module.noise.name} denoiser",
            description=(
                f"Self-supervised {method} denoiser for {module.noise.name} noise ({module.noise.extra_repr()}), "
                "trained on noisy images alone with ssdn (Laine et al. 2019)."
            ),
            axes="CYX",
            channels=_channel_names(channels),
            test_input=test_input,
            test_output=test_output.astype(np.float32),
            authors=list(authors),
            bit_depth=depth,
            offset=scale.offset,
            peak=None if intensity is None else scale.peak,
            tags=[module.noise.name, method],
            overwrite=overwrite,
        )
