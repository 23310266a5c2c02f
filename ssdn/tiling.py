"""Tiled inference: denoise an image of any size and aspect ratio with memory bounded by one tile.

The blind-spot network needs square inputs whose side is a multiple of 32 (it rotates the image and pools five
times). An image whose padded square (``padded_size``) fits in one tile runs whole, mirror-padded bottom/right
exactly as the evaluation protocol pads it, so small images give the results they always gave. A larger one is
cut into square tiles of side ``tile`` on a grid with step ``tile − overlap``; the image is mirror-padded only at
its bottom/right border, just enough for the last tile. Tile corners sit on multiples of 32 of the image, so
every tile pools on the same grid as the whole image would.

Blending: in each overlap of two neighbouring tiles, a quarter of the overlap next to each tile's edge is
dropped (those pixels see the tile's zero padding instead of the image) and the middle half is a cosine ramp
from one tile to the other (cos² + sin² = 1: the weights of every pixel sum to one). Where the network's receptive field
(its radius) is at most ``overlap / 4``, tiled and whole-image outputs are equal up to float rounding; the
U-Net's reach is larger, but what it sees that far away barely matters (bench/README.md has the KODAK figure).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from ssdn.nets.padding import crop, mirror_pad, padded_size
from ssdn.nets.unet import SIDE_MULTIPLE

DEFAULT_TILE = 512
"""Tile side on CPU: one 512² RGB tile of the blind-spot net peaks at about 1 GB (bench/bench_denoise.py)."""

DEFAULT_OVERLAP = 128
"""Overlap of neighbouring tiles: 32 px dropped at each tile edge, a 64 px cosine ramp between them."""

TileFn = Callable[[Tensor], dict[str, Tensor]]
"""Denoises a batch (N, C, t, t) into per-pixel outputs (N, K, t, t), any number of keys and channels."""


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
    """Whether an image runs whole: its padded square is no larger than a tile."""
    return padded_size(height, width, multiple) <= tile


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start of each tile along an axis of ``length`` px: 0, step, 2·step, … until a tile reaches the end."""
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
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


def _tiles(height: int, width: int, tile: int, overlap: int) -> Iterator[tuple[int, int, Tensor]]:
    """(top, left, weight (tile, tile) float32) of every tile, row by row."""
    rows, cols = axis_weights(height, tile, overlap), axis_weights(width, tile, overlap)
    for top, wr in zip(tile_starts(height, tile, overlap), rows, strict=True):
        for left, wc in zip(tile_starts(width, tile, overlap), cols, strict=True):
            yield top, left, torch.outer(wr, wc).float()


def _mirror_index(length: int, start: int, size: int) -> Tensor:
    """Source rows of ``size`` rows from ``start`` of an axis mirrored past its end (``mirror_pad``'s rule)."""
    i = torch.arange(start, start + size)
    if length == 1:
        return torch.zeros_like(i)
    period = 2 * (length - 1)
    i = i % period
    return torch.where(i < length, i, period - i)


def _cut(batch: Tensor, top: int, left: int, tile: int) -> Tensor:
    """The tile at (top, left) of the image mirror-padded bottom/right, without padding the whole image."""
    h, w = batch.shape[-2:]
    if top + tile <= h and left + tile <= w:
        return batch[:, :, top : top + tile, left : left + tile]
    rows = _mirror_index(h, top, tile).to(batch.device)
    cols = _mirror_index(w, left, tile).to(batch.device)
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

    ``fn`` gets (N, C, t, t) with all N images cut at the same place (so per-image params stay aligned) and
    returns per-pixel outputs of that size. ``keys``: only these outputs are kept (each costs an image-sized
    float32 buffer); default all. ``progress(n)`` is called after each tile with the number done (1 per call).
    """
    check_tiling(tile, overlap, multiple)
    single = image.ndim == 3
    batch = image[None] if single else image
    if batch.ndim != 4:
        raise ValueError(f"denoise_tiled needs a (C, H, W) or (N, C, H, W) image, got {tuple(image.shape)}")
    n, _, h, w = batch.shape
    if fits_one_tile(h, w, tile, multiple):
        side = padded_size(h, w, multiple)
        outs = fn(mirror_pad(batch, side - h, side - w))
        result = {k: crop(v, h, w).float().cpu() for k, v in outs.items() if keys is None or k in keys}
        if progress is not None:
            progress(1)
        return {k: v[0] for k, v in result.items()} if single else result

    acc: dict[str, Tensor] = {}
    for top, left, weight in _tiles(h, w, tile, overlap):
        outs = fn(_cut(batch, top, left, tile))
        # the part of the tile inside the image: padding beyond H×W is never written back
        th, tw = min(tile, h - top), min(tile, w - left)
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
