"""Where training and validation images come from: image folders, scikit-image's photos, packed sets.

A source is a folder, a list of folders, an embedded ``skimage`` spec (``ssdn.data.embedded``) or a packed set
written by ``python -m ssdn.prepare`` (``ssdn.data.packed``). Errors name the setting (``train_dir``,
``val_dir``) and say what to change, because they are raised before training starts. Image sizes come from the
file headers, so filtering a large folder decodes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ssdn.data.embedded import embedded_paths, is_embedded_spec, parse_spec
from ssdn.data.io import IMAGE_EXTENSIONS, ImageDecodeError, list_images
from ssdn.data.packed import PackedSet, is_packed_dir
from ssdn.errors import UserError

Source = str | Path | Sequence[str | Path]


class DataSourceError(UserError, ValueError):
    """A training or validation source that cannot be used as given (empty, packed where not allowed)."""


class DataSourceNotFoundError(UserError, FileNotFoundError):
    """A training or validation folder that does not exist."""


def resolve_sources(
    source: Source, *, recursive: bool = False, default_split: str = "train", setting: str = "train_dir"
) -> list[Path]:
    """Image files of a folder, a list of folders or an embedded ``skimage`` spec, each folder sorted.

    Raises before training, naming ``setting``, when a folder is missing or holds no image.
    """
    entries = [source] if isinstance(source, str | Path) else list(source)
    if not entries:
        raise DataSourceError(f"{setting} is an empty list; give a folder, a list of folders or 'skimage'")
    files: list[Path] = []
    for entry in entries:
        if is_embedded_spec(entry):
            files += embedded_paths(parse_spec(str(entry), default_split))
            continue
        folder = Path(entry).expanduser()
        if not folder.is_dir():
            raise DataSourceNotFoundError(
                f"{setting}: image folder {folder} does not exist or is not a folder; set {setting} to a "
                "folder of images (or a list of folders), or to 'skimage' for the photos in scikit-image"
            )
        found = list_images(folder, recursive=recursive)
        if not found and is_packed_dir(folder):
            raise DataSourceError(
                f"{setting}: {folder} is a packed training set (written by ssdn.prepare); only train_dir reads "
                f"packed sets, and only as its single entry. Set {setting} to a folder of image files"
            )
        if not found:
            hint = "" if recursive else " (images in subfolders need recursive=true)"
            raise DataSourceError(
                f"{setting}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in folder {folder}{hint}"
            )
        files += found
    return files


def open_packed(source: Source, setting: str = "train_dir") -> PackedSet | None:
    """The packed set that ``source`` names, or None for image folders and embedded specs.

    Raises (naming ``setting``) for an unfinished or damaged set, or a packed set listed beside other sources.
    """
    entries = [source] if isinstance(source, str | Path) else list(source)
    packed = [e for e in entries if not is_embedded_spec(e) and is_packed_dir(e)]
    if not packed:
        return None
    if len(entries) > 1:
        raise DataSourceError(
            f"{setting}: {packed[0]} is a packed set and must be the only {setting} entry; pack all the "
            "folders into one set with ssdn.prepare (or list only image folders)"
        )
    return PackedSet(packed[0], setting)


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"{path}: cannot read image header ({type(exc).__name__}: {exc})") from exc
