"""Masking-based training (Noise2Void style, paper end of §4.1): a baseline network learns to predict pixels
whose input value was replaced, with the loss on those pixels only.

Pixels are chosen by stratified sampling, one per ``cell × cell`` block (64 per 256² crop with the default
cell of 32), and replaced either by another pixel of the 5×5 neighbourhood (COPY) or by a uniform random
colour (RANDOM). Masking happens inside the training step on the training device with the step's generator.
"""

from __future__ import annotations

import torch
from torch import Tensor

STRATEGIES = ("copy", "random")


def stratified_coords(
    n: int, height: int, width: int, cell: int, generator: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor]:
    """One random pixel per ``cell × cell`` block of each image: ``(ys, xs)``, each ``(n, M)`` long."""
    if height % cell or width % cell:
        raise ValueError(f"crop {height}×{width} is not divisible by the masking cell {cell}")
    gy, gx = height // cell, width // cell
    base_y = torch.arange(gy, device=device).repeat_interleave(gx) * cell
    base_x = torch.arange(gx, device=device).repeat(gy) * cell
    off = torch.randint(0, cell, (2, n, gy * gx), generator=generator, device=device)
    return base_y + off[0], base_x + off[1]


def mask_pixels(
    noisy: Tensor, ys: Tensor, xs: Tensor, strategy: str, generator: torch.Generator, radius: int = 2
) -> Tensor:
    """Return a copy of ``noisy`` (N,C,H,W) whose pixels at ``(ys, xs)`` are replaced by ``strategy``.

    COPY draws a uniformly random offset from the (2r+1)² neighbourhood minus the centre, clamped to the image;
    a clamp that lands on the centre itself is re-pointed to the opposite side so the centre is never copied.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"masking strategy must be one of {STRATEGIES}, got {strategy!r}")
    n, c, h, w = noisy.shape
    batch = torch.arange(n, device=noisy.device)[:, None].expand_as(ys)
    out = noisy.clone()
    if strategy == "random":
        colours = torch.rand((n, ys.shape[1], c), generator=generator, device=noisy.device, dtype=noisy.dtype)
        out[batch, :, ys, xs] = colours
        return out
    side = 2 * radius + 1
    # Draw among the side²−1 non-centre offsets.
    k = torch.randint(0, side * side - 1, ys.shape, generator=generator, device=noisy.device)
    k = k + (k >= (side * side) // 2).long()
    dy, dx = k // side - radius, k % side - radius
    sy, sx = (ys + dy).clamp(0, h - 1), (xs + dx).clamp(0, w - 1)
    same = (sy == ys) & (sx == xs)
    sy = torch.where(same, (ys - dy).clamp(0, h - 1), sy)
    sx = torch.where(same, (xs - dx).clamp(0, w - 1), sx)
    out[batch, :, ys, xs] = noisy[batch, :, sy, sx]
    return out


def gather_pixels(loss_map: Tensor, ys: Tensor, xs: Tensor) -> Tensor:
    """Values of a per-pixel map (N,H,W) at the masked coordinates, shape (N, M)."""
    batch = torch.arange(loss_map.shape[0], device=loss_map.device)[:, None].expand_as(ys)
    return loss_map[batch, ys, xs]
