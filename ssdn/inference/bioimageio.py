"""BioImage Model Zoo packages (bioimageio spec 0.5) of an exported denoiser, for Fiji, napari, ilastik, ...

:func:`write_package` builds the ``rdf.yaml`` with ``bioimageio.spec`` (which validates every field), checks
the test tensors against it and writes the zip atomically; ``bioimageio.core.test_model`` re-runs the test
input through each weights format (TorchScript, and ONNX converted from the same model). With ``bit_depth`` 8
or 16 the package takes the camera's stored counts: pre-processing scales them to model units as training did
((v − offset) / peak, by default v / 255 or v / 65535), post-processing back to counts (float32, not rounded or
clipped). Spatial sizes are
multiples of the net's 32, which a tool pads or tiles to. Needs ``pip install 'ssdn[bioimageio]'``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ssdn.errors import UserError

__all__ = ["PAPER_CITATION", "PAPER_URL", "PackageError", "check_installed", "write_package"]

PAPER_CITATION = (
    "Laine, S., Karras, T., Lehtinen, J., Aila, T.: High-Quality Self-Supervised Deep Image Denoising. "
    "Advances in Neural Information Processing Systems 32 (NeurIPS 2019)"
)
PAPER_URL = "https://arxiv.org/abs/1901.10277"
PAPER_DOI = "10.48550/arXiv.1901.10277"
SIDE_MULTIPLE = 32
"""Spatial sizes of the U-Net's input (five 2× poolings); ``ssdn.nets.unet.SIDE_MULTIPLE``."""
ONNX_OPSET = 17
"""The opset ``ssdn.export`` writes ONNX graphs with."""
_MODEL_AXES = ("CYX", "CZYX")


class PackageError(UserError, ValueError):
    """Inputs that do not make a valid Model Zoo package (names the argument and what to change)."""


def check_installed() -> None:
    """Raise a :class:`PackageError` saying what to install when ``bioimageio.spec`` is missing or cannot work.

    bioimageio.spec before 0.5.14 (the one bioimageio.core 0.11 pins) fails to serialise any description under
    pydantic 2.14 (its wrap serialiser passes ``info`` where pydantic now takes an index key).
    """
    try:
        spec_version = importlib.metadata.version("bioimageio.spec")
    except importlib.metadata.PackageNotFoundError:
        raise PackageError(
            "writing a Model Zoo package needs bioimageio.spec; pip install 'ssdn[bioimageio]'"
        ) from None
    from packaging.version import Version

    pydantic_version = importlib.metadata.version("pydantic")
    if Version(spec_version) < Version("0.5.14") and Version(pydantic_version) >= Version("2.14"):
        raise PackageError(
            f"bioimageio.spec {spec_version} cannot write descriptions with pydantic {pydantic_version}; "
            "pip install 'pydantic<2.14' (as the ssdn[bioimageio] extra pins)"
        )


def _channel_ids(channels: Sequence[str]) -> list[str]:
    """Channel names as the spec's identifiers (letters, digits, underscores; unique)."""
    ids = [re.sub(r"\W+", "_", str(c)).strip("_") or f"channel{i}" for i, c in enumerate(channels)]
    ids = [f"c_{i}" if i[0].isdigit() else i for i in ids]
    if len(set(ids)) != len(ids):
        ids = [f"{i}_{n}" for n, i in enumerate(ids)]
    return ids


def _check_inputs(
    axes: str,
    channels: Sequence[str],
    test_input: np.ndarray,
    test_output: np.ndarray,
    steps: Mapping[str, int],
    bit_depth: int | None,
) -> None:
    if axes not in _MODEL_AXES:
        raise PackageError(
            f"axes={axes!r}: a denoiser's tensor is one of {_MODEL_AXES} (a batch axis is added)"
        )
    shape = (1, len(channels), *test_input.shape[2:])
    if test_input.ndim != len(axes) + 1 or test_input.shape[:2] != shape[:2]:
        raise PackageError(
            f"test input of shape {test_input.shape} is not (1, {len(channels)}, {', '.join(axes[1:])})"
        )
    if test_output.shape != test_input.shape:
        raise PackageError(
            f"test output of shape {test_output.shape} differs from the input's {test_input.shape}"
        )
    for letter, n in zip(axes[1:], test_input.shape[2:], strict=True):
        step = steps.get(letter)
        if step is None or n % step:
            raise PackageError(f"test input: axis {letter} has {n} voxels, not a multiple of its step {step}")
    if bit_depth is not None:
        want = {8: np.uint8, 16: np.uint16}.get(bit_depth)
        if want is None or test_input.dtype != want:
            raise PackageError(
                f"bit_depth={bit_depth}: the test input must hold the stored counts as uint8 or uint16"
            )
    elif test_input.dtype != np.float32:
        raise PackageError("without bit_depth the test input is the graph's own [0, 1] float32 input")


