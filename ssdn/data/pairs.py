"""Noisy/clean pairs for validation when training on noisy images alone: the SIDD layout and its kin.

Why: a user who trains on real noisy photos (``data.add_noise=false``) cannot get PSNR from clean images with
synthetic noise added, because that noise is not the camera's. Benchmarks of real noise ship pairs instead, and
``data.val_dir`` accepts them. Two layouts are recognised, in any folder below ``val_dir``:

- side by side in one folder, as SIDD stores each scene (``NOISY_SRGB_010.PNG`` beside ``GT_SRGB_010.PNG``): a
  file whose name has the word ``NOISY`` (any case, delimited by ``_ - .`` or the name's ends) pairs with the
  file of the same name where that word reads ``GT``, ``CLEAN`` or ``GROUNDTRUTH``;
- sibling folders ``noisy/`` and ``clean/`` (or ``gt/``) holding files of the same names (``bench/camera.py``
  writes its test crops so).

The list is sorted by the noisy file's path, so ``val_count`` takes the same pairs on every machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ssdn.data.io import IMAGE_EXTENSIONS
from ssdn.errors import UserError

__all__ = ["ImagePair", "PairsError", "find_pairs"]

_NOISY_WORD = re.compile(r"(?<![A-Za-z0-9])noisy(?![A-Za-z0-9])", re.IGNORECASE)
CLEAN_WORDS = ("GT", "CLEAN", "GROUNDTRUTH")
"""What replaces ``NOISY`` in a clean partner's name (tried in this order, in the noisy word's case style)."""
CLEAN_FOLDERS = ("clean", "gt")


class PairsError(UserError, ValueError):
    """``data.val_dir`` holds no noisy/clean pair, or a pair whose two files cannot be compared."""


@dataclass(frozen=True)
class ImagePair:
    noisy: Path
    clean: Path


def _styled(word: str, like: str) -> str:
    return word.lower() if like.islower() else word.capitalize() if like.istitle() else word


def _partner_by_name(path: Path, siblings: dict[str, Path]) -> Path | None:
    match = _NOISY_WORD.search(path.name)
    if match is None:
        return None
    for word in CLEAN_WORDS:
        name = path.name[: match.start()] + _styled(word, match.group()) + path.name[match.end() :]
        found = siblings.get(name.lower())
        if found is not None:
            return found
    return None


def _partner_by_folder(path: Path) -> Path | None:
    if path.parent.name.lower() != "noisy":
        return None
    for folder in CLEAN_FOLDERS:
        for candidate in (path.parent.parent / folder, path.parent.parent / folder.upper()):
            if (candidate / path.name).is_file():
                return candidate / path.name
    return None


def find_pairs(folder: Path, recursive: bool = True, setting: str = "data.val_dir") -> list[ImagePair]:
    """Every noisy/clean pair below ``folder`` (module doc), sorted by the noisy file's path."""
    if not folder.is_dir():
        raise PairsError(
            f"{setting}={folder}: folder not found; give the folder that holds the noisy/clean pairs"
        )
    files = sorted(
        p
        for p in (folder.rglob("*") if recursive else folder.iterdir())
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    by_folder: dict[Path, dict[str, Path]] = {}
    for p in files:
        by_folder.setdefault(p.parent, {})[p.name.lower()] = p
    pairs = []
    for p in files:
        clean = _partner_by_name(p, by_folder[p.parent]) or _partner_by_folder(p)
        if clean is not None:
            pairs.append(ImagePair(p, clean))
    if not pairs:
        raise PairsError(
            f"{setting}={folder}: no noisy/clean pairs found. With data.add_noise=false validation scores real "
            "noisy images against their clean versions: put NOISY_x.png beside GT_x.png (the SIDD layout), or "
            "noisy/ and clean/ folders with the same file names; or set data.val_dir=null to validate on "
            "held-out noisy files"
        )
    return pairs
