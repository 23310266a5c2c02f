"""Image loading with the pixel conventions of the paper's evaluation.

Why PIL and these rules: PIL never applies a PNG ``gAMA`` chunk, so the Kodak PNGs decode to their stored
bytes (a reader that applies gamma changes the PSNR by ~0.5 dB, see the authors' README); EXIF orientation is
applied, so a photo is scored the way it is displayed; gray/RGB conversion and dropped (not composited) alpha
follow the authors' loader; 16-bit maps to 8 bits as ``round(v / 257)``, the exact inverse of ``k * 257``
(PIL's ``convert("L")`` clips 16-bit values at 255). Noisy observations (``data.add_noise=false``,
``python -m ssdn.denoise``) use ``load_native`` and ``ssdn.data.intensity`` instead: the file's own 8- or 16-bit depth,
scaled by it to [0, 1], so a noisy pixel is never rounded or clipped by us.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import png
import tifffile
from PIL import Image, ImageOps, UnidentifiedImageError

from ssdn.errors import UserError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

# Modes PIL converts to RGB losslessly enough for our purpose (palette, CMYK, YCbCr, ...); alpha is dropped.
_TO_RGB_MODES = frozenset({"RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"})
_TO_L_MODES = frozenset({"1", "LA", "La"})
_16BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


class ImageDecodeError(UserError, ValueError):
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


MAX_PIXELS = 89_478_485
"""Largest image decoded (PIL's own warning limit, ~9459² px): a header claiming more is a decompression bomb
or damaged, refused before any pixel is decompressed rather than filling the memory."""


def _check_size(width: int, height: int, path: Path) -> None:
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(
            f"{path}: header says {width}x{height} pixels, more than the {MAX_PIXELS} an image may have "
            "(a decompression bomb or a damaged header); replace or remove the file"
        )


def _image_path(path: str | Path, channels: int) -> Path:
    """The checks every loader makes before decoding: a supported channel count and an existing file."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    return path


# What decoders raise on a corrupt, truncated or hostile file (png.Error: pypng, for 16-bit PNGs).
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    EOFError,
    ValueError,
    zlib.error,
    png.Error,
    Image.DecompressionBombError,
)


def _to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, 1|3) converted to ``channels`` (gray repeated to RGB, RGB to mono), contiguous."""
    if channels == 3 and pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    elif channels == 1 and pixels.shape[2] == 3:
        pixels = rgb_to_mono(pixels)
    return np.ascontiguousarray(pixels)


def load_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """Decode ``path`` into a contiguous ``uint8`` array ``(H, W, channels)``, channels 3 (RGB) or 1.

    PIL itself decodes 16-bit-per-channel *colour* PNGs to 8-bit RGB by keeping the high byte; that is outside
    our control (``load_native`` keeps all 16 bits).
    """
    path = _image_path(path, channels)
    try:
        with Image.open(path) as file:
            _check_size(*file.size, path)
            file.load()
            pixels = _decode(ImageOps.exif_transpose(file), path)
    except ImageDecodeError:
        raise
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc
    return _to_channels(pixels[:, :, None] if pixels.ndim == 2 else pixels, channels)


def rgb_to_mono(pixels: np.ndarray) -> np.ndarray:
    """uint8 or uint16 (H, W, 3) -> (H, W, 1) of the same dtype: the rounded mean of R, G, B, as the authors."""
    # Mean of three integers is never exactly .5 above an integer, so (sum + 1) // 3 is round-to-nearest.
    wide = np.uint16 if pixels.dtype == np.uint8 else np.uint32
    return ((pixels.astype(wide).sum(axis=2, keepdims=True) + 1) // 3).astype(pixels.dtype)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SUFFIXES = frozenset({".tif", ".tiff"})


def _png_bit_depth(path: Path) -> int | None:
    """The IHDR bit depth of a PNG file, or None when ``path`` is not a PNG."""
    with path.open("rb") as f:
        head = f.read(26)
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE):
        return None
    return int(head[24])


def _drop_alpha(pixels: np.ndarray, path: Path) -> np.ndarray:
    if pixels.ndim == 2:
        return pixels[:, :, None]
    if pixels.ndim == 3 and pixels.shape[2] in (1, 3):
        return pixels
    if pixels.ndim == 3 and pixels.shape[2] in (2, 4):
        return pixels[:, :, : pixels.shape[2] - 1]
    raise ImageDecodeError(
        f"{path}: pixel array of shape {pixels.shape} is not a grayscale or RGB image; save it as one 2-D "
        "image with 1 or 3 channels"
    )


def _decode_native(path: Path, keep_alpha: bool = False) -> np.ndarray:
    """(H, W, 1|3) uint8 or uint16 exactly as stored; alpha dropped, or kept as a last channel."""
    if path.suffix.lower() in _TIFF_SUFFIXES:
        pixels = tifffile.imread(path)
    elif _png_bit_depth(path) == 16:
        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        _check_size(width, height, path)
        planes = int(info["planes"])
        pixels = np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(height, width, planes)
    else:
        with Image.open(path) as file:
            _check_size(*file.size, path)
            file.load()
            img = ImageOps.exif_transpose(file)
            if img.mode in _16BIT_MODES:
                pixels = np.asarray(img).astype(np.int64)
                if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
                    raise ImageDecodeError(f"{path}: mode {img.mode!r} holds values outside 0..65535")
                pixels = pixels.astype(np.uint16)
            else:
                pixels = _decode(img, path)
                if keep_alpha and "A" in img.getbands():
                    pixels = np.dstack([pixels, np.asarray(img.getchannel("A"))])
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageDecodeError(
            f"{path}: {pixels.dtype} pixels; only 8-bit and 16-bit integer images have a defined [0, 1] scale"
        )
    return pixels if keep_alpha else _drop_alpha(pixels, path)


def load_native(path: str | Path, channels: int = 3) -> np.ndarray:
    """Decode ``path`` keeping its bit depth: contiguous ``uint8`` or ``uint16`` ``(H, W, channels)``.

    For noisy observations, whose values must reach the model as stored; channel rules as ``load_image``.
    16-bit colour PNGs are read with pypng (PIL truncates them), TIFFs with tifffile (PIL cannot read 16-bit RGB).
    """
    return load_native_with_alpha(path, channels)[0]


def load_native_with_alpha(path: str | Path, channels: int = 3) -> tuple[np.ndarray, np.ndarray | None]:
    """``load_native`` and the file's alpha channel (H, W, 1) at the same depth, or None when it has none."""
    pixels, alpha = load_as_stored(_image_path(path, channels))
    return _to_channels(pixels, channels), alpha