def _readme(
    name: str,
    description: str,
    axes: str,
    channels: Sequence[str],
    bit_depth: int | None,
    steps: Mapping[str, int],
    offset: float = 0.0,
    peak: float | None = None,
) -> str:
    sizes = ", ".join(f"{a} a multiple of {steps[a]}" for a in axes[1:])
    if bit_depth is None:
        units = "Input: noisy float32 values in [0, 1]. Output: the denoised image in the same units."
    else:
        top = peak or 2**bit_depth - 1
        rule = f"(v - {offset:g}) / {top:g}" if offset else f"v / {top:g}"
        units = (
            f"Input: the noisy {bit_depth}-bit counts as stored (uint{bit_depth}), scaled to the model's units by "
            f"the pre-processing ({rule}, as in training). Output: the denoised image scaled back to count units "
            "(float32, neither rounded nor clipped)."
        )
    return textwrap.dedent(
        f"""\
        # {name}

        {description}

        A self-supervised denoiser trained on noisy images alone with ssdn, after Laine et al. (2019): a
        blind-spot U-Net predicts each pixel from its neighbourhood only, and the noise model's posterior mean
        combines that prediction with the noisy value itself.

        ## Use

        - Tensor axes: batch, {", ".join(axes.lower())} (channels: {", ".join(channels)}); {sizes}.
        - {units}
        - Weights: TorchScript (original) and ONNX (opset {ONNX_OPSET}) of the same graph.
        - The model expects noise like that it was trained on (the same microscope, camera and settings).
          Raw camera counts include the camera's offset, which the noise model learned as part of the data.

        ## Citation

        {PAPER_CITATION}. {PAPER_URL}
        """
    )


def _tensor_axes(axes: str, channel_ids: Sequence[str], steps: Mapping[str, int], output: bool) -> list[Any]:
    from bioimageio.spec.model import v0_5 as spec

    out: list[Any] = [
        spec.BatchAxis(),
        spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in channel_ids]),
    ]
    for letter in axes[1:]:
        axis_id = spec.AxisId(letter.lower())
        if output:
            ref = spec.SizeReference(tensor_id=spec.TensorId("input"), axis_id=axis_id)
            out.append(spec.SpaceOutputAxis(id=axis_id, size=ref))
        else:
            size = spec.ParameterizedSize(min=steps[letter], step=steps[letter])
            out.append(spec.SpaceInputAxis(id=axis_id, size=size))
    return out


def _processing(bit_depth: int | None, offset: float, peak: float | None) -> tuple[list[Any], list[Any]]:
    """(v − offset) / peak before the model and its inverse after it (``ssdn.data.intensity``)."""
    from bioimageio.spec.model import v0_5 as spec

    to_float = spec.EnsureDtypeDescr(kwargs=spec.EnsureDtypeKwargs(dtype="float32"))
    if bit_depth is None:
        return [to_float], [to_float]
    top = float(peak or 2**bit_depth - 1)
    shift = {"offset": -offset / top} if offset else {}
    back = {"offset": offset} if offset else {}
    # the closing ensure_dtype keeps the spec from casting the scaled values back to the stored integer type
    pre = [to_float, spec.ScaleLinearDescr(kwargs=spec.ScaleLinearKwargs(gain=1.0 / top, **shift)), to_float]
    post = [spec.ScaleLinearDescr(kwargs=spec.ScaleLinearKwargs(gain=top, **back)), to_float]
    return pre, post


