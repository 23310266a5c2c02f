"""Running a trained model on one user image: the network over tiles, the posterior per tile, at the precision
the machine computes fastest.

Tiles go in as channels_last whatever the training's memory format: at image sizes the fp32 CPU convs (oneDNN)
run ~1.6× faster on it (bench/README.md), and the posterior reads pixels channel-last anyway.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ssdn.errors import UserError
from ssdn.inference.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, denoise_tiled
from ssdn.training.module import DenoiserModule
from ssdn.training.precision import resolve_precision

PRECISIONS = ("auto", "fp32", "bf16")


def network_bf16(precision: str, device: str | torch.device, flags: frozenset[str] | None = None) -> bool:
    """Whether the network runs in bf16 autocast: ``auto`` wherever the device computes bf16 natively (GPUs,
    CPUs with AVX-512-BF16 or AMX, ``ssdn.training.precision``), where emulated bf16 would be slower than fp32;
    ``fp32`` / ``bf16`` as asked. The posterior is float64 either way."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    return resolve_precision("auto", torch.device(device).type, flags) == "bf16-mixed"


class ChannelError(UserError, ValueError):
    """An image's channels cannot be fed to the model (RGB into a grayscale model)."""


def model_input(pixels: np.ndarray, channels: int, name: object) -> np.ndarray:
    """(H, W, k) stored pixels as the model's ``channels``: gray repeated to RGB for a colour model (written
    back gray, ``ssdn.inference.write``). An RGB image for a grayscale model is refused: which mix of R, G and B
    makes the gray is the user's choice, and writing it back gray would lose the colour unasked."""
    stored = pixels.shape[2]
    if stored == channels:
        return pixels
    if channels == 3 and stored == 1:
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    raise ChannelError(
        f"{name}: a {stored}-channel image, but the model takes {channels}-channel (grayscale) images; convert "
        "it to grayscale first, or use a model trained on colour images"
    )


def _tile_fn(
    module: DenoiserModule,
    params: Tensor,
    scale: float,
    bf16: bool,
    uncertainty: bool,
    levels: list[Tensor],
) -> Callable[[Tensor], dict[str, Tensor]]:
    """What ``denoise_tiled`` runs on each tile: the reported output and the posterior std if asked; the level
    each tile used (paper units) is appended to ``levels``, so a per-image estimator's is averaged over tiles."""

    def fn(tile: Tensor) -> dict[str, Tensor]:
        noisy = tile.float() / scale if scale != 1.0 else tile.float()
        noisy = noisy.contiguous(memory_format=torch.channels_last)
        outs = module.denoise(noisy, params, bf16=bf16, uncertainty=uncertainty)
        result = {"out": next(iter(outs.values()))}
        if uncertainty:
            result["std"] = outs["posterior_std"]
        if module.method.level_source is not None:
            with torch.no_grad():
                level = module.method.level(noisy.to(module.device), params.to(module.device), module.noise)
            assert level is not None, "a method with a level source always gives a level"
            levels.append(module.noise.to_params(level).reshape(-1).cpu())
        return result

    return fn


def denoise_pixels(
    module: DenoiserModule,
    pixels: Tensor,
    params: Tensor,
    *,
    scale: float = 1.0,
    bf16: bool = False,
    uncertainty: bool = False,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    progress: Callable[[int], object] | None = None,
) -> tuple[Tensor, Tensor | None, dict[str, float]]:
    """Denoise one (C, H, W) image (float in [0, 1], or integers with ``scale`` their maximum: each tile is
    scaled on its own, so the image is never held as float); returns the reported output (C, H, W) float32, the
    posterior std (C, H, W) or None, and the level used (paper units, the mean over tiles; empty for methods
    without one)."""
    levels: list[Tensor] = []
    outs = denoise_tiled(
        _tile_fn(module, params, scale, bf16, uncertainty, levels), pixels, tile, overlap, progress=progress
    )
    used: dict[str, float] = {}
    if levels:
        means = torch.stack(levels).double().mean(0).tolist()
        used = dict(zip(module.noise.param_names, means, strict=True))
    return outs["out"], outs.get("std"), used
