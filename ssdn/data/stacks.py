"""N-D microscopy stacks: declared axes, lazy reading, plane/volume iteration and metadata-preserving writing.

Microscopists keep their noisy counts in multi-page TIFF / OME-TIFF (and OME-Zarr) stacks with axes such as
``ZYX`` or ``TZCYX``. This module is the data core for them, free of Lightning: it reads a stack with the axes
the file declares (or the ``data.axes`` setting for files that declare none), lets training sample 2-D planes or
3-D volumes from it without loading it whole, and writes a result with the same axes, dtype and OME metadata
(physical pixel sizes, channel names) plane by plane to a temporary file that replaces the target only once
complete, so an interrupted run never leaves a partial output.

Axes use the OME letters ``T`` (time), ``Z`` (depth), ``C`` (channel), ``Y``, ``X``; each at most once, ``Y``
and ``X`` last. One bit depth for a whole collection; how the counts become model units is
``ssdn.data.intensity``'s (by default v / 255 or v / 65535, as the 2-D path).
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tifffile

from ssdn.data.io import bit_depth
from ssdn.errors import UserError

__all__ = [
    "AXES_LETTERS",
    "AxesError",
    "Stack",
    "StackError",
    "StackMeta",
    "StackWriter",
    "check_axes",
    "collection_bit_depth",
    "iter_planes",
    "iter_volumes",
    "open_stack",
    "read_ome_zarr",
    "read_stack",
    "sibling_path",
    "write_stack",
]

AXES_LETTERS = "TZCYX"
"""The OME dimension letters a stack may use, in OME's own outer-to-inner order."""

_SPATIAL = "ZYX"
_TIFF_SUFFIXES = (".tif", ".tiff")


class StackError(UserError, ValueError):
    """A stack file that cannot be read as declared, or an output that cannot be written."""


class AxesError(UserError, ValueError):
    """An axes string that is not a valid ``data.axes``."""


def check_axes(axes: str, setting: str = "data.axes") -> str:
    """``axes`` upper-cased and validated: letters from T, Z, C, Y, X, each once, ending in ``YX``."""
    norm = str(axes).strip().upper()
    bad = sorted(set(norm) - set(AXES_LETTERS))
    if bad or len(set(norm)) != len(norm) or not norm.endswith("YX"):
        why = (
            f"unknown letter(s) {''.join(bad)}"
            if bad
            else "a repeated letter"
            if len(set(norm)) != len(norm)
            else "Y and X must be the last two"
        )
        raise AxesError(
            f"{setting}={axes!r} is not a valid axes string ({why}); use letters from {AXES_LETTERS} (time, "
            "depth, channel, rows, columns), each at most once, ending in YX, e.g. YX, CYX, ZYX, TYX or TZCYX"
        )
    return norm


@dataclass(frozen=True)
class StackMeta:
    """What a writer needs to give a result the input's form: axes, dtype, OME physical sizes, channel names."""

    axes: str
    dtype: np.dtype[Any]
    physical_sizes: Mapping[str, tuple[float, str | None]] = field(default_factory=dict)
    """Axis letter (X, Y, Z, and T as a time increment) -> (size, unit or None when the file names none)."""
    channel_names: tuple[str, ...] | None = None

    def as_float32(self) -> StackMeta:
        """The same form for a float32 stack written beside this one (a per-voxel uncertainty)."""
        return replace(self, dtype=np.dtype(np.float32))

    def ome_metadata(self) -> dict[str, Any]:
        """The ``metadata`` dict for ``tifffile.imwrite(..., ome=True)``."""
        md: dict[str, Any] = {"axes": self.axes}
        for letter, (size, unit) in self.physical_sizes.items():
            key = "TimeIncrement" if letter == "T" else f"PhysicalSize{letter}"
            md[key] = size
            if unit is not None:
                md[f"{key}Unit"] = unit
        if self.channel_names is not None:
            md["Channel"] = {"Name": list(self.channel_names)}
        return md


