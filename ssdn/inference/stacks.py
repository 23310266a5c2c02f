"""Denoising microscopy stacks with a 2-D model: every plane through the per-image denoiser, the result written
back with the input's axes, dtype and OME metadata, one plane at a time.

A stack is read lazily (``ssdn.data.stacks.open_stack``) and written through ``StackWriter``, so memory holds
one plane (its tiles through the net) whatever the number of planes. Channels are the model's channels when
the model takes as many as the stack's C axis, else each channel is its own image through a 1-channel model
(its own noise level with ``--param auto``); any other pairing is refused for that file.

Which inputs are stacks (the rule the CLI documents): an OME-Zarr folder; a TIFF whose first image series has
more than one plane (a dimension other than rows, columns and RGB samples longer than 1); and every TIFF when
``--axes`` names T or Z. A single-page TIFF otherwise takes the 2-D image path unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from torch import Tensor

from ssdn.data.intensity import Intensity
from ssdn.data.io import bit_depth
from ssdn.data.stacks import (
    Stack,
    StackError,
    StackMeta,
    StackWriter,
    check_axes,
    open_stack,
    plane_indices,
    sibling_path,
    take_plane,
)
from ssdn.inference.denoiser import ChannelError, denoise_pixels
from ssdn.inference.tiling import DEFAULT_OVERLAP, DEFAULT_TILE
from ssdn.training.module import DenoiserModule

__all__ = [
    "STD_TAG",
    "StackResult",
    "channels_independent",
    "check_depth",
    "denoise_stack",
    "is_ome_zarr",
    "is_stack",
    "open_error",
    "open_input_stack",
    "stack_output_name",
    "stack_outputs",
    "std_writer",
    "trained_axes",
]

STD_TAG = "std"
"""``name.std.ome.tif``: the posterior std stack beside ``name.ome.tif`` (``ssdn.data.stacks.sibling_path``)."""

_ZARR_MARKERS = (".zattrs", ".zgroup", "zarr.json")


def is_ome_zarr(path: Path) -> bool:
    """A folder that is a zarr group (v2 or v3): read as one OME-Zarr image, never walked for image files."""
    return path.is_dir() and any((path / name).exists() for name in _ZARR_MARKERS)


def is_stack(path: Path, axes: str | None) -> bool:
    """Whether ``path`` is denoised as a stack (the module docstring's rule). A TIFF that cannot be read is not:
    the 2-D path then reports it as it reports any unreadable image."""
    if is_ome_zarr(path):
        return True
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return False
    if axes is not None and set(axes.upper()) & set("TZ"):
        return True
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return any(n > 1 for a, n in zip(series.axes, series.shape, strict=True) if a not in "YXS")
    except (OSError, tifffile.TiffFileError, IndexError):
        return False


def stack_output_name(relative: Path) -> Path:
    """The result's path relative to ``--out``: a TIFF keeps its name (``.tiff`` as ``.tif``); an OME-Zarr folder
    ``name[.ome].zarr`` becomes the OME-TIFF ``name.ome.tif`` (the writer writes OME-TIFF)."""
    if relative.suffix.lower() == ".zarr":
        stem = relative.stem[:-4] if relative.stem.lower().endswith(".ome") else relative.stem
        return relative.with_name(f"{stem}.ome.tif")
    return relative.with_suffix(".tif")


def stack_outputs(main: Path, uncertainty: bool) -> tuple[Path, ...]:
    """Every file denoising a stack writes: the result, and with ``uncertainty`` its float32 std stack."""
    return (main, sibling_path(main, STD_TAG)) if uncertainty else (main,)


def check_depth(source: Path, depth: int, trained_depth: int | None) -> None:
    """Warn when an input's bit depth differs from the training data's: each input is scaled to [0, 1] by its
    own depth, so another depth puts its noise on another scale than the one the model learned."""
    if trained_depth is not None and depth != trained_depth:
        warnings.warn(
            f"{source} is {depth}-bit but the model was trained on {trained_depth}-bit images; it "
            "is scaled by its own depth, which may not match the noise level the model learned",
            stacklevel=2,
        )


def channels_independent(stack: Stack, channels: int) -> bool:
    """False when the model takes the stack's channels as its own, True when each goes alone through a
    1-channel model; a ``ChannelError`` otherwise."""
    stored = stack.size("C")
    if stored == channels:
        return False
    if channels == 1:
        return True
    raise ChannelError(
        f"{stack.path}: a stack with {stored} channel(s) (axes {stack.axes}), but the model takes {channels}-channel "
        f"images; denoise it with a model trained on {stored}-channel or on 1-channel (each channel alone) data"
    )


@dataclass(frozen=True)
class StackResult:
    """What denoising one stack did: planes written, and the level used (paper units, mean over planes)."""

    planes: int
    level: dict[str, float]


def denoise_stack(
    module: DenoiserModule,
    stack: Stack,
    outputs: tuple[Path, ...],
    params_for: Callable[[Tensor], Tensor],
    *,
    intensity: Intensity | None = None,
    float32: bool = False,
    bf16: bool = False,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    overwrite: bool = False,
    progress: Callable[[int], object] | None = None,
) -> StackResult:
    """Denoise every plane of ``stack`` into ``outputs[0]`` (same axes, dtype, metadata) and, when given,
    the posterior std in the stack's units into ``outputs[1]`` (float32, same axes). ``intensity``: how the
    stored counts map to model units (the training's ``data.offset`` / ``data.peak``; default the depth's own).
    ``float32``: the result in float32 counts instead of the input's integer type (not rounded to whole counts).

    ``params_for(pixels)`` gives a plane's params from its pixels (C, Y, X) in model units (a fixed level
    ignores them). Each plane is read, denoised (tiled as one image) and written before the next is read; the files
    replace their paths only once complete. ``progress(1)`` is called per plane.
    """
    independent = channels_independent(stack, module.channels)
    scale = intensity or Intensity.of_depth(bit_depth(np.empty(0, stack.dtype)))
    uncertainty = len(outputs) > 1
    levels: list[list[float]] = []
    names: tuple[str, ...] = ()
    indices = plane_indices(stack, channels_independent=independent)
    outputs[0].parent.mkdir(parents=True, exist_ok=True)
    with (
        StackWriter(outputs[0], stack.shape, result_meta(stack, float32), overwrite=overwrite) as out,
        std_writer(outputs, stack, overwrite) as std_out,
    ):
        for index in indices:
            pixels = torch.from_numpy(np.ascontiguousarray(take_plane(stack, index)))
            params = params_for(scale.tensor_to_unit(pixels))
            denoised, std, used = denoise_pixels(
                module,
                pixels,
                params,
                intensity=scale,
                bf16=bf16,
                uncertainty=uncertainty,
                tile=tile,
                overlap=overlap,
            )
            del pixels
            key = _key(stack.axes, index)
            out.write(key, _fit(scale.from_unit(denoised.numpy(), out.meta.dtype), stack.axes, index))
            if std_out is not None and std is not None:
                std_out.write(key, _fit(scale.std_to_stored(std.float().numpy()), stack.axes, index))
            if used:
                names = tuple(used)
                levels.append(list(used.values()))
            if progress is not None:
                progress(1)
    mean = np.mean(np.asarray(levels, np.float64), axis=0).tolist() if levels else []
    return StackResult(len(indices), dict(zip(names, mean, strict=True)))


def result_meta(stack: Stack, float32: bool) -> StackMeta:
    """The denoised stack's form: the input's, in float32 when asked."""
    return stack.meta.as_float32() if float32 else stack.meta


class _NoWriter:
    """Stands in for the std writer when no uncertainty is asked."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def std_writer(outputs: tuple[Path, ...], stack: Stack, overwrite: bool) -> StackWriter | _NoWriter:
    """The float32 std stack's writer beside ``outputs[0]`` when ``outputs`` names one, else a stand-in."""
    if len(outputs) < 2:
        return _NoWriter()
    return StackWriter(outputs[1], stack.shape, stack.meta.as_float32(), overwrite=overwrite)