def load_as_stored(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """A file's colour channels as stored, (H, W, 1) gray or (H, W, 3), at its own depth, and its alpha
    (H, W, 1) or None. Palette images come out RGB (their colours, not their indices).

    For ``python -m ssdn.denoise``, which writes each image back with the channels and depth it came with and
    passes alpha through untouched: it is not part of the noisy signal.
    """
    path = _image_path(path, 3)
    try:
        pixels = _decode_native(path, keep_alpha=True)
    except ImageDecodeError:
        raise
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc
    alpha = None
    if pixels.ndim == 3 and pixels.shape[2] in (2, 4):
        alpha = np.ascontiguousarray(pixels[:, :, -1:])
    return np.ascontiguousarray(_drop_alpha(pixels, path)), alpha


def is_palette(path: str | Path) -> bool:
    """Whether ``path`` stores palette indices (PIL mode P/PA), read from the header alone."""
    try:
        with Image.open(path) as img:
            return img.mode in ("P", "PA")
    except _DECODE_ERRORS:
        return False


_ORIENTATION = 0x0112
"""The EXIF tag that tells a viewer how to turn the stored pixels for display (1: as stored)."""


@dataclass(frozen=True)
class PhotoMetadata:
    """What a photo carries beside its pixels that its denoised copy keeps: the camera's EXIF and the ICC colour
    profile. ``exif`` is TIFF-structured (no ``Exif\\0\\0`` header), as PNG's eXIf chunk holds it, with the
    orientation set to 1: the readers here turn the pixels upright, so the copy is written upright and any viewer,
    whether it honours EXIF orientation or not, shows it the way the original was shown."""

    exif: bytes | None = None
    icc: bytes | None = None


def photo_metadata(path: str | Path) -> PhotoMetadata:
    """The EXIF and ICC profile of a PNG/JPEG/WebP photo (TIFF: the ICC profile only), empty where it has none
    or they cannot be read: metadata never stops a denoise."""
    path = Path(path)
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                tag = tif.pages.first.tags.get("InterColorProfile")
                return PhotoMetadata(icc=bytes(tag.value) if tag is not None else None)
        with Image.open(path) as img:
            icc = img.info.get("icc_profile") or None
            exif = img.getexif()
            if not exif:
                return PhotoMetadata(icc=icc)
            if _ORIENTATION in exif:
                exif[_ORIENTATION] = 1
            raw = exif.tobytes()
            return PhotoMetadata(exif=raw[6:] if raw.startswith(b"Exif\x00\x00") else raw, icc=icc)
    except (*_DECODE_ERRORS, tifffile.TiffFileError, KeyError):
        return PhotoMetadata()


def bit_depth(pixels: np.ndarray) -> int:
    """8 or 16: the depth of an array from ``load_native`` (or of a packed set's uint8 images)."""
    if pixels.dtype == np.uint8:
        return 8
    if pixels.dtype == np.uint16:
        return 16
    raise ValueError(f"pixels must be uint8 or uint16, got {pixels.dtype}")


def file_bit_depth(path: str | Path) -> int:
    """A file's bit depth (8 or 16) from its header where the format allows, without decoding PNG pixels."""
    path = Path(path)
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                dtype = tif.pages[0].dtype
            return 16 if dtype == np.uint16 else 8
        depth = _png_bit_depth(path)
        if depth is not None:
            return 16 if depth == 16 else 8
        with Image.open(path) as img:
            return 16 if img.mode in _16BIT_MODES else 8
    except (OSError, ValueError, SyntaxError, EOFError, tifffile.TiffFileError) as exc:
        raise ImageDecodeError(f"{path}: cannot read image header ({type(exc).__name__}: {exc})") from exc


def check_one_bit_depth(paths: Sequence[Path], setting: str) -> int:
    """The common bit depth of ``paths``; raises naming two files of different depth (their scales differ)."""
    depths = {file_bit_depth(p): p for p in reversed(paths)}  # the first file of each depth
    if len(depths) > 1:
        (d1, p1), (d2, p2) = sorted(depths.items())
        raise ValueError(
            f"{setting}: the noisy images mix bit depths ({p1} is {d1}-bit, {p2} is {d2}-bit), so they would "
            "be scaled to [0, 1] differently; convert them to one bit depth or train on them separately"
        )
    return next(iter(depths)) if depths else 8


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
