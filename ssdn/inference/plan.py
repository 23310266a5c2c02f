"""Which files a denoising batch reads and which it writes, settled before any work so nothing is lost.

Inputs are files, folders (recursive, sorted) or glob patterns; outputs mirror them under ``--out``. An OME-Zarr
folder given as an input is one image (a stack), not a folder to walk. The plan
refuses, naming the files: an output that would replace an input, two inputs writing one output, and outputs
that exist already (unless asked to overwrite or skip them). The output tree is never read as input, so a
rerun with ``--out`` inside an input folder (and ``--skip-existing`` after a killed batch) sees only the
inputs. Inputs that cannot be images (a pipe or device, a folder named like an image, a folder without images)
are listed as rejected and the rest goes on.
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ssdn.data.io import IMAGE_EXTENSIONS, list_images
from ssdn.errors import UserError
from ssdn.inference.stacks import is_ome_zarr, stack_output_name, stack_outputs

TIFF_SUFFIXES = (".tif", ".tiff")


class PlanError(UserError, ValueError):
    """The batch cannot run safely: no inputs, clashing or existing outputs, an output folder not writable."""


@dataclass(frozen=True)
class ImageTask:
    """One input image and every file denoising it writes (the denoised image first); ``stack``: denoised plane
    by plane into a stack of the same form (``ssdn.inference.stacks``)."""

    source: Path
    outputs: tuple[Path, ...]
    stack: bool = False


@dataclass
class Plan:
    """The batch: images to denoise, images whose outputs exist (``--skip-existing``), and inputs rejected
    (path, why), which the run reports as failed."""

    tasks: list[ImageTask]
    done: list[ImageTask] = field(default_factory=list)
    rejected: list[tuple[Path, str]] = field(default_factory=list)


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and path.resolve().is_relative_to(folder)


def _below(out: Path | None, root: Path) -> Path | None:
    """``out`` when it lies strictly inside the walked ``root``, else None: an output folder that is the input
    folder itself, or above it, cannot be told apart from the inputs, and the plan's overwrite checks cover it."""
    if out is None:
        return None
    root = root.resolve()
    return out if out != root and out.is_relative_to(root) else None


NOT_REGULAR = "not a regular file (a pipe, socket or device); give image files"


def collect_images(
    inputs: Sequence[str | Path], exclude: Path | None = None
) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """(file, its path relative to the output folder, suffix as the input's) for every input — a file as its
    name, a folder's images (recursive, sorted) below it, a glob's matches (sorted) below its fixed part —
    leaving out files under ``exclude`` (the output folder); and the inputs rejected, (path, why)."""
    skip = exclude.resolve() if exclude is not None else None
    found: list[tuple[Path, Path]] = []
    rejected: list[tuple[Path, str]] = []
    for entry in map(str, inputs):
        path = Path(entry)
        if is_ome_zarr(path):
            found.append((path, Path(path.name)))
        elif path.is_dir():
            images = [p for p in list_images(path, recursive=True) if not _inside(p, _below(skip, path))]
            if not images:
                rejected.append((path, "a folder with no image files in it (its --out folder aside)"))
            found += [(p, p.relative_to(path)) for p in images]
        elif path.is_file():
            found.append((path, Path(path.name)))
        elif path.exists():
            rejected.append((path, NOT_REGULAR))
        elif glob.has_magic(entry):
            _add_matches(entry, skip, found, rejected)
        else:
            raise PlanError(f"{entry}: no such file or folder")
    return found, rejected


def _add_matches(
    pattern: str, skip: Path | None, found: list[tuple[Path, Path]], rejected: list[tuple[Path, str]]
) -> None:
    """A glob's image-named matches (sorted) into ``found``, mirrored below its fixed part; matches that are
    not files into ``rejected``."""
    fixed = Path(*_glob_root(Path(pattern).parts))
    skip = _below(skip, fixed)
    matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    matches = [p for p in matches if p.suffix.lower() in IMAGE_EXTENSIONS and not _inside(p, skip)]
    if not matches:
        raise PlanError(f"{pattern}: no image file matches this pattern")
    for match in matches:
        if match.is_file():
            found.append((match, match.relative_to(fixed)))
        elif match.is_dir():
            rejected.append((match, "a folder named like an image, not an image file"))
        else:
            rejected.append((match, NOT_REGULAR))


