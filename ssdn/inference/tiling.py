"""Tiled inference: denoise an image of any size and aspect ratio with memory bounded by one tile.

An image whose padded H×W holds no more pixels than a tile² runs whole (`fits_one_tile`), with no padding to
a square; a larger one is cut into tiles (`tile_shape`: rectangles along an axis that fits), mirror-padded
only at its bottom/right border. Tile corners sit on multiples of 32 of the image, so every tile pools on
the same grid as the whole image would. Blending (`axis_weights`) drops the quarter of each overlap next to a
tile's edge (those pixels see the tile's zero padding) and ramps over the middle half; tiled and whole equal
up to float rounding where the receptive field is at most ``overlap / 4``, and barely differ beyond
(bench/README.md has the KODAK figure). The evaluator pads each test set to one square (the authors' protocol).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from ssdn.nets.padding import crop, pad_to_multiple, padded_shape
from ssdn.nets.unet import SIDE_MULTIPLE

DEFAULT_TILE = 640
"""Tile side on CPU: 640² pixels hold a KODAK image (512×768) whole; a process denoising 640² tiles (fp32,
channels_last) peaks at 2.1 GiB RSS, a 6000×4000 photo included (bench/bench_denoise.py big)."""

DEFAULT_OVERLAP = 128
"""Overlap of neighbouring tiles: 32 px dropped at each tile edge, a 64 px cosine ramp between them."""

TileFn = Callable[[Tensor], dict[str, Tensor]]
"""Denoises a batch (N, C, th, tw) into per-pixel outputs (N, K, th, tw), any number of keys and channels."""


def check_tiling(tile: int, overlap: int, multiple: int = SIDE_MULTIPLE) -> None:
    """Raise ValueError naming the setting unless tile and overlap are positive multiples of ``multiple`` with
    room left between overlaps."""
    if tile < multiple or tile % multiple:
        raise ValueError(f"tile must be a positive multiple of {multiple}, got {tile}")
    if overlap < 0 or overlap % multiple:
        raise ValueError(f"tile overlap must be a non-negative multiple of {multiple}, got {overlap}")
    if 2 * overlap > tile:
        raise ValueError(f"tile overlap ({overlap}) must be at most half the tile ({tile})")


def fits_one_tile(height: int, width: int, tile: int, multiple: int = SIDE_MULTIPLE) -> bool:
    """Whether an image runs whole: its padded H×W (`padded_shape`) has no more pixels than a tile², the
    memory budget, whatever its aspect ratio (a 100×2000 (H×W) strip, padded 128×2016, fits a 512² tile)."""
    ph, pw = padded_shape(height, width, multiple)
    return ph * pw <= tile * tile


def tile_shape(height: int, width: int, tile: int, multiple: int = SIDE_MULTIPLE) -> tuple[int, int]:
    """(th, tw) of the tiles of an image that does not fit one tile: ``tile`` along an axis longer than it, the
    padded axis along one that fits (rectangular tiles for strips: 100×4000 (H×W) → 128×512)."""
    ph, pw = padded_shape(height, width, multiple)
    return min(tile, ph), min(tile, pw)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start of each tile along an axis of ``length`` px: 0, step, 2·step, … until a tile reaches the end."""
    if length <= tile:
        return [0]
    step = tile - overlap
    count = max(1, math.ceil((length - overlap) / step))
    return [i * step for i in range(count)]


def axis_weights(length: int, tile: int, overlap: int) -> Tensor:
    """(T, tile) float64 blending weights of the T tiles along one axis; at every pixel they sum to 1.

    In the overlap of tiles i and i+1 (``overlap`` px, from the start of tile i+1) the first and last quarters
    belong to tile i and tile i+1 whole; the middle half is the cosine ramp cos² / sin² between them.
    """
    starts = tile_starts(length, tile, overlap)
    weights = torch.ones(len(starts), tile, dtype=torch.float64)
    margin, ramp = overlap // 4, overlap - 2 * (overlap // 4)
    if len(starts) > 1 and overlap:
        t = (torch.arange(ramp, dtype=torch.float64) + 0.5) / ramp
        fade_out = torch.cos(t * math.pi / 2) ** 2
        fade_in = 1.0 - fade_out
        lead = tile - overlap  # where the next tile starts, in this tile's coordinates
        for i in range(len(starts)):
            if i + 1 < len(starts):  # fade out towards the next tile, drop the last margin
                weights[i, lead + margin : lead + margin + ramp] = fade_out
                weights[i, lead + margin + ramp :] = 0.0
            if i > 0:  # fade in from the previous tile, drop the first margin
                weights[i, :margin] = 0.0
                weights[i, margin : margin + ramp] = fade_in
    return weights


