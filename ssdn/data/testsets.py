"""The paper's evaluation sets (KODAK, BSD300, SET14) and the 12-image SET14 of later papers.

The file lists, sha256 sums, sizes and public sources live in ``testsets.json``. A set is its *registered*
file list in sorted order, never a glob of the folder: the order decides which noise draw each image gets,
so an extra or missing file must not silently shift the protocol.

Where sets are looked for: the ``root`` argument, else ``$SSDN_DATA_ROOT``, else ``./data``; each set in
its own folder (``kodak/``, ``bsd300/``, ``set14/``), the layout of ``../shared/data`` and of ``python -m
ssdn.data.download``.

``set14_12`` is SET14 without ``bridge.png`` (mode L) and ``man.png`` (grayscale stored as RGB):
Neighbor2Neighbor and Blind2Unblind evaluate on these 12 colour images (their loader does not tile
grayscale), so their SET14 numbers are comparable only with this variant.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from ssdn.data.checksum import sha256_file
from ssdn.data.io import load_image
from ssdn.errors import UserError

DATA_ROOT_ENV = "SSDN_DATA_ROOT"


class TestSetNotFoundError(UserError, FileNotFoundError):
    """A registered set (or some of its files) is not where it was looked for."""

    __test__ = False


class TestSetIntegrityError(UserError, ValueError):
    """A set file is present but differs from the registry (checksum or pixel size)."""

    __test__ = False


@dataclass(frozen=True)
class FileEntry:
    name: str
    sha256: str
    bytes: int
    width: int
    height: int
    mode: str


@dataclass(frozen=True)
class TestSetSpec:
    """One registered set: ``folder`` under the data root, its sorted ``files`` and where to download them."""

    __test__ = False

    name: str
    folder: str
    description: str
    repeats: int
    files: tuple[FileEntry, ...]
    sources: tuple[str, ...]  # URL templates with a ``{name}`` field, tried in order


@dataclass(frozen=True)
class TestImage:
    """A clean test image: ``pixels`` is ``uint8 (H, W, C)``; ``sha256`` of its file when it was verified."""

    __test__ = False

    name: str
    pixels: np.ndarray
    sha256: str | None = None


@cache
def _registry() -> dict[str, TestSetSpec]:
    raw = json.loads(resources.files("ssdn.data").joinpath("testsets.json").read_text(encoding="utf-8"))
    raw.pop("_comment", None)
    specs: dict[str, TestSetSpec] = {}
    for name, entry in raw.items():
        if "subset_of" not in entry:
            specs[name] = TestSetSpec(
                name=name,
                folder=entry["folder"],
                description=entry["description"],
                repeats=int(entry["repeats"]),
                files=tuple(FileEntry(**f) for f in entry["files"]),
                sources=tuple(s["url"] for s in entry["sources"]),
            )
    for name, entry in raw.items():
        if "subset_of" in entry:
            parent = specs[entry["subset_of"]]
            excluded = set(entry["exclude"])
            specs[name] = TestSetSpec(
                name=name,
                folder=parent.folder,
                description=entry["description"],
                repeats=int(entry["repeats"]),
                files=tuple(f for f in parent.files if f.name not in excluded),
                sources=parent.sources,
            )
    return specs


def testset_names() -> list[str]:
    """Registered set names, e.g. ``["kodak", "bsd300", "set14", "set14_12"]``."""
    return list(_registry())


def get_testset(name: str) -> TestSetSpec:
    """The registry entry for ``name`` (case-insensitive; ``-`` and ``_`` are interchangeable)."""
    key = name.lower().replace("-", "_")
    specs = _registry()
    if key not in specs:
        raise KeyError(f"unknown test set {name!r}; known sets: {', '.join(specs)}")
    return specs[key]


def resolve_root(root: str | Path | None = None) -> Path:
    """The data root: ``root``, else ``$SSDN_DATA_ROOT``, else ``./data``."""
    if root is not None:
        return Path(root)
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env) if env else Path("data")


def download_command(name: str, root: Path) -> str:
    return f"python -m ssdn.data.download {name} --root {root}"


@cache
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:  # noqa: ARG001 -- size and mtime are the cache key
    return sha256_file(path)


def file_sha256(path: Path) -> str:
    """A file's sha256, hashed once per process: cached by path, size and mtime, so an edit is hashed again."""
    st = path.stat()
    return _sha256_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)


def testset_paths(
    name: str, root: str | Path | None = None, verify: bool = False, allow_modified: bool = False
) -> list[Path]:
    """Paths of the set's files in registry (sorted) order; with ``verify`` every file's sha256 is checked, and a
    modified file is refused (scores on other pixels are not the paper's set), or only warned about with
    ``allow_modified``."""
    spec = get_testset(name)
    base = resolve_root(root)
    folder = base / spec.folder
    paths = [folder / f.name for f in spec.files]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        what = (
            "folder not found"
            if not folder.is_dir()
            else f"{len(missing)} file(s) missing: {', '.join(missing)}"
        )
        raise TestSetNotFoundError(
            f"test set {spec.name!r}: {what} in {folder} (data root from "
            f"{'the root argument' if root is not None else '$' + DATA_ROOT_ENV + ' or ./data'}). "
            f"Fetch it with: {download_command(spec.name, base)}"
        )
    if verify:
        for path, entry in zip(paths, spec.files, strict=True):
            digest = file_sha256(path)
            if digest == entry.sha256:
                continue
            problem = f"test set {spec.name!r}: {path} has sha256 {digest}, expected {entry.sha256}"
            if allow_modified:
                warnings.warn(f"{problem}; scored anyway (allow_modified)", stacklevel=2)
                continue
            raise TestSetIntegrityError(
                f"{problem}. Delete it and re-fetch with: {download_command(spec.name, base)} (or score the "
                "modified file knowingly: --allow-modified for ssdn.evaluate, eval.allow_modified=true in training)"
            )
    return paths


def load_testset(
    name: str,
    root: str | Path | None = None,
    channels: int = 3,
    verify: bool = True,
    limit: int | None = None,
    allow_modified: bool = False,
) -> list[TestImage]:
    """Decode a registered set (its first ``limit`` images if given); checksums (``verify``, see
    :func:`testset_paths`) and sizes are checked with the registry."""
    spec = get_testset(name)
    paths = testset_paths(name, root, verify=verify, allow_modified=allow_modified)
    images = []
    for path, entry in list(zip(paths, spec.files, strict=True))[:limit]:
        pixels = load_image(path, channels=channels)
        if pixels.shape[:2] != (entry.height, entry.width):
            raise TestSetIntegrityError(
                f"test set {spec.name!r}: {path} decodes to {pixels.shape[1]}x{pixels.shape[0]}, "
                f"expected {entry.width}x{entry.height}"
            )
        images.append(TestImage(name=entry.name, pixels=pixels, sha256=file_sha256(path) if verify else None))
    return images


# Keep pytest from collecting these as tests when a test module imports them (their names start with "test").
testset_names.__test__ = False  # type: ignore[attr-defined]
testset_paths.__test__ = False  # type: ignore[attr-defined]
