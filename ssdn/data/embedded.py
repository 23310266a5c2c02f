"""Colour photos that ship inside the scikit-image wheel: a training/validation set that needs no download.

Why: smoke runs, CI and first-time users get a working default without data on disk. Only files inside the
installed ``skimage/data/`` are used (scikit-image fetches the others over the network, which fails offline),
read with ``ssdn.data.io.load_image`` like every other source; all are RGB, at least 300 px on the short side.
Fixed split, never reshuffled so runs stay comparable: ``train`` astronaut, rocket, motorcycle_left,
motorcycle_right (a stereo pair, so both sit in one split), hubble_deep_field, ihc; ``val`` chelsea, coffee
(everyday objects unlike any training photo). Specs accepted wherever a folder is: ``"skimage"`` (``train``
for a training source, ``val`` for a validation one), ``"skimage:train"``, ``"skimage:val"``, ``"skimage:all"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssdn.data.io import load_image

SPEC = "skimage"
SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "astronaut.png",
        "rocket.jpg",
        "motorcycle_left.png",
        "motorcycle_right.png",
        "hubble_deep_field.jpg",
        "ihc.png",
    ),
    "val": ("chelsea.png", "coffee.png"),
}
SPLITS["all"] = tuple(sorted(SPLITS["train"] + SPLITS["val"]))


def skimage_data_dir() -> Path:
    """The installed ``skimage/data`` folder, found without importing ``skimage.data`` (which loads pooch)."""
    import skimage

    return Path(skimage.__file__).resolve().parent / "data"


def is_embedded_spec(source: object) -> bool:
    """True for ``"skimage"`` and ``"skimage:<split>"``. A real folder called skimage needs ``./skimage``."""
    return isinstance(source, str) and (source == SPEC or source.startswith(SPEC + ":"))


def parse_spec(spec: str, default_split: str) -> str:
    """Split named by ``spec`` (``default_split`` for a bare ``"skimage"``); clear error when unknown."""
    split = spec.partition(":")[2] or default_split
    if split not in SPLITS:
        raise ValueError(
            f"unknown embedded split in {spec!r}; use one of: " + ", ".join(f"skimage:{s}" for s in SPLITS)
        )
    return split


def embedded_paths(split: str = "all") -> list[Path]:
    """Paths of the photos in ``split`` (train | val | all), in the fixed order above (sorted for ``all``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    folder = skimage_data_dir()
    paths = [folder / name for name in SPLITS[split]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"scikit-image photos {missing} not found in {folder}; the embedded dataset expects "
            "scikit-image 0.26 (pip install 'scikit-image>=0.26,<0.27'), or use an image folder instead"
        )
    return paths


def embedded_photos(channels: int = 3, split: str = "all") -> list[tuple[str, np.ndarray]]:
    """``(name, uint8 (H, W, channels))`` for each photo of ``split``; name is the file stem."""
    return [(p.stem, load_image(p, channels)) for p in embedded_paths(split)]