def tile_count(height: int, width: int, tile: int, overlap: int, multiple: int = SIDE_MULTIPLE) -> int:
    """How many network calls an image takes (1 when it runs whole)."""
    if fits_one_tile(height, width, tile, multiple):
        return 1
    th, tw = tile_shape(height, width, tile, multiple)
    return len(tile_starts(height, th, overlap)) * len(tile_starts(width, tw, overlap))


def _tiles(height: int, width: int, th: int, tw: int, overlap: int) -> Iterator[tuple[int, int, Tensor]]:
    """(top, left, weight (th, tw) float32) of every th×tw tile, row by row."""
    rows, cols = axis_weights(height, th, overlap), axis_weights(width, tw, overlap)
    for top, wr in zip(tile_starts(height, th, overlap), rows, strict=True):
        for left, wc in zip(tile_starts(width, tw, overlap), cols, strict=True):
            yield top, left, torch.outer(wr, wc).float()


def _mirror_index(length: int, start: int, size: int) -> Tensor:
    """Source rows of ``size`` rows from ``start`` of an axis mirrored past its end (``mirror_pad``'s rule)."""
    i = torch.arange(start, start + size)
    if length == 1:
        return torch.zeros_like(i)
    period = 2 * (length - 1)
    i = i % period
    return torch.where(i < length, i, period - i)


def _cut(batch: Tensor, top: int, left: int, th: int, tw: int) -> Tensor:
    """The th×tw tile at (top, left) of the image mirror-padded bottom/right, without padding the whole image."""
    h, w = batch.shape[-2:]
    if top + th <= h and left + tw <= w:
        return batch[:, :, top : top + th, left : left + tw]
    rows = _mirror_index(h, top, th).to(batch.device)
    cols = _mirror_index(w, left, tw).to(batch.device)
    return batch.index_select(2, rows).index_select(3, cols)


def denoise_tiled(
    fn: TileFn,
    image: Tensor,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    *,
    keys: Sequence[str] | None = None,
    progress: Callable[[int], object] | None = None,
    multiple: int = SIDE_MULTIPLE,
) -> dict[str, Tensor]:
    """Run ``fn`` over ``image`` (C, H, W) or (N, C, H, W) tile by tile; returns its outputs at H×W, float32 on
    the CPU, with the batch dim as given.

    ``fn`` gets (N, C, th, tw), th and tw multiples of ``multiple``: the padded image when it fits the tile's
    pixel budget, else tiles (`tile_shape`), all N images cut at the same place (so per-image params stay
    aligned), and returns per-pixel outputs of that size. ``keys``: only these outputs are kept (each costs an
    image-sized float32 buffer); default all. ``progress(n)`` is called after each tile with the number done
    (1 per call).
    """
    check_tiling(tile, overlap, multiple)
    single = image.ndim == 3
    batch = image[None] if single else image
    if batch.ndim != 4:
        raise ValueError(f"denoise_tiled needs a (C, H, W) or (N, C, H, W) image, got {tuple(image.shape)}")
    n, _, h, w = batch.shape
    if fits_one_tile(h, w, tile, multiple):
        outs = fn(pad_to_multiple(batch, multiple)[0])
        result = {k: crop(v, h, w).float().cpu() for k, v in outs.items() if keys is None or k in keys}
        if progress is not None:
            progress(1)
        return {k: v[0] for k, v in result.items()} if single else result

    acc: dict[str, Tensor] = {}
    tile_h, tile_w = tile_shape(h, w, tile, multiple)
    for top, left, weight in _tiles(h, w, tile_h, tile_w, overlap):
        outs = fn(_cut(batch, top, left, tile_h, tile_w))
        # the part of the tile inside the image: padding beyond H×W is never written back
        th, tw = min(tile_h, h - top), min(tile_w, w - left)
        wt = weight[:th, :tw]
        for key, out in outs.items():
            if keys is not None and key not in keys:
                continue
            if key not in acc:
                acc[key] = torch.zeros(n, out.shape[1], h, w)
            acc[key][:, :, top : top + th, left : left + tw].add_(out[:, :, :th, :tw].float().cpu() * wt)
        if progress is not None:
            progress(1)
    # The 1-D weights of each axis sum to 1, so their outer products do too: no normalisation pass is needed
    # beyond float rounding (tests/test_tiling.py checks the sum).
    return {k: v[0] for k, v in acc.items()} if single else acc
