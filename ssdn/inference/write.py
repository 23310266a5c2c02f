"""Writing a denoised image the way its input came: same bit depth, same channels, alpha untouched, atomically.

A grayscale image denoised by a colour model (the gray channel repeated, ``ssdn.inference.denoiser``) is
written gray as the mean of the three outputs: each is an estimate of the same gray value, and their mean is
the one with the least noise (it is also how ``ssdn.data.io`` makes mono of RGB). A palette image is denoised
and written as RGB: its colours, not its indices, are the signal, and a denoised image has more colours than a
palette holds. A photo's EXIF (orientation set to 1: the pixels were turned upright on read) and ICC profile
go into the PNG's eXIf and iCCP chunks; a TIFF keeps the ICC profile (tifffile writes no EXIF directory).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import png
import tifffile
from torch import Tensor

from ssdn.data.intensity import Intensity
from ssdn.data.io import PhotoMetadata
from ssdn.utils import atomic_path


def as_channels(image: Tensor, channels: int) -> Tensor:
    """(C, H, W) model output as the input's ``channels``: the channel mean for a gray input of a colour model."""
    if image.shape[0] == channels:
        return image
    if channels == 1:
        return image.mean(0, keepdim=True)
    raise ValueError(f"cannot write a {image.shape[0]}-channel output as {channels} channels")


def _quantize(image: Tensor, depth: int, intensity: Intensity | None = None) -> np.ndarray:
    """(C, H, W) in model units → (H, W, C) integers at ``depth`` bits, floor(x·peak + offset + 0.5) clipped to
    the depth (``intensity``, by default the depth's own scale: at 8 bits exactly ssdn.eval.metrics.quantize), a
    band of rows at a time so a large image needs no float64 copy."""
    scale = intensity or Intensity.of_depth(depth)
    top = 2**depth - 1
    c, h, w = image.shape
    out = np.empty((h, w, c), np.uint16 if depth == 16 else np.uint8)
    for row in range(0, h, 256):
        band = image[:, row : row + 256].permute(1, 2, 0).double().numpy()
        out[row : row + 256] = np.clip(np.floor(band * scale.peak + scale.offset + 0.5), 0, top)
    return out


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


_IHDR_END = 8 + 12 + 13
"""Bytes of the PNG signature and the IHDR chunk: where the metadata chunks go (both must precede IDAT)."""


def _metadata_chunks(meta: PhotoMetadata) -> bytes:
    chunks = b""
    if meta.icc:
        chunks += _chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(meta.icc))
    if meta.exif:
        chunks += _chunk(b"eXIf", meta.exif)
    return chunks


def _write_pixels(path: Path, pixels: np.ndarray, has_alpha: bool, meta: PhotoMetadata | None = None) -> None:
    """(H, W, K) integers atomically: TIFF for .tif, PNG (8 or 16 bits, via pypng) otherwise, with ``meta``."""
    with atomic_path(path) as tmp:
        h, w, k = pixels.shape
        if path.suffix == ".tif":
            photometric = "rgb" if k >= 3 else "minisblack"
            tifffile.imwrite(
                tmp,
                pixels[:, :, 0] if k == 1 else pixels,
                photometric=photometric,
                extrasamples=["unassalpha"] if has_alpha else None,
                iccprofile=meta.icc if meta else None,
            )
        else:
            depth = 16 if pixels.dtype == np.uint16 else 8
            writer = png.Writer(w, h, greyscale=k - has_alpha == 1, alpha=has_alpha, bitdepth=depth)
            buffer = io.BytesIO()
            writer.write(buffer, pixels.reshape(h, w * k))
            data = buffer.getvalue()
            if meta is not None:
                data = data[:_IHDR_END] + _metadata_chunks(meta) + data[_IHDR_END:]
            Path(tmp).write_bytes(data)


def write_output(
    path: Path,
    image: Tensor,
    depth: int,
    alpha: np.ndarray | None = None,
    channels: int | None = None,
    metadata: PhotoMetadata | None = None,
    intensity: Intensity | None = None,
) -> Path:
    """Write (C, H, W) in model units atomically at ``depth`` bits (a PNG, or a TIFF when ``path`` says .tif),
    scaled back by ``intensity`` (default: the depth's own), with the input's ``channels`` (default C), ``alpha``
    (H, W, 1) at the same depth appended unchanged, and the input photo's ``metadata``."""
    pixels = _quantize(as_channels(image, channels or image.shape[0]), depth, intensity)
    if alpha is not None:
        pixels = np.concatenate([pixels, alpha.astype(pixels.dtype)], axis=2)
    _write_pixels(path, pixels, alpha is not None, metadata)
    return path


def write_uncertainty(
    tif_path: Path,
    png_path: Path,
    std: Tensor,
    depth: int,
    channels: int | None = None,
    intensity: Intensity | None = None,
) -> float:
    """The posterior std (C, H, W, model units): float32 TIFF in the image's units (× ``intensity.peak``,
    by default 2^depth − 1) and an
    8-bit false-colour PNG of its channel mean, black to yellow up to the 99.5th percentile, which is returned
    (image units) so the colours can be read. For a gray input of a colour model (``channels`` 1) the TIFF holds
    the channel mean of the stds, an upper bound on the std of the gray output (the mean of the channels)."""
    from matplotlib import colormaps  # only --uncertainty needs it; keeps the CLI's start-up light

    scale = intensity or Intensity.of_depth(depth)
    units = scale.std_to_stored(as_channels(std.float(), channels or std.shape[0]).permute(1, 2, 0).numpy())
    with atomic_path(tif_path) as tmp:
        tifffile.imwrite(tmp, units[:, :, 0] if units.shape[2] == 1 else units, photometric="minisblack")
    mean = units.mean(axis=2)
    top = float(np.percentile(mean, 99.5)) or 1.0
    colours = colormaps["inferno"](np.clip(mean / top, 0, 1), bytes=True)[:, :, :3]
    _write_pixels(png_path, np.ascontiguousarray(colours), False)
    return top