class _Indexable(Protocol):
    """An array-like (ndarray, np.memmap, zarr.Array) read by basic indexing into a numpy array."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, key: Any) -> Any: ...


class Stack:
    """An N-D image with named axes over a possibly lazy source (plane reads from the file, or a chunked store).

    ``take`` reads only the part asked for, so a 2-D plane of a stack larger than memory costs one plane.
    The source may have extra size-1 axes (dropped) and lack some of ``axes`` (added as size 1), in any order.
    """

    def __init__(self, source: _Indexable, source_axes: str, meta: StackMeta, path: Path | None = None):
        axes = meta.axes
        extra = [a for a, n in zip(source_axes, source.shape, strict=True) if a not in axes and n != 1]
        if len(source_axes) != len(source.shape) or extra:
            raise ValueError(f"source axes {source_axes!r} / shape {source.shape} do not fit axes {axes!r}")
        self.source = source
        self.source_axes = source_axes
        self.meta = meta
        self.path = path
        sizes = dict(zip(source_axes, source.shape, strict=True))
        self.shape: tuple[int, ...] = tuple(int(sizes.get(a, 1)) for a in axes)

    @property
    def axes(self) -> str:
        return self.meta.axes

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.meta.dtype

    def size(self, letter: str) -> int:
        """The length of axis ``letter`` (1 when the stack has no such axis)."""
        return self.shape[self.axes.index(letter)] if letter in self.axes else 1

    def take(
        self, index: Mapping[str, int] | None = None, window: Mapping[str, slice] | None = None
    ) -> np.ndarray:
        """The sub-array at the given axis positions, the other axes kept in the stack's order; ``window``
        narrows kept axes to a range (e.g. ``{"Z": slice(8, 24)}``), read from the source alone (a lazy TIFF
        reads those planes only)."""
        index, window = dict(index or {}), dict(window or {})
        unknown = (set(index) | set(window)) - set(self.axes)
        if unknown:
            raise KeyError(f"axes {sorted(unknown)} not in {self.axes!r}")
        for a, i in index.items():
            if not 0 <= i < self.size(a):
                raise IndexError(f"{a}={i} outside 0..{self.size(a) - 1} of {self.path}")
        for a, r in window.items():
            if (
                a in index
                or r.step not in (None, 1)
                or not 0 <= (r.start or 0) < (r.stop or 0) <= self.size(a)
            ):
                raise IndexError(f"{a}={r} is not a range inside 0..{self.size(a)} of {self.path}")
        key = tuple(
            index.get(a, window.get(a, slice(None))) if a in self.axes else 0 for a in self.source_axes
        )
        part = np.asarray(self.source[key])
        got = [a for a in self.source_axes if a in self.axes and a not in index]
        want = [a for a in self.axes if a not in index]
        for a in want:
            if a not in got:
                got.append(a)
                part = part[..., None]
        return part.transpose([got.index(a) for a in want])

    def read(self) -> np.ndarray:
        """The whole stack in memory, in ``axes`` order."""
        return self.take()


# --------------------------------------------------------------------------------------------- reading


def _ome_meta(ome_xml: str | None) -> tuple[dict[str, tuple[float, str | None]], tuple[str, ...] | None]:
    """Physical sizes and channel names of the first OME Image (namespace-agnostic)."""
    if not ome_xml:
        return {}, None
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        return {}, None
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return {}, None
    sizes: dict[str, tuple[float, str | None]] = {}
    for letter, key in (
        ("X", "PhysicalSizeX"),
        ("Y", "PhysicalSizeY"),
        ("Z", "PhysicalSizeZ"),
        ("T", "TimeIncrement"),
    ):
        if key in pixels.attrib:
            sizes[letter] = (float(pixels.attrib[key]), pixels.attrib.get(f"{key}Unit"))
    channels = [e for e in pixels if e.tag.rsplit("}", 1)[-1] == "Channel"]
    names = tuple(c.attrib.get("Name", "") for c in channels)
    return sizes, (names if channels and any(names) else None)


_IMAGEJ_UNITS = {"micron": "µm", "um": "µm", "\\u00B5m": "µm", "nm": "nm", "mm": "mm"}


def _imagej_meta(tif: tifffile.TiffFile) -> dict[str, tuple[float, str | None]]:
    """Physical sizes of an ImageJ (Fiji) hyperstack: X/Y from the resolution tags, Z ``spacing``, T ``finterval``."""
    md = tif.imagej_metadata or {}
    unit = md.get("unit")
    unit = _IMAGEJ_UNITS.get(unit, unit) if isinstance(unit, str) and unit not in ("", "pixel") else None
    sizes: dict[str, tuple[float, str | None]] = {}
    if unit is not None:
        for letter in "XY":
            tag = tif.pages.first.tags.get(f"{letter}Resolution")
            if tag is not None and tuple(tag.value) != (1, 1) and tag.value[0]:
                sizes[letter] = (tag.value[1] / tag.value[0], unit)
        if "spacing" in md:
            sizes["Z"] = (float(md["spacing"]), unit)
    if md.get("finterval"):
        sizes["T"] = (float(md["finterval"]), "s")
    return sizes


def _has_own_axes(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries) -> bool:
    """Whether the file names its axes (OME, ImageJ, or tifffile's shaped metadata with axes)."""
    if series.kind in ("ome", "imagej"):
        return True
    if series.kind == "shaped":
        md = tif.shaped_metadata
        return md is not None and len(md) > 0 and "axes" in md[0]
    return False


def _own_axes(where: str, source_axes: str, shape: Sequence[int], declared: str | None) -> str:
    """The stack's axes for a file that names its own: ``declared`` when it covers every axis longer than 1,
    else (nothing declared) the file's axes longer than 1 in its order, a trailing channel axis moved before YX."""
    real = "".join(a for a, n in zip(source_axes, shape, strict=True) if n != 1 or a in "YX")
    if declared is not None:
        missing = sorted(set(real) - set(declared))
        if missing:
            raise StackError(
                f"{where}: the file's axes are {real!r} (shape {tuple(n for n in shape if n != 1)}), which "
                f"data.axes={declared!r} does not cover (no {''.join(missing)}); set data.axes to match the files"
            )
        return declared
    if real.endswith("C") and "YX" in real:
        real = real[:-1].replace("YX", "CYX")
    try:
        return check_axes(real, setting=f"{where}: the file's axes")
    except AxesError as exc:
        raise StackError(f"{exc}; set data.axes to read it") from None


def _positional_axes(path: Path, file_axes: str, declared: str | None) -> str:
    """Source axes for a file that names none: tifffile's Y, X and S (samples, as C) kept, the other
    dimensions given the declared letters in order."""
    ndim = len(file_axes)
    if declared is None:
        if ndim == 2:
            return "YX"
        raise StackError(
            f"{path}: the file does not name its axes ({ndim} dimensions); set data.axes (e.g. ZYX, TYX or CYX)"
        )
    if len(declared) != ndim:
        raise StackError(
            f"{path}: data.axes={declared!r} names {len(declared)} axes but the file's image has {ndim} "
            f"dimensions ({file_axes}); set data.axes to one letter per dimension"
        )
    fixed = {"Y": "Y", "X": "X", "S": "C"}
    if "S" in file_axes and "C" not in declared:
        raise StackError(f"{path}: the file holds RGB samples but data.axes={declared!r} has no C")
    rest = iter(a for a in declared if a not in fixed.values() or (a == "C" and "S" not in file_axes))
    return "".join(fixed.get(a) or next(rest) for a in file_axes)


def _check_dtype(where: str | Path, dtype: np.dtype[Any], counts: bool) -> None:
    if not counts and dtype in (np.float32, np.float64):
        return
    if dtype not in (np.uint8, np.uint16):
        raise StackError(
            f"{where}: {dtype} pixels; only 8-bit and 16-bit integer stacks have a defined [0, 1] scale (noisy "
            "counts as the camera stored them); convert the stack to uint8 or uint16"
        )


class _PlaneFile:
    """An uncompressed, contiguous image in a file, read plane by plane with ordinary reads.

    Not a memory map on purpose: pages of a mapped file count in the process's resident memory until the
    kernel reclaims them, so walking a 1.6 GB stack through ``np.memmap`` shows ~1.6 GB RSS; file reads go
    through the page cache, which the process does not hold.
    """

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype[Any]):
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, dtype
        self._plane_bytes = int(np.prod(shape[-2:])) * dtype.itemsize

    def __getitem__(self, key: tuple[Any, ...]) -> np.ndarray:
        key = tuple(key) + (slice(None),) * (len(self.shape) - len(key))
        lead = key[:-2]
        sizes = self.shape[:-2]
        ranges = [
            range(n)[k] if isinstance(k, slice) else [range(n)[k]] for k, n in zip(lead, sizes, strict=True)
        ]
        kept = [len(r) for r, k in zip(ranges, lead, strict=True) if isinstance(k, slice)]
        # a contiguous run of rows is read alone (a tile of a large plane costs its rows, not the plane)
        rows, cols = key[-2], key[-1]
        first, count = 0, self.shape[-2]
        if isinstance(rows, slice) and rows.step in (None, 1):
            first, stop, _ = rows.indices(self.shape[-2])
            count, rows = max(stop - first, 0), slice(None)
        row_bytes = self._plane_bytes // self.shape[-2] if self.shape[-2] else 0
        planes = []
        with open(self.path, "rb") as f:
            for pos in itertools.product(*ranges):
                f.seek(
                    self.offset
                    + int(np.ravel_multi_index(pos, self.shape[:-2]) if pos else 0) * self._plane_bytes
                    + first * row_bytes
                )
                plane = np.frombuffer(f.read(count * row_bytes), self.dtype).reshape(count, self.shape[-1])
                planes.append(plane[rows, cols])
        return np.stack(planes).reshape(*kept, *planes[0].shape).astype(self.dtype.newbyteorder("="))


