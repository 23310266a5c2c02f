"""Training planes of microscopy stacks: a 2-D model trains on every T and Z plane of every stack (and on every
channel alone when ``data.channels_independent``), ``data.axes`` set.

The unit of training is a (stack, plane index) pair, drawn by the crop stream (``ssdn.data.crops``) as it draws
files in 2-D. Stacks are opened lazily (``ssdn.data.stacks.open_stack``): a crop reads only its plane from the
file, and :class:`PlaneReader` keeps the last few decoded planes, so a crop never costs a whole stack.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssdn.data.sources import DataSourceError, DataSourceNotFoundError, Source
from ssdn.data.stacks import Stack, open_stack, plane_indices, take_plane

__all__ = [
    "PLANE_CACHE",
    "PlaneReader",
    "PlaneRef",
    "list_stacks",
    "open_training_stack",
    "plane_refs",
    "validation_planes",
]

PLANE_CACHE = 4
"""Decoded planes each stream (each loader worker) keeps: a batch often cuts several crops of one plane."""

_TIFF = (".tif", ".tiff")
_ZARR_MARKERS = (".zattrs", ".zgroup", "zarr.json")


def _is_zarr(path: Path) -> bool:
    return any((path / name).exists() for name in _ZARR_MARKERS)


@dataclass(frozen=True)
class PlaneRef:
    """One training plane: ``stack`` (index into the chosen stacks) and its axis positions, e.g. Z=3."""

    stack: int
    index: tuple[tuple[str, int], ...]

    def label(self, path: Path) -> str:
        """``path[Z=3,C=0]``: the plane named in messages and records."""
        return f"{path}[{','.join(f'{a}={i}' for a, i in self.index)}]"


def list_stacks(source: Source, *, recursive: bool, setting: str = "train_dir") -> list[Path]:
    """TIFF / OME-TIFF files and OME-Zarr folders of a folder or list of folders, each folder sorted.

    An OME-Zarr folder is one stack: its chunks are never walked. Raises, naming ``setting``, for a missing
    folder or one without stacks.
    """
    entries = [source] if isinstance(source, str | Path) else list(source)
    if not entries:
        raise DataSourceError(f"{setting} is an empty list; give a folder of stacks or a list of folders")
    found: list[Path] = []
    for entry in entries:
        folder = Path(entry).expanduser()
        if not folder.is_dir():
            raise DataSourceNotFoundError(
                f"{setting}: stack folder {folder} does not exist or is not a folder (data.axes is set: the "
                "training files are TIFF / OME-TIFF stacks or OME-Zarr folders)"
            )
        here: list[Path] = []
        for root, dirs, files in os.walk(folder):
            base = Path(root)
            zarrs = [d for d in dirs if _is_zarr(base / d)]
            here += [base / d for d in zarrs]
            here += [base / f for f in files if Path(f).suffix.lower() in _TIFF]
            dirs[:] = sorted(d for d in dirs if d not in zarrs) if recursive else []
        if not here:
            hint = "" if recursive else " (stacks in subfolders need recursive=true)"
            raise DataSourceError(
                f"{setting}: no TIFF / OME-TIFF stack (.tif, .tiff) or OME-Zarr folder in {folder}{hint}"
            )
        found += sorted(here, key=lambda p: p.relative_to(folder).as_posix())
    return found


def open_training_stack(path: Path, axes: str, channels: int, independent: bool, setting: str) -> Stack:
    """``path`` opened lazily with ``axes``; refused (naming the settings) when its planes do not have the
    model's ``channels``."""
    stack = open_stack(path, axes)
    stored = stack.size("C")
    if (1 if independent else stored) != channels:
        raise DataSourceError(
            f"{setting}: {path} has {stored} channel(s) (axes {stack.axes}) but channels={channels}; set "
            f"channels={stored}, or channels=1 with data.channels_independent=true (each channel its own image)"
        )
    return stack


def plane_refs(stacks: Sequence[Stack], independent: bool) -> list[PlaneRef]:
    """Every plane of every stack, stacks in order, planes in file order."""
    return [
        PlaneRef(i, tuple(index.items()))
        for i, stack in enumerate(stacks)
        for index in plane_indices(stack, independent)
    ]


def _as_image(plane: np.ndarray) -> np.ndarray:
    """(C, Y, X) -> (Y, X, C), the 2-D path's layout."""
    return np.ascontiguousarray(plane.transpose(1, 2, 0))


class PlaneReader:
    """Plane ``k`` of ``planes`` as (H, W, C) at the file's depth, read from its stack on demand; the last
    :data:`PLANE_CACHE` planes kept decoded."""

    def __init__(self, stacks: Sequence[Stack], planes: Sequence[PlaneRef], cache: int = PLANE_CACHE) -> None:
        self.stacks, self.planes, self.cache = list(stacks), list(planes), cache
        self._kept: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.planes)

    def label(self, k: int) -> str:
        ref = self.planes[k]
        return ref.label(self.stacks[ref.stack].path or Path("?"))

    def __call__(self, k: int) -> np.ndarray:
        hit = self._kept.get(k)
        if hit is not None:
            self._kept.move_to_end(k)
            return hit
        ref = self.planes[k]
        image = _as_image(take_plane(self.stacks[ref.stack], dict(ref.index)))
        self._kept[k] = image
        while len(self._kept) > self.cache:
            self._kept.popitem(last=False)
        return image


def validation_planes(stacks: Sequence[Stack], independent: bool, count: int) -> list[np.ndarray]:
    """``count`` planes (H, W, C) spread evenly over every plane of the held-out ``stacks``, the centres of
    ``count`` equal runs (one plane: the middle one; all planes when they are fewer): the noisy validation
    images."""
    refs = plane_refs(stacks, independent)
    m = min(count, len(refs))
    picks = ((np.arange(m) + 0.5) * len(refs) / m).astype(int)
    return [_as_image(take_plane(stacks[refs[k].stack], dict(refs[k].index))) for k in picks.tolist()]