def write_package(
    out: str | Path,
    *,
    torchscript: str | Path,
    onnx: str | Path | None,
    name: str,
    description: str,
    axes: str,
    channels: Sequence[str],
    test_input: np.ndarray,
    test_output: np.ndarray,
    authors: Sequence[str],
    bit_depth: int | None = 16,
    offset: float = 0.0,
    peak: float | None = None,
    steps: Mapping[str, int] | None = None,
    license: str = "MIT",
    tags: Sequence[str] = (),
    overwrite: bool = False,
) -> Path:
    """Write a validated Model Zoo zip at ``out`` and return its path.

    ``axes``: the model tensor's axes after the batch axis, ``CYX`` (2-D) or ``CZYX`` (3-D). ``test_input`` is
    (1, C, ...) in the package's input units (stored counts when ``bit_depth`` is set, else [0, 1] float32);
    ``test_output`` is what the model gives for it, in output units. ``offset`` / ``peak``: the training's
    intensity scale of the stored counts, (v − offset) / peak (``peak`` None: 2^bit_depth − 1). ``steps``: each
    spatial axis's size multiple (Y and X default to the net's 32; a 3-D model must give Z).
    """
    out = Path(out)
    steps = {"Y": SIDE_MULTIPLE, "X": SIDE_MULTIPLE, **(steps or {})}
    test_input, test_output = np.asarray(test_input), np.asarray(test_output, np.float32)
    _check_inputs(axes, channels, test_input, test_output, steps, bit_depth)
    if out.exists() and not overwrite:
        raise PackageError(f"{out}: already exists; choose another output path or allow overwriting it")
    for label, path in (("torchscript", torchscript), ("onnx", onnx)):
        if path is not None and not Path(path).is_file():
            raise PackageError(f"{label}={path}: weights file not found")
    check_installed()
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as spec

    ids = _channel_ids(channels)
    pre, post = _processing(bit_depth, offset, peak)
    in_dtype: Literal["float32", "uint8", "uint16"] = (
        "float32" if bit_depth is None else "uint8" if bit_depth == 8 else "uint16"
    )
    with tempfile.TemporaryDirectory(prefix="ssdn-bioimageio-") as tmp:
        work = Path(tmp)
        np.save(work / "test_input.npy", test_input)
        np.save(work / "test_output.npy", test_output)
        (work / "README.md").write_text(
            _readme(name, description, axes, channels, bit_depth, steps, offset, peak), "utf-8"
        )
        torch_version = importlib.metadata.version("torch").split("+")[0]
        weights = spec.WeightsDescr(
            torchscript=spec.TorchscriptWeightsDescr(
                source=Path(torchscript), pytorch_version=spec.Version(torch_version)
            ),
            onnx=None
            if onnx is None
            else spec.OnnxWeightsDescr(source=Path(onnx), opset_version=ONNX_OPSET, parent="torchscript"),
        )
        descr = spec.ModelDescr(
            name=name,
            description=description,
            authors=[spec.Author(name=a) for a in authors],
            cite=[spec.CiteEntry(text=PAPER_CITATION, doi=spec.Doi(PAPER_DOI), url=spec.HttpUrl(PAPER_URL))],
            license=spec.LicenseId(license),
            documentation=spec.FileDescr(source=work / "README.md"),
            tags=[
                "denoising",
                "self-supervised",
                "ssdn",
                "fluorescence-light-microscopy",
                "2d" if axes == "CYX" else "3d",
                *tags,
            ],
            inputs=[
                spec.InputTensorDescr(
                    id=spec.TensorId("input"),
                    description="noisy image",
                    axes=_tensor_axes(axes, ids, steps, output=False),
                    test_tensor=spec.FileDescr(source=work / "test_input.npy"),
                    data=spec.IntervalOrRatioDataDescr(type=in_dtype),
                    preprocessing=pre,
                )
            ],
            outputs=[
                spec.OutputTensorDescr(
                    id=spec.TensorId("output"),
                    description="denoised image (the posterior mean)",
                    axes=_tensor_axes(axes, ids, steps, output=True),
                    test_tensor=spec.FileDescr(source=work / "test_output.npy"),
                    data=spec.IntervalOrRatioDataDescr(type="float32"),
                    postprocessing=post,
                )
            ],
            weights=weights,
        )
        fd, part = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part.zip")
        os.close(fd)
        os.unlink(part)  # the packager refuses an existing path; the name stays ours (hidden, random)
        try:
            save_bioimageio_package(descr, output_path=Path(part))
            os.replace(part, out)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
            raise
    return out