def _lazy_tiff(path: Path, tif: tifffile.TiffFile, series: tifffile.TiffPageSeries) -> _Indexable:
    """Plane reads when the pixels are stored uncompressed and contiguous, else a chunked zarr view of the
    file (``zarr`` installed), else the whole array in memory."""
    if series.dataoffset is not None:
        dtype = np.dtype(series.dtype).newbyteorder(tif.byteorder)
        return _PlaneFile(path, int(series.dataoffset), tuple(series.shape), dtype)
    try:
        import zarr
    except ImportError:
        return series.asarray()
    return zarr.open_array(series.aszarr(level=0), mode="r")


def _open_tiff(path: Path, declared: str | None, lazy: bool, counts: bool) -> Stack:
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            dtype = np.dtype(series.dtype)
            _check_dtype(path, dtype, counts)
            file_axes, shape = series.axes, tuple(series.shape)
            if _has_own_axes(tif, series):
                if "S" in file_axes and "C" in file_axes:
                    raise StackError(f"{path}: the file has both channels and RGB samples; save one of them")
                source_axes = file_axes.replace("S", "C")
                axes = _own_axes(str(path), source_axes, shape, declared)
            else:
                source_axes = _positional_axes(path, file_axes, declared)
                axes = declared or source_axes
            sizes, names = _ome_meta(tif.ome_metadata if tif.is_ome else None)
            if tif.is_imagej and not tif.is_ome:
                sizes = _imagej_meta(tif)
            source = _lazy_tiff(path, tif, series) if lazy else series.asarray()
    except (OSError, tifffile.TiffFileError) as exc:
        raise StackError(f"{path}: cannot read TIFF ({type(exc).__name__}: {exc})") from exc
    return _make_stack(source, source_axes, axes, dtype, sizes, names, path)


