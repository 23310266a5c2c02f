"""Inspect a folder of noisy images before training on them alone: noise level, spatial correlation, advice.

    python -m ssdn.inspect FOLDER [--max-images 32] [--channels 3] [--json OUT] [--seed 0]

Why: the paper's blind spot (§2) needs noise that is independent from pixel to pixel; camera photos (demosaiced,
sharpened, JPEG) break it, and a blind-spot net trained on them hands most of the noise back. This prints what
``ssdn.noise.correlation`` measures on the images themselves — σ in 8-bit units, the correlation between the
channels' noise at a pixel, ρ(dy, dx) per offset, whether the noise is independent — and the ``train.py``
overrides that suit it (noise model and blind region).

Reads what ``data.add_noise=false`` trains on: 8/16-bit PNG and TIFF, JPEG (EXIF orientation applied), through
``ssdn.data.io.load_native``. Up to ``--max-images`` files, evenly spaced over the sorted listing, are read one at
a time; only sampled windows and a 512² centre crop of each are kept, so 24-MP photos are fine.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ssdn.data.io import ImageDecodeError, bit_depth, list_images, load_native
from ssdn.errors import UserError, exit_on_user_error
from ssdn.noise.correlation import (
    CHANNEL_RHO_THRESHOLD,
    FOI_CROP,
    WINDOW,
    NoiseCorrelation,
    Recommendation,
    estimate_correlation,
    recommend,
    signal_dependence,
)
from ssdn.utils import atomic_write_json

PROG = "python -m ssdn.inspect"
MAX_IMAGES = 32
"""Default number of images read: enough windows for ρ to ±0.01 on typical photos, a minute at most."""
LISTED = 8
"""Image names printed one per line; the rest are counted."""


class InspectError(UserError, ValueError):
    """The folder cannot be inspected as asked (missing, empty, unreadable file, existing --json)."""


def choose(paths: Sequence[Path], max_images: int) -> list[Path]:
    """At most ``max_images`` of the sorted ``paths``, evenly spaced (first and last included)."""
    if len(paths) <= max_images:
        return list(paths)
    idx = np.unique(np.round(np.linspace(0, len(paths) - 1, max_images)).astype(int))
    return [paths[i] for i in idx]


def _load(path: Path, channels: int) -> np.ndarray:
    try:
        return load_native(path, channels)
    except ImageDecodeError as exc:
        raise InspectError(f"{exc}; remove or replace the file, or move it out of the folder") from exc
    except OSError as exc:
        raise InspectError(f"{path}: cannot read ({exc}); check its permissions or remove it") from exc


def inspect_folder(
    folder: Path, max_images: int = MAX_IMAGES, channels: int = 3, seed: int = 0
) -> tuple[list[tuple[Path, tuple[int, int], int]], NoiseCorrelation, Recommendation]:
    """(images read as (path, (width, height), bit depth), the measured correlation, the advice)."""
    if not folder.is_dir():
        raise InspectError(f"{folder}: folder not found; pass the folder that holds the noisy images")
    paths = list_images(folder)
    if not paths:
        raise InspectError(
            f"{folder}: no image files (PNG, JPEG, TIFF, ...) in this folder; pass the folder that holds them"
        )
    read: list[tuple[Path, tuple[int, int], int]] = []
    crops: list[np.ndarray] = []

    def images() -> Iterator[np.ndarray]:
        for path in choose(paths, max_images):
            pixels = _load(path, channels)
            h, w = pixels.shape[:2]
            read.append((path, (w, h), bit_depth(pixels)))
            top, left = max(0, (h - FOI_CROP) // 2), max(0, (w - FOI_CROP) // 2)
            crops.append(pixels[top : top + FOI_CROP, left : left + FOI_CROP].copy())
            yield pixels

    try:
        corr = estimate_correlation(images(), seed=seed)
    except ValueError as exc:
        if isinstance(exc, UserError):
            raise
        raise InspectError(f"{folder}: {exc}; inspect larger or noisier images") from exc
    return read, corr, recommend(corr, signal_dependence(crops))


def correlation_table(corr: NoiseCorrelation) -> str:
    """ρ(dy, dx) for dy = 0..K, dx = −K..K (the other half is the mirror image), over-threshold values starred."""
    k = corr.radius
    lines = ["  dy\\dx" + "".join(f"{dx:>8d}" for dx in range(-k, k + 1))]
    for dy in range(0, k + 1):
        cells = []
        for dx in range(-k, k + 1):
            v = corr.at(dy, dx)
            star = "*" if (dy, dx) != (0, 0) and abs(v) > corr.threshold else " "
            cells.append(f"{v:>7.3f}{star}")
        lines.append(f"  {dy:>5d} " + "".join(cells))
    return "\n".join(lines)


def report(
    folder: Path,
    read: Sequence[tuple[Path, tuple[int, int], int]],
    corr: NoiseCorrelation,
    rec: Recommendation,
    channels: int,
) -> str:
    """The text ``main`` prints."""
    out = [f"read {len(read)} image(s) from {folder}:"]
    for path, (w, h), depth in read[:LISTED]:
        out.append(f"  {path.name}  {w}x{h}  {depth}-bit")
    if len(read) > LISTED:
        out.append(f"  ... and {len(read) - LISTED} more")
    names = ("R", "G", "B") if channels == 3 else ("Y",)
    per = ", ".join(f"{n} {s:.2f}" for n, s in zip(names, corr.sigma_per_channel, strict=True))
    out.append(
        f"noise level: sigma = {corr.sigma:.2f} (8-bit units; {per}) from {corr.windows} flat "
        f"{WINDOW}x{WINDOW} windows"
    )
    if channels == 3:
        rho = corr.channel_rho
        pairs = ", ".join(f"{names[i]}-{names[k]} {rho[i, k]:.2f}" for i, k in ((0, 1), (0, 2), (1, 2)))
        out.append(
            f"channel correlation of the noise at a pixel: {pairs} (mean {corr.channel_correlation:.2f}; "
            f"above {CHANNEL_RHO_THRESHOLD}: much of the noise is common to R, G, B)"
        )
    out.append(f"spatial correlation rho(dy, dx) of the noise (* : |rho| > {corr.threshold}):")
    out.append(correlation_table(corr))
    if corr.independent:
        out.append(
            "verdict: independent: no neighbour correlation above the threshold; the paper's blind spot applies"
        )
    else:
        out.append(
            f"verdict: CORRELATED over {corr.extent} px (rho(0,1) = {corr.at(0, 1):.2f}, rho(1,0) = "
            f"{corr.at(1, 0):.2f}): a 1-pixel blind spot would learn to hand the noise back"
        )
    out.append(
        f"noise model: {rec.noise} (variance a*x + b fitted: a = {rec.a:.3g}, b = {rec.b:.3g}; "
        f"{rec.noise_reason})"
    )
    out.append(
        "recommended training (noisy images alone):" if corr.independent else "recommended training, one of:"
    )
    for alt in rec.alternatives:
        out.append(f"  python train.py data=folder data.train_dir={folder} {' '.join(alt)}")
    return "\n".join(out)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Measure the noise level and spatial correlation of a folder of noisy images and recommend "
        "a noise model and blind-spot setting for training on them alone.",
    )
    p.add_argument(
        "folder", type=Path, help="folder of noisy images (PNG, TIFF, JPEG; not searched recursively)"
    )
    p.add_argument("--max-images", type=int, default=MAX_IMAGES, help="read at most this many, evenly spaced")
    p.add_argument("--channels", type=int, choices=(1, 3), default=3, help="3: RGB (default), 1: mono")
    p.add_argument("--json", type=Path, help="also write the measurements and advice to this JSON file")
    p.add_argument("--force", action="store_true", help="overwrite the --json file if it exists")
    p.add_argument("--seed", type=int, default=0, help="seed of the window sampling on large images")
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    return p


def _run(args: argparse.Namespace) -> None:
    if args.max_images < 1:
        raise InspectError(f"--max-images={args.max_images}: must be at least 1")
    if args.json is not None and args.json.exists() and not args.force:
        raise InspectError(f"--json {args.json}: file exists; choose another name or pass --force")
    read, corr, rec = inspect_folder(args.folder, args.max_images, args.channels, args.seed)
    print(report(args.folder, read, corr, rec, args.channels))
    if args.json is not None:
        atomic_write_json(
            args.json,
            {
                "folder": str(args.folder),
                "images": [
                    {"path": str(p), "width": w, "height": h, "bit_depth": d} for p, (w, h), d in read
                ],
                "correlation": corr.to_dict(),
                "recommendation": rec.to_dict(),
            },
        )


def main(argv: Sequence[str] | None = None) -> None:
    """The command line; exit status 2 on a user error (``exit_on_user_error``)."""
    args = _parser().parse_args(argv)
    with exit_on_user_error(PROG, args.debug):
        _run(args)


if __name__ == "__main__":
    main()
