"""Masking-based training (Noise2Void style, paper end of §4.1): a baseline network learns to predict pixels
whose input value was replaced, with the loss on those pixels only.

Pixels are chosen by stratified sampling, one per ``cell × cell`` block (64 per 256² crop with the default
cell of 32), and replaced either by another, unmasked pixel of the 5×5 neighbourhood (COPY) or by a uniform
random colour (RANDOM). Masking happens inside the training step on the training device with the step's generator.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssdn.config.schema import Masking


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
    noisy: Tensor,
    ys: Tensor,
    xs: Tensor,
    strategy: Masking | str,
    generator: torch.Generator,
    radius: int = 2,
) -> Tensor:
    """Return a copy of ``noisy`` (N,C,H,W) whose pixels at ``(ys, xs)`` are replaced by ``strategy``.

    COPY takes the value of a pixel drawn uniformly among the (2r+1)² neighbourhood's pixels that lie inside the
    image and are neither the centre nor masked themselves: a copy of another *masked* pixel would put that
    pixel's training target into its neighbour's input, so the network could learn to read its own target. The
    masked input is therefore a function of the unmasked pixels alone, for both strategies.
    """
    if strategy not in tuple(Masking):
        raise ValueError(f"method.masking={strategy!r}: use one of {', '.join(Masking)}")
    n, c, h, w = noisy.shape
    batch = torch.arange(n, device=noisy.device)[:, None].expand_as(ys)
    out = noisy.clone()
    if strategy == Masking.random:
        colours = torch.rand((n, ys.shape[1], c), generator=generator, device=noisy.device, dtype=noisy.dtype)
        out[batch, :, ys, xs] = colours
        return out
    span = torch.arange(-radius, radius + 1, device=noisy.device)
    dy, dx = span.repeat_interleave(len(span)), span.repeat(len(span))
    keep = (dy != 0) | (dx != 0)
    sy, sx = ys[..., None] + dy[keep], xs[..., None] + dx[keep]  # (N, M, K) candidate sources
    inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    sy, sx = sy.clamp(0, h - 1), sx.clamp(0, w - 1)
    masked = torch.zeros((n, h, w), dtype=torch.bool, device=noisy.device)
    masked[batch, ys, xs] = True
    allowed = inside & ~masked[batch[..., None], sy, sx]
    if not allowed.any(-1).all():
        raise ValueError(
            f"COPY masking found a masked pixel with no unmasked neighbour within {radius} pixels; "
            "use a larger method.mask_cell (at least 2)"
        )
    # Uniform choice among the allowed candidates: the largest of i.i.d. uniform scores.
    scores = torch.rand(sy.shape, generator=generator, device=noisy.device).masked_fill_(~allowed, -1.0)
    pick = scores.argmax(-1, keepdim=True)
    out[batch, :, ys, xs] = noisy[batch, :, sy.gather(-1, pick)[..., 0], sx.gather(-1, pick)[..., 0]]
    return out


def gather_pixels(loss_map: Tensor, ys: Tensor, xs: Tensor) -> Tensor:
    """Values of a per-pixel map (N,H,W) at the masked coordinates, shape (N, M)."""
    batch = torch.arange(loss_map.shape[0], device=loss_map.device)[:, None].expand_as(ys)
    return loss_map[batch, ys, xs]