def _make_stack(
    source: _Indexable,
    source_axes: str,
    axes: str,
    dtype: np.dtype[Any],
    sizes: Mapping[str, tuple[float, str | None]],
    names: Sequence[str] | None,
    path: Path,
) -> Stack:
    n_channels = dict(zip(source_axes, source.shape, strict=True)).get("C", 1)
    meta = StackMeta(
        axes,
        dtype,
        {k: v for k, v in sizes.items() if k in axes},
        tuple(names) if names is not None and len(names) == n_channels and "C" in axes else None,
    )
    return Stack(source, source_axes, meta, path)


def read_ome_zarr(path: str | Path, axes: str | None = None, counts: bool = True) -> Stack:
    """Level 0 of an OME-NGFF (OME-Zarr) image, lazily, with its axes, scale (physical sizes) and channel labels.

    Needs the optional ``zarr`` package (``pip install 'ssdn[zarr]'``).
    """
    path = Path(path)
    declared = None if axes is None else check_axes(axes)
    try:
        import zarr
    except ImportError:
        raise StackError(f"{path}: reading OME-Zarr needs zarr; pip install 'ssdn[zarr]'") from None
    try:
        group = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, ValueError, TypeError) as exc:
        raise StackError(f"{path}: not a readable zarr group ({type(exc).__name__}: {exc})") from exc
    attrs: dict[str, Any] = dict(group.attrs)
    ome: dict[str, Any] = attrs.get(
        "ome", attrs
    )  # NGFF 0.5 nests its metadata under "ome"; 0.4 keeps it at the top
    multiscales = ome.get("multiscales")
    if not multiscales:
        raise StackError(f"{path}: no OME-NGFF 'multiscales' metadata; not an OME-Zarr image")
    first = multiscales[0]
    ax = [a["name"] if isinstance(a, dict) else a for a in first.get("axes", [])]
    units = [a.get("unit") if isinstance(a, dict) else None for a in first.get("axes", [])]
    source_axes = "".join(str(a).upper() for a in ax)
    level0 = first["datasets"][0]
    array: Any = group[level0["path"]]
    if len(source_axes) != len(array.shape) or not set(source_axes) <= set(AXES_LETTERS):
        raise StackError(
            f"{path}: OME-Zarr axes {ax} do not name the {len(array.shape)} dimensions as t, z, c, y, x"
        )
    dtype = np.dtype(array.dtype)
    _check_dtype(path, dtype, counts)
    sizes: dict[str, tuple[float, str | None]] = {}
    for t in level0.get("coordinateTransformations", []):
        if t.get("type") == "scale":
            for letter, s, unit in zip(source_axes, t["scale"], units, strict=True):
                if letter in "XYZT":
                    sizes[letter] = (float(s), unit)
    labels = [c.get("label", "") for c in ome.get("omero", {}).get("channels", [])]
    final = _own_axes(str(path), source_axes, array.shape, declared)
    return _make_stack(array, source_axes, final, dtype, sizes, labels if any(labels) else None, path)


