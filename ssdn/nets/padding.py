"""Test-time padding: networks need H and W multiples of ``SIDE_MULTIPLE`` (32); images are mirrored.

Every image is padded on the bottom/right only with numpy-style ``reflect`` (mirror without repeating the edge)
and the output cropped back. Two sizes: each side to its own multiple of 32 (`pad_to_multiple`: the least work,
what denoising an image uses), or the authors' evaluation protocol, one square per dataset
(`common_padded_size`, `pad_to_square`), which keeps the paper's numbers comparable.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ssdn.nets.unet import SIDE_MULTIPLE


def _ceil_to(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def padded_shape(h: int, w: int, multiple: int = SIDE_MULTIPLE) -> tuple[int, int]:
    """(H, W) that holds an h×w image: each side rounded up to ``multiple`` on its own (no square)."""
    if h < 1 or w < 1 or multiple < 1:
        raise ValueError(f"padded_shape needs positive h, w and multiple, got {h}, {w}, {multiple}")
    return _ceil_to(h, multiple), _ceil_to(w, multiple)


def padded_size(h: int, w: int, multiple: int = SIDE_MULTIPLE) -> int:
    """Side of the square that holds an h×w image: the larger of h and w rounded up to ``multiple``."""
    if h < 1 or w < 1 or multiple < 1:
        raise ValueError(f"padded_size needs positive h, w and multiple, got {h}, {w}, {multiple}")
    return max(_ceil_to(h, multiple), _ceil_to(w, multiple))


def common_padded_size(sizes: Iterable[tuple[int, int]], multiple: int = SIDE_MULTIPLE) -> int:
    """One square side for a whole set of (h, w) sizes: max H and max W, each rounded up, then the larger.

    E.g. Kodak → 768, BSD300 (481×321 both ways) → 512, Set14 → 768.
    """
    sizes = list(sizes)
    if not sizes:
        raise ValueError("common_padded_size needs at least one (h, w) size")
    return padded_size(max(h for h, _ in sizes), max(w for _, w in sizes), multiple)


def _reflect_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Source index of every output position along an axis of length n padded by ``pad`` at the end.

    Repeated mirroring without edge repeat is a triangle wave of period 2(n-1) (what np.pad 'reflect'
    produces for pads of any length); numpy repeats a length-1 axis, and so does this.
    """
    i = torch.arange(n + pad, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i % period
    return torch.where(i < n, i, period - i)


def mirror_pad(x: torch.Tensor, bottom: int, right: int) -> torch.Tensor:
    """Pad the last two axes of (…, H, W) ``x`` at the bottom/right, like np.pad(..., mode='reflect').

    Works for pads larger than the image (the reflection repeats, e.g. 276² → 768²), any dtype or device.
    """
    if x.ndim < 2:
        raise ValueError(f"mirror_pad needs a (..., H, W) tensor, got shape {tuple(x.shape)}")
    if bottom < 0 or right < 0:
        raise ValueError(f"mirror_pad pads must be >= 0, got bottom={bottom}, right={right}")
    h, w = x.shape[-2:]
    if (h == 0 and bottom) or (w == 0 and right):
        raise ValueError(f"cannot mirror-pad an empty axis (shape {tuple(x.shape)})")
    if bottom:
        x = x.index_select(-2, _reflect_index(h, bottom, x.device))
    if right:
        x = x.index_select(-1, _reflect_index(w, right, x.device))
    return x


def pad_to_square(
    x: torch.Tensor, size: int | None = None, multiple: int = SIDE_MULTIPLE
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Mirror-pad (…, H, W) ``x`` to size×size (default: `padded_size`); returns it and (H, W) for `crop`."""
    h, w = x.shape[-2:]
    side = padded_size(h, w, multiple) if size is None else size
    if side < max(h, w) or side % multiple:
        raise ValueError(
            f"pad_to_square: size {side} must be a multiple of {multiple} and at least the image's {h}×{w}"
        )
    return mirror_pad(x, side - h, side - w), (h, w)


def pad_to_multiple(x: torch.Tensor, multiple: int = SIDE_MULTIPLE) -> tuple[torch.Tensor, tuple[int, int]]:
    """Mirror-pad (…, H, W) ``x`` bottom/right to `padded_shape` (each side a multiple of ``multiple``);
    returns it and (H, W) for `crop`."""
    h, w = x.shape[-2:]
    ph, pw = padded_shape(h, w, multiple)
    return mirror_pad(x, ph - h, pw - w), (h, w)


def crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The top-left h×w of (…, H, W) ``x``: undoes `mirror_pad`, `pad_to_multiple`, `pad_to_square`."""
    if x.ndim < 2 or not (0 < h <= x.shape[-2] and 0 < w <= x.shape[-1]):
        raise ValueError(f"cannot crop {h}×{w} out of a tensor of shape {tuple(x.shape)}")
    return x[..., :h, :w]
