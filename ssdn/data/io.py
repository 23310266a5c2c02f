"""Image loading with the pixel conventions of the paper's evaluation.

Why PIL and these rules:
- PIL never applies a PNG ``gAMA`` chunk, so the Kodak PNGs decode to their stored bytes (a reader that
  applies gamma changes the PSNR by ~0.5 dB, see the authors' README).
- EXIF orientation is applied, so a photo is scored the way it is displayed.
- Grayscale is tiled to RGB when 3 channels are asked for (the authors' ``set_color_channels``); RGB
  becomes mono as the rounded mean of R, G, B, again as the authors do.
- Alpha is dropped, not composited: the colour values are kept as stored, which is what a plain RGB
  conversion of the authors' loader does.
- 16-bit images are mapped to 8 bits as ``round(v / 257)`` (never a tie, 257 being odd), the exact inverse
  of the usual 8→16-bit expansion ``k * 257``. (PIL's own ``convert("L")`` clips 16-bit values at 255,
  which is wrong.) PIL itself decodes 16-bit-per-channel *colour* PNGs to 8-bit RGB by keeping the high
  byte; that is outside our control.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

# Modes PIL converts to RGB losslessly enough for our purpose (palette, CMYK, YCbCr, ...); alpha is dropped.
_TO_RGB_MODES = frozenset({"RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"})
_TO_L_MODES = frozenset({"1", "LA", "La"})
_16BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


class ImageDecodeError(ValueError):
    """A file exists but cannot be decoded into an 8-bit image (corrupt, truncated or an unsupported mode)."""


def _sixteen_to_eight(img: Image.Image, path: Path) -> np.ndarray:
    v = np.asarray(img).astype(np.int64)
    if v.size and (v.min() < 0 or v.max() > 65535):
        raise ImageDecodeError(
            f"{path}: mode {img.mode!r} holds values outside 0..65535; only 16-bit integer images are "
            "supported"
        )
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def _decode(img: Image.Image, path: Path) -> np.ndarray:
    """Return (H, W) or (H, W, 3) uint8, dropping alpha."""
    mode = img.mode
    if mode in _16BIT_MODES:
        return _sixteen_to_eight(img, path)
    if mode in _TO_L_MODES:
        img = img.convert("L")
    elif mode in _TO_RGB_MODES:
        img = img.convert("RGB")
    elif mode not in ("L", "RGB"):
        raise ImageDecodeError(
            f"{path}: unsupported image mode {mode!r} (floating-point or exotic modes have no defined "
            "8-bit range); convert the file to 8-bit RGB or grayscale first"
        )
    return np.array(img, dtype=np.uint8)  # a writable copy


def load_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """Decode ``path`` into a contiguous ``uint8`` array ``(H, W, channels)``, channels 3 (RGB) or 1."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            pixels = _decode(img, path)
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, ValueError, zlib.error) as exc:
        raise ImageDecodeError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc

    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if channels == 3 and pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    elif channels == 1 and pixels.shape[2] == 3:
        pixels = rgb_to_mono(pixels)
    return np.ascontiguousarray(pixels)


def rgb_to_mono(pixels: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> (H, W, 1): the rounded mean of R, G, B, as the authors make mono images."""
    # Mean of three integers is never exactly .5 above an integer, so (sum + 1) // 3 is round-to-nearest.
    return ((pixels.astype(np.uint16).sum(axis=2, keepdims=True) + 1) // 3).astype(np.uint8)


def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (by extension, case-insensitive), sorted by path relative to ``folder``.

    Sorting matters: the order decides which noise draw each image gets in the evaluation protocol.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    files = [p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())