def _open(path: str | Path, axes: str | None, lazy: bool, counts: bool) -> Stack:
    path = Path(path)
    declared = None if axes is None else check_axes(axes)
    if path.is_dir() and any((path / name).exists() for name in (".zattrs", ".zgroup", "zarr.json")):
        return read_ome_zarr(path, declared, counts)
    if not path.is_file():
        raise StackError(f"{path}: stack file not found")
    if path.suffix.lower() not in _TIFF_SUFFIXES:
        raise StackError(f"{path}: not a TIFF / OME-TIFF (.tif, .tiff) file or an OME-Zarr folder")
    return _open_tiff(path, declared, lazy, counts)


def read_stack(path: str | Path, axes: str | None = None, counts: bool = True) -> Stack:
    """A TIFF / OME-TIFF stack (or OME-Zarr folder) read into memory.

    ``axes`` (``data.axes``) is used for files that do not name theirs, one letter per dimension; for files
    that do (OME, ImageJ), it must cover each of their axes longer than 1 and gives the stack its axis order.
    ``counts``: only uint8 / uint16 (noisy data, whose [0, 1] scale is defined); False also reads float32 /
    float64 stacks (clean references, uncertainty stacks).
    """
    return _open(path, axes, lazy=False, counts=counts)


def open_stack(path: str | Path, axes: str | None = None, counts: bool = True) -> Stack:
    """As :func:`read_stack`, but lazy: read plane by plane when stored uncompressed, by chunk (zarr) otherwise.

    Planes and volumes taken from it are read on demand, so a stack larger than memory can be walked: reading
    a 2048×2048×200 uint16 stack (1.6 GB) plane by plane and writing it back through :func:`write_stack` peaks
    at 160 MB RSS (210 MB through :class:`StackWriter`). A compressed TIFF without ``zarr`` installed is read
    whole.
    """
    return _open(path, axes, lazy=True, counts=counts)


# ----------------------------------------------------------------------------------------- iteration


def plane_indices(stack: Stack, channels_independent: bool = False) -> list[dict[str, int]]:
    """Every 2-D plane position (each T and Z; and each C when channels are independent), in file order."""
    loop = [a for a in stack.axes[:-2] if a != "C" or channels_independent]
    return [
        dict(zip(loop, pos, strict=True)) for pos in itertools.product(*(range(stack.size(a)) for a in loop))
    ]


def take_plane(stack: Stack, index: Mapping[str, int]) -> np.ndarray:
    """The plane at ``index`` as (C, Y, X): the stack's channels, or 1 when C is indexed or absent."""
    plane = stack.take(index)
    return plane if plane.ndim == 3 else plane[None]


