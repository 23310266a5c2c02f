"""Denoising microscopy stacks with a 3-D model (``model.dims=3``): every volume (each T, and each channel alone
through a 1-channel model) in 3-D tiles, written back with the input's axes, dtype and OME metadata.

Why tiles with context rather than the whole volume: a 3-D blind-spot net holds six branches of 96-channel
features per voxel, so memory follows the tile, not the stack. Each tile's core (``tile_depth`` × ``tile``²
voxels) is read with up to ``overlap_depth`` / ``overlap`` voxels of context on each side from the file (only
those planes, ``Stack.take``), scaled to [0, 1] on its own, mirror-padded to the net's side multiples, denoised,
and cropped back to its core, which goes straight to disk through ``StackWriter``. Cores tile the volume
exactly, so every voxel is written once; it equals the whole-volume result wherever the net's receptive field
stays inside the context (the overlap trades time for that).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ssdn.data.intensity import Intensity
from ssdn.data.io import bit_depth
from ssdn.data.stacks import (
    Stack,
    StackError,
    StackWriter,
    take_plane,
    take_volume,
    volume_indices,
)
from ssdn.eval.results import UNCERTAINTY_KEY
from ssdn.inference.stacks import StackResult, channels_independent, result_meta, std_writer
from ssdn.nets import UNet3D, padded_shape3d
from ssdn.training.module import DenoiserModule

__all__ = ["OVERLAP_3D", "OVERLAP_DEPTH", "TILE_3D", "TILE_DEPTH", "denoise_volumes", "tile_cores"]

TILE_3D = 128
"""Y/X side of a 3-D tile's core (``--tile`` for a 3-D model)."""
OVERLAP_3D = 16
"""Y/X context read on each side of a core (``--overlap`` for a 3-D model)."""
TILE_DEPTH = 32
"""Z planes of a tile's core (``--tile-depth``)."""
OVERLAP_DEPTH = 8
"""Z context planes on each side of a core (``--overlap-depth``)."""

Span = tuple[int, int]


def tile_cores(length: int, core: int) -> list[Span]:
    """The [start, stop) cores along an axis of ``length``: ``core`` long, the last one shorter; they cover the
    axis exactly once."""
    if core < 1:
        raise ValueError(f"a tile core must be at least 1 voxel long, got {core}")
    return [(start, min(start + core, length)) for start in range(0, length, core)]


def _read_span(span: Span, context: int, length: int) -> Span:
    return max(span[0] - context, 0), min(span[1] + context, length)


def _padded(block: np.ndarray, multiple: tuple[int, int, int]) -> np.ndarray:
    """(C, d, h, w) mirrored at its far ends up to the net's side multiples (a mirror without the edge voxel, so
    the blind spot never sees a copy of the voxel it predicts)."""
    d, h, w = block.shape[1:]
    pd, ph, pw = padded_shape3d(d, h, w, multiple)
    return np.pad(block, ((0, 0), (0, pd - d), (0, ph - h), (0, pw - w)), mode="reflect")


def _slot(values: np.ndarray, axes: str, index: Mapping[str, int]) -> np.ndarray:
    """A (C, Z, Y, X) result in the writer's layout: the stack's own order of the axes not indexed."""
    rest = [a for a in axes if a not in index]
    if "C" not in rest:
        values = values[0]
        return values.transpose(["ZYX".index(a) for a in rest])
    return values.transpose(["CZYX".index(a) for a in rest])


def _key(axes: str, index: Mapping[str, int], window: Mapping[str, slice]) -> tuple[int | slice, ...]:
    return tuple(index[a] if a in index else window.get(a, slice(None)) for a in axes)


