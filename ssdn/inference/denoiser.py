"""Running a trained model on one user image: the network over tiles, the posterior per tile, at the precision
the machine computes fastest.

Tiles go in as channels_last whatever the training's memory format: at image sizes the fp32 CPU convs (oneDNN)
run ~1.6× faster on it (bench/README.md), and the posterior reads pixels channel-last anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ssdn.data.intensity import Intensity
from ssdn.errors import UserError
from ssdn.inference.refine import random_replacing_refinement
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


@dataclass(frozen=True)
class Refinement:
    """R³ after the first pass (``ssdn.inference.refine``): ``passes`` re-denoisings at pixel-shuffle stride 1
    of the first estimate with a share ``replace_prob`` of its pixels put back to the noisy ones; the draws of
    tile k come from a generator seeded ``seed + k``, so a rerun gives the same image."""

    passes: int
    replace_prob: float = 0.16  # AP-BSN's value
    seed: int = 0

    def __post_init__(self) -> None:
        if self.passes < 1:
            raise UserError(f"--r3-passes={self.passes}: give at least 1 pass (or leave R³ off)")
        if not 0.0 <= self.replace_prob <= 1.0:
            raise UserError(f"--r3-prob={self.replace_prob}: a probability in [0, 1]")


def _refined(
    module: DenoiserModule, noisy: Tensor, first: Tensor, params: Tensor, bf16: bool, r3: Refinement, k: int
) -> Tensor:
    """R³ of one tile. Each pass reports the prior mean μ (a point estimate for mean methods): the mixture's
    pixels are no longer the observations the posterior conditions on, so no posterior mean is defined there."""

    def prior_mean(mix: Tensor) -> Tensor:
        outs = module.denoise(mix, params, bf16=bf16, stride=1)
        return outs.get("mu", next(iter(outs.values())))

    generator = torch.Generator().manual_seed(r3.seed + k)
    noisy = noisy.to(first.device)
    return random_replacing_refinement(noisy, first, prior_mean, r3.passes, r3.replace_prob, generator)


def _tile_fn(
    module: DenoiserModule,
    params: Tensor,
    intensity: Intensity | None,
    bf16: bool,
    uncertainty: bool,
    levels: list[Tensor],
    r3: Refinement | None = None,
) -> Callable[[Tensor], dict[str, Tensor]]:
    """What ``denoise_tiled`` runs on each tile: the reported output and the posterior std if asked; the level
    each tile used (paper units) is appended to ``levels``, so a per-image estimator's is averaged over tiles."""
    if r3 is not None and uncertainty:
        raise UserError(
            "--uncertainty with --r3-passes: R³ averages prior means of re-noised mixtures, for which no posterior "
            "std is defined; drop one of them"
        )
    tiles_done = [0]

    def fn(tile: Tensor) -> dict[str, Tensor]:
        noisy = intensity.tensor_to_unit(tile) if intensity is not None else tile.float()
        noisy = noisy.contiguous(memory_format=torch.channels_last)
        outs = module.denoise(noisy, params, bf16=bf16, uncertainty=uncertainty)
        result = {"out": next(iter(outs.values()))}
        if r3 is not None:
            result["out"] = _refined(module, noisy, result["out"], params, bf16, r3, tiles_done[0])
            tiles_done[0] += 1
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
    intensity: Intensity | None = None,
    bf16: bool = False,
    uncertainty: bool = False,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    progress: Callable[[int], object] | None = None,
    r3: Refinement | None = None,
) -> tuple[Tensor, Tensor | None, dict[str, float]]:
    """Denoise one (C, H, W) image (float in model units, or stored integers with the ``intensity`` scale that
    maps them there: each tile is scaled on its own, so the image is never held as float); returns the reported
    output (C, H, W) float32, the posterior std (C, H, W) or None, and the level used (paper units, the mean over
    tiles; empty for methods without one). ``r3`` refines each tile's output by R³ (``Refinement``)."""
    levels: list[Tensor] = []
    outs = denoise_tiled(
        _tile_fn(module, params, intensity, bf16, uncertainty, levels, r3),
        pixels,
        tile,
        overlap,
        progress=progress,
    )
    used: dict[str, float] = {}
    if levels:
        means = torch.stack(levels).double().mean(0).tolist()
        used = dict(zip(module.noise.param_names, means, strict=True))
    return outs["out"], outs.get("std"), used