def iter_planes(
    stack: Stack, channels_independent: bool = False
) -> Iterator[tuple[dict[str, int], np.ndarray]]:
    """(index, plane (C, Y, X)) for every plane: what a 2-D model trains on and denoises, one plane in memory."""
    for index in plane_indices(stack, channels_independent):
        yield index, take_plane(stack, index)


def volume_indices(stack: Stack, channels_independent: bool = False) -> list[dict[str, int]]:
    """Every 3-D volume position (each T; and each C when channels are independent)."""
    if "Z" not in stack.axes:
        raise StackError(f"{stack.path}: axes {stack.axes!r} have no Z; a 3-D model needs Z (set data.axes)")
    loop = [a for a in stack.axes[:-2] if a == "T" or (a == "C" and channels_independent)]
    return [
        dict(zip(loop, pos, strict=True)) for pos in itertools.product(*(range(stack.size(a)) for a in loop))
    ]


def take_volume(
    stack: Stack, index: Mapping[str, int], window: Mapping[str, slice] | None = None
) -> np.ndarray:
    """The volume at ``index`` as (C, Z, Y, X); ``window`` reads a sub-volume (``Stack.take``)."""
    vol = stack.take(index, window)
    rest = [a for a in stack.axes if a not in index]
    if "C" not in rest:
        return vol[None]
    return vol.transpose([rest.index(a) for a in "CZYX"])


def iter_volumes(
    stack: Stack, channels_independent: bool = False
) -> Iterator[tuple[dict[str, int], np.ndarray]]:
    """(index, volume (C, Z, Y, X)) for every T (and C when independent): what a 3-D model walks."""
    for index in volume_indices(stack, channels_independent):
        yield index, take_volume(stack, index)


# ------------------------------------------------------------------------------------------- scaling


def collection_bit_depth(stacks: Sequence[Stack]) -> int:
    """The one bit depth (8 or 16) of a collection; two depths would scale to [0, 1] differently."""
    depths = {bit_depth(np.empty(0, s.dtype)): s for s in reversed(stacks)}
    if len(depths) > 1:
        (d1, s1), (d2, s2) = sorted(depths.items(), key=lambda kv: kv[0])
        raise StackError(
            f"the stacks mix bit depths ({s1.path} is {d1}-bit, {s2.path} is {d2}-bit), so they would be scaled "
            "to [0, 1] differently; convert them to one bit depth or train on them separately"
        )
    return next(iter(depths)) if depths else 16


# ------------------------------------------------------------------------------------------- writing


def sibling_path(path: str | Path, tag: str) -> Path:
    """``name.ome.tif`` -> ``name.<tag>.ome.tif`` (e.g. the uncertainty stack written beside a result)."""
    path = Path(path)
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return path.with_name(f"{name[: -len(suffix)]}.{tag}{name[-len(suffix) :]}")
    return path.with_name(f"{name}.{tag}")