def denoise_volumes(
    module: DenoiserModule,
    stack: Stack,
    outputs: tuple[Path, ...],
    params_for: Callable[[Tensor], Tensor],
    *,
    intensity: Intensity | None = None,
    float32: bool = False,
    bf16: bool = False,
    tile: int = TILE_3D,
    overlap: int = OVERLAP_3D,
    tile_depth: int = TILE_DEPTH,
    overlap_depth: int = OVERLAP_DEPTH,
    overwrite: bool = False,
    progress: Callable[[int], object] | None = None,
) -> StackResult:
    """Denoise every volume of ``stack`` into ``outputs[0]`` (same axes, dtype, metadata) and, when given, the
    posterior std in the stack's units into ``outputs[1]`` (float32, same axes), tile by tile (module doc).
    ``intensity`` and ``float32`` as for ``ssdn.inference.stacks.denoise_stack``.

    ``params_for(pixels)`` gives a volume's params from its middle Z plane (C, Y, X) in [0, 1] (a fixed level
    ignores them). ``progress(1)`` is called per tile. Returns the planes written and the level used.
    """
    net = module.net
    if not isinstance(net, UNet3D):
        raise ValueError("denoise_volumes needs a 3-D model (model.dims=3)")
    if "Z" not in stack.axes:
        raise StackError(
            f"{stack.path}: axes {stack.axes} have no Z, but the model is 3-D (model.dims=3) and denoises volumes; "
            "give its axes with --axes (e.g. ZYX), or use a 2-D model"
        )
    if min(tile, tile_depth) < 1 or min(overlap, overlap_depth) < 0:
        raise ValueError(
            f"3-D tiles need --tile, --tile-depth >= 1 and overlaps >= 0, got {tile}, {tile_depth}, "
            f"{overlap}, {overlap_depth}"
        )
    independent = channels_independent(stack, module.channels)
    scale = intensity or Intensity.of_depth(bit_depth(np.empty(0, stack.dtype)))
    sizes = {a: stack.size(a) for a in "ZYX"}
    cores = {a: tile_cores(sizes[a], tile_depth if a == "Z" else tile) for a in "ZYX"}
    context = {"Z": overlap_depth, "Y": overlap, "X": overlap}
    levels: list[list[float]] = []
    indices = volume_indices(stack, independent)
    outputs[0].parent.mkdir(parents=True, exist_ok=True)
    with (
        StackWriter(outputs[0], stack.shape, result_meta(stack, float32), overwrite=overwrite) as out,
        std_writer(outputs, stack, overwrite) as std_out,
    ):
        for index in indices:
            middle = take_plane(stack, {**index, "Z": sizes["Z"] // 2})
            params = params_for(torch.from_numpy(scale.to_unit(middle)))
            for zyx in itertools.product(cores["Z"], cores["Y"], cores["X"]):
                core = dict(zip("ZYX", zyx, strict=True))
                read = {a: _read_span(core[a], context[a], sizes[a]) for a in "ZYX"}
                noisy = take_volume(stack, index, {a: slice(*read[a]) for a in "ZYX"})
                result, std = _denoise_tile(module, net, noisy, params, scale, bf16, std_out is not None)
                crop = (
                    slice(None),
                    *(slice(core[a][0] - read[a][0], core[a][1] - read[a][0]) for a in "ZYX"),
                )
                key = _key(stack.axes, index, {a: slice(*core[a]) for a in "ZYX"})
                out.write(key, _slot(scale.from_unit(result[crop], out.meta.dtype), stack.axes, index))
                if std_out is not None and std is not None:
                    std_out.write(key, _slot(scale.std_to_stored(std[crop]), stack.axes, index))
                if progress is not None:
                    progress(1)
            if (level := _level(module, params)) is not None:
                levels.append(level)
    mean = np.mean(np.asarray(levels, np.float64), axis=0).tolist() if levels else []
    names = module.noise.param_names if levels else ()
    return StackResult(len(indices) * sizes["Z"], dict(zip(names, mean, strict=True)))


def _denoise_tile(
    module: DenoiserModule,
    net: UNet3D,
    block: np.ndarray,
    params: Tensor,
    scale: Intensity,
    bf16: bool,
    uncertainty: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One tile (C, d, h, w) as stored -> the reported output and the posterior std (or None), both (C, D, H, W)
    float32 in model units over the padded tile; the float copy exists for this tile only."""
    noisy = torch.from_numpy(scale.to_unit(_padded(block, net.side_multiple)))
    outs = module.denoise(noisy[None], params, bf16=bf16, uncertainty=uncertainty)
    result = next(iter(outs.values()))[0].float().cpu().numpy()
    std = outs[UNCERTAINTY_KEY][0].float().cpu().numpy() if uncertainty else None
    return result, std


def _level(module: DenoiserModule, params: Tensor) -> list[float] | None:
    """The level a volume was denoised with (paper units), or None for a method without one. Known and global
    levels (the ones a 3-D model takes) do not depend on the pixels, only on ``params``."""
    if module.method.level_source is None:
        return None
    with torch.no_grad():
        dummy = torch.zeros(1, device=module.device)
        level = module.method.level(dummy, params.to(module.device), module.noise)
    assert level is not None, "a method with a level source always gives a level"
    return module.noise.to_params(level).reshape(-1).cpu().tolist()