def _key(axes: str, index: Mapping[str, int]) -> tuple[int | slice, ...]:
    """The writer's index of one plane: its T/Z (and C when independent) positions, all of Y and X (and C)."""
    return tuple(index[a] if a in index else slice(None) for a in axes)


def _fit(plane: np.ndarray, axes: str, index: Mapping[str, int]) -> np.ndarray:
    """A (C, Y, X) result as the writer's slot: (Y, X) when the stack has no C or it is indexed."""
    return plane if "C" in axes and "C" not in index else plane[0]


def open_error(exc: StackError) -> StackError:
    """A reading error worded for the CLI: the stacks module names the training setting ``data.axes``, which
    ``python -m ssdn.denoise`` takes as ``--axes``."""
    return StackError(str(exc).replace("data.axes", "--axes"))


def trained_axes(checkpoint: Mapping[str, Any]) -> str | None:
    """The ``data.axes`` the model was trained with (its run config in the checkpoint), or None (2-D images,
    or a checkpoint from before the setting)."""
    config = checkpoint.get("ssdn_config")
    data = config.get("data") if isinstance(config, Mapping) else None
    axes = data.get("axes") if isinstance(data, Mapping) else None
    return None if axes is None else check_axes(str(axes))


def open_input_stack(path: Path, axes: str | None, trained: str | None) -> Stack:
    """An input stack, lazily: with ``--axes`` as given; without, as the file names its axes, falling back to
    the training's ``data.axes`` (``trained``) for a file that names none. Errors worded for the CLI."""
    try:
        if axes is not None or trained is None:
            return open_stack(path, axes)
        try:
            return open_stack(path)
        except StackError:
            return open_stack(path, trained)
    except StackError as exc:
        raise open_error(exc) from None