@contextlib.contextmanager
def _atomic(path: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary file beside ``path`` that replaces it only when the block completes; removed otherwise."""
    if path.exists() and not overwrite:
        raise StackError(f"{path}: already exists; choose another output path or allow overwriting it")
    if not path.parent.is_dir():
        raise StackError(f"{path}: the folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _tiff_kwargs(meta: StackMeta) -> dict[str, Any]:
    return {"ome": True, "photometric": "minisblack", "metadata": meta.ome_metadata()}


def _checked_planes(
    planes: Iterable[np.ndarray], shape: tuple[int, ...], dtype: np.dtype[Any]
) -> Iterator[np.ndarray]:
    count = int(np.prod(shape[:-2]))
    n = 0
    for plane in planes:
        plane = np.asarray(plane)
        if plane.shape != shape[-2:] or plane.dtype != dtype:
            raise ValueError(f"plane {n}: {plane.dtype}{plane.shape}, expected {dtype}{shape[-2:]}")
        n += 1
        if n > count:
            raise ValueError(f"more than the {count} planes of shape {shape}")
        yield plane
    if n != count:
        raise ValueError(f"{n} planes given, shape {shape} needs {count}")


def write_stack(
    path: str | Path,
    data: np.ndarray | Iterable[np.ndarray],
    meta: StackMeta,
    shape: Sequence[int] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an OME-TIFF with ``meta``'s axes, dtype, physical sizes and channel names, atomically.

    ``data`` is the whole array (in ``meta.axes`` order) or, for stacks larger than memory, an iterable of
    2-D (Y, X) planes in C order of the leading axes with ``shape`` given: each plane goes to disk as it
    comes. A failure part-way leaves no file at ``path``. Never replaces an existing file unless ``overwrite``.
    """
    path = Path(path)
    dtype = np.dtype(meta.dtype)
    if isinstance(data, np.ndarray):
        if data.ndim != len(meta.axes) or data.dtype != dtype:
            raise ValueError(
                f"array {data.dtype}{data.shape} does not match axes {meta.axes!r}, dtype {dtype}"
            )
        full: tuple[int, ...] = data.shape
    else:
        if shape is None:
            raise ValueError("shape is required when data is an iterable of planes")
        full = tuple(int(n) for n in shape)
        if len(full) != len(meta.axes):
            raise ValueError(f"shape {full} does not match axes {meta.axes!r}")
    with _atomic(path, overwrite) as tmp:
        if isinstance(data, np.ndarray):
            tifffile.imwrite(tmp, data, **_tiff_kwargs(meta))
        else:
            tifffile.imwrite(
                tmp, _checked_planes(data, full, dtype), shape=full, dtype=dtype, **_tiff_kwargs(meta)
            )
    return path


class StackWriter:
    """An OME-TIFF on disk filled in any order (tile by tile, volume by volume) through a memory map.

    ``with StackWriter(path, shape, meta) as out: out.write((z, slice(y0, y1), slice(x0, x1)), tile)``: the file
    is created uncompressed at its full size in a temporary file beside ``path`` and filled through a shared
    mapping whose written pages are flushed and released every ``release_bytes``, so the process holds only
    the tiles in flight (a mapping's pages otherwise count in its resident memory until the end). The file
    replaces ``path`` when the block ends normally and is deleted when it raises.
    """

    def __init__(
        self,
        path: str | Path,
        shape: Sequence[int],
        meta: StackMeta,
        overwrite: bool = False,
        release_bytes: int = 64 << 20,
    ):
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        if len(self.shape) != len(meta.axes):
            raise ValueError(f"shape {self.shape} does not match axes {meta.axes!r}")
        self.meta = meta
        self.overwrite = overwrite
        self.release_bytes = release_bytes
        self._stack: contextlib.ExitStack | None = None
        self._map: mmap.mmap | None = None
        self._array: np.ndarray | None = None
        self._pending = 0

    def write(self, key: Any, values: np.ndarray) -> None:
        """``array[key] = values`` into the file (``key`` as numpy indexing, in ``meta.axes`` order)."""
        if self._array is None or self._map is None:
            raise RuntimeError("StackWriter.write is only available inside its with block")
        self._array[key] = values
        self._pending += np.asarray(values).nbytes
        if self._pending >= self.release_bytes:
            self._map.flush()
            self._map.madvise(mmap.MADV_DONTNEED)  # shared file mapping: the data stay in the file
            self._pending = 0

    def __enter__(self) -> StackWriter:
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(_atomic(self.path, self.overwrite))
        dtype = np.dtype(self.meta.dtype)
        where = tifffile.imwrite(
            tmp, shape=self.shape, dtype=dtype, returnoffset=True, **_tiff_kwargs(self.meta)
        )
        if where is None:
            raise RuntimeError("tifffile did not write a contiguous image")
        offset, nbytes = where[0], int(np.prod(self.shape)) * dtype.itemsize
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        with open(tmp, "r+b") as f:
            self._map = mmap.mmap(f.fileno(), offset - start + nbytes, offset=start)
        self._array = np.frombuffer(self._map, dtype, int(np.prod(self.shape)), offset - start).reshape(
            self.shape
        )
        return self

    def __exit__(self, *exc: Any) -> bool | None:
        assert self._stack is not None and self._map is not None
        self._array = None  # the mapping closes only once no array views it
        if exc[0] is None:
            self._map.flush()
        self._map.close()
        self._map = None
        stack, self._stack = self._stack, None
        return stack.__exit__(*exc)
