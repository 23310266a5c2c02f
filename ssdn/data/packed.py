"""Reader of packed training sets (written by ``python -m ssdn.prepare``): random access without decoding.

Why: the paper trains on ~44k ImageNet photos held in RAM. Decoding a JPEG per crop costs more than the crop
itself, and keeping every decoded image in each worker's RAM does not scale. A packed set stores every image
once, decoded to RGB uint8, back to back in a few large shard files; a crop is a strided view of a memory
map, so only the crop window's bytes are read, and the OS page cache shares hot shards between all workers
and DDP ranks on a machine. The folder layout is in `PackedSet`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ssdn.data.checksum import sha256_file
from ssdn.errors import UserError

FORMAT = "ssdn-packed"
VERSION = 1
CHANNELS = 3
MANIFEST = "manifest.json"
PLAN = "prepare.json"
INDEX = "index.npy"
SHARD_DIR = "shards"


class PackedSetError(UserError, ValueError):
    """A packed set is unfinished, damaged or of an unknown version; the message says what to run."""


def shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def is_packed_dir(path: str | Path) -> bool:
    """True for a folder that ``ssdn.prepare`` wrote to (finished or not)."""
    folder = Path(path).expanduser()
    return (folder / MANIFEST).is_file() or (folder / PLAN).is_file()


class PackedSet:
    """A finished packed set: ``len(s)`` images; ``s.image(i)`` is a read-only (H, W, 3) uint8 view.

    Opening checks the manifest, the index and every shard's byte size (cheap); ``verify()`` also checks the
    shards' sha256 (reads everything). Shards are memory-mapped lazily and not pickled, so a set can be
    handed to DataLoader workers under any start method; each worker maps the files itself.

    Layout of a packed set folder::

        prepare.json             the plan (settings, listing fingerprint): written first, marks the folder
        shards/shard-00000.bin   raw uint8 pixels, images back to back (row-major H, W, 3)
        shards/shard-00000.json  the shard's images (source path, size, sha256, offset, h, w) and its own sha256
        index.npy                int64 (N, 4): shard, byte offset, height, width, in packed order
        manifest.json            written last: the whole record; a folder without it is an unfinished set
    """

    def __init__(self, root: str | Path, setting: str = "train_dir") -> None:
        self.root = Path(root).expanduser()
        self.setting = setting
        manifest_path = self.root / MANIFEST
        if not manifest_path.is_file():
            raise PackedSetError(
                f"{setting}: {self.root} is an unfinished packed set (no {MANIFEST}): its preparation was "
                f"interrupted or is still running. Re-run `python -m ssdn.prepare SRC {self.root}` with the "
                "same arguments to finish it (completed shards are kept)"
            )
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PackedSetError(
                f"{setting}: cannot read {manifest_path} ({exc}); re-run ssdn.prepare"
            ) from exc
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
            raise PackedSetError(
                f"{setting}: {manifest_path} is format {self.manifest.get('format')!r} version "
                f"{self.manifest.get('version')!r}; this ssdn reads {FORMAT!r} version {VERSION}. Re-pack "
                "the images with this version's `python -m ssdn.prepare`"
            )
        self.shards: list[dict[str, Any]] = self.manifest["shards"]
        self.images: list[dict[str, Any]] = self.manifest["images"]
        self.index = self._load_index()
        for shard in self.shards:
            path = self._shard_path(shard)
            size = path.stat().st_size if path.is_file() else None
            if size != shard["bytes"]:
                found = "missing" if size is None else f"{size} bytes"
                raise PackedSetError(
                    f"{setting}: shard {path} is {found}, the manifest says {shard['bytes']} bytes: the set "
                    "is damaged. Re-run `python -m ssdn.prepare SRC "
                    f"{self.root}` to rebuild the damaged shards"
                )
        self._maps: dict[int, np.memmap] = {}

    def _shard_path(self, shard: dict[str, Any]) -> Path:
        return self.root / SHARD_DIR / shard["file"]

    def _load_index(self) -> np.ndarray:
        path = self.root / INDEX
        if not path.is_file() or sha256_file(path) != self.manifest["index"]["sha256"]:
            raise PackedSetError(
                f"{self.setting}: {path} is missing or does not match {MANIFEST}; re-run ssdn.prepare on "
                f"{self.root}"
            )
        index = np.load(path)
        if index.shape != (len(self.images), 4):
            raise PackedSetError(f"{self.setting}: {path} has shape {index.shape}, expected ({len(self)}, 4)")
        return index

    def __len__(self) -> int:
        return len(self.images)

    @property
    def source(self) -> str:
        """The folder the images were packed from (it need not exist any more)."""
        return str(self.manifest["source"])

    @property
    def paths(self) -> list[Path]:
        """Source file of each image, in packed order: names for records and resume checks."""
        return [Path(self.source) / entry["path"] for entry in self.images]

    def size(self, i: int) -> tuple[int, int]:
        """(width, height) of image ``i``, like a file header."""
        return int(self.index[i, 3]), int(self.index[i, 2])

    def image(self, i: int) -> np.ndarray:
        """Read-only (H, W, 3) uint8 view of image ``i``: slicing it reads only the rows it touches."""
        k, offset, h, w = (int(v) for v in self.index[i])
        mm = self._maps.get(k)
        if mm is None:
            mm = np.memmap(self._shard_path(self.shards[k]), dtype=np.uint8, mode="r")
            self._maps[k] = mm
        return np.ndarray((h, w, CHANNELS), dtype=np.uint8, buffer=mm, offset=offset)

    def verify(self) -> None:
        """Check every shard's sha256 against the manifest (reads the whole set)."""
        for shard in self.shards:
            path = self._shard_path(shard)
            if sha256_file(path) != shard["sha256"]:
                raise PackedSetError(
                    f"{self.setting}: shard {path} does not match its sha256 in the manifest: the set is "
                    f"damaged. Re-run `python -m ssdn.prepare SRC {self.root}` to rebuild it"
                )

    def describe(self) -> dict[str, Any]:
        """The facts a training record needs (where, what settings, what was left out)."""
        return {
            "root": str(self.root),
            "source": self.source,
            "version": self.manifest["version"],
            "settings": self.manifest["settings"],
            "counts": self.manifest["counts"],
        }

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}  # a pickled memmap would copy the whole shard; each process maps its own
        return state