def _glob_root(parts: Sequence[str]) -> list[str]:
    """The leading path parts of a glob without wildcards: its matches are mirrored below them."""
    fixed: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return fixed or ["."]


def output_name(relative: Path) -> Path:
    """The denoised image's path relative to ``--out``: a TIFF stays a TIFF, everything else becomes a PNG
    (lossless at the input's depth)."""
    suffix = ".tif" if relative.suffix.lower() in TIFF_SUFFIXES else ".png"
    return relative.with_suffix(suffix)


def listing(paths: Sequence[object], limit: int = 5) -> str:
    """The first ``limit`` items, comma-separated, and how many more."""
    shown = ", ".join(map(str, paths[:limit]))
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def plan(
    inputs: Sequence[str | Path],
    out_dir: Path,
    *,
    uncertainty: bool = False,
    overwrite: bool = False,
    skip_existing: bool = False,
    is_stack: Callable[[Path], bool] | None = None,
) -> Plan:
    """The batch, or a ``PlanError`` before any work when an output would replace an input, two inputs would
    write one file, or outputs exist unasked. ``is_stack``: which inputs are stacks (written as one stack and
    its std stack, ``ssdn.inference.stacks``); by default none."""
    found, rejected = collect_images(inputs, exclude=out_dir)
    tasks: dict[Path, ImageTask] = {}
    for source, relative in found:
        if is_stack is not None and is_stack(source):
            task = ImageTask(
                source, stack_outputs(out_dir / stack_output_name(relative), uncertainty), stack=True
            )
        else:
            main = out_dir / output_name(relative)
            extra = (main.with_suffix(".std.tif"), main.with_suffix(".std.png")) if uncertainty else ()
            task = ImageTask(source, (main, *extra))
        tasks.setdefault(source.resolve(), task)  # one file given twice runs once
    if not tasks:
        why = f" ({listing([f'{p}: {why}' for p, why in rejected], 3)})" if rejected else ""
        raise PlanError(f"no images found in {listing(list(inputs))}{why}")
    writers: dict[Path, list[Path]] = {}
    for task in tasks.values():
        for target in task.outputs:
            writers.setdefault(target.resolve(), []).append(task.source)
    clashes = [f"{t} (from {listing(s)})" for t, s in writers.items() if len(s) > 1]
    if clashes:
        raise PlanError(
            f"two inputs would write the same output: {listing(clashes, 3)}; rename one or denoise them into "
            "separate --out folders"
        )
    replaced = [str(t) for t in writers if t in tasks]
    if replaced:
        raise PlanError(
            f"refusing to overwrite the input image(s) {listing(replaced)}; choose another --out folder"
        )
    existing = [task for task in tasks.values() if any(t.exists() for t in task.outputs)]
    if existing and not (overwrite or skip_existing):
        names = [t for task in existing for t in task.outputs if t.exists()]
        raise PlanError(
            f"{len(names)} output(s) exist already: {listing(names)}; pass --overwrite to replace them or "
            "--skip-existing to keep them and denoise the rest"
        )
    done = [task for task in tasks.values() if all(t.exists() for t in task.outputs)] if skip_existing else []
    return Plan([task for task in tasks.values() if task not in done], done, rejected)


def check_writable(out_dir: Path) -> None:
    """Write and remove a probe file in ``out_dir`` (or, when it does not exist yet, in the folder it would be
    created in), so a folder that cannot be written to is one usage error before any work rather than one
    failure per image. A probe, not a permission check: root passes every permission check, and a read-only
    file system fails none."""
    target = out_dir
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        if not target.is_dir():
            raise NotADirectoryError(20, "a file is in the way of the folder")
        fd, probe = tempfile.mkstemp(dir=target, prefix=".ssdn-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise PlanError(
            f"--out {out_dir}: cannot write there ({why}: {target}); choose a folder you can write to"
        ) from None
