"""Denoise your own images with a trained checkpoint: any size, files, folders or globs, nothing ever lost.

    python -m ssdn.denoise CHECKPOINT INPUT [INPUT ...] --out DIR [--param 25|auto] [--tile 640] [--uncertainty]

Inputs are files, folders (searched recursively, sorted) or quoted glob patterns (``'raw/**/*.tif'``); PNG,
JPEG and TIFF, 8- or 16-bit, gray, RGB or with alpha. Each image is read at its own bit depth and scaled to
[0, 1] by it, as training read the noisy photos (a warning when its depth differs from the training data's),
denoised whole or in tiles (``ssdn.inference.tiling``: memory bounded by the tile, not the image; an image whose padded
H×W, each side rounded up to 32, has at most tile² pixels runs whole, never padded to a square; larger ones in
tiles, rectangular for strips) and written under DIR at the input's bit depth, mirroring
the folders below each input folder or glob: a PNG (a TIFF for TIFF input), alpha passed through untouched. The
output is the reported one: the posterior mean for the paper's method. ``--uncertainty`` adds the per-pixel
posterior standard deviation beside it: ``<name>.std.tif`` (float32, in the image's units) and ``<name>.std.png``
(false colour, scale printed).

Before any work the plan is checked: an output that would replace an input, two inputs that would write one
output, and outputs that already exist (unless ``--overwrite`` or ``--skip-existing``) are refused, naming the
files. Outputs are written atomically, so a killed batch leaves no half-written file and ``--skip-existing``
resumes it. A file that cannot be read is reported and skipped; a summary ends the run, with exit status 1 when
any image failed and 2 for a usage error (one line; ``--debug`` shows the traceback).

The noise level: models trained with a known level need ``--param`` in the paper's units (σ in 8-bit units, λ,
α, or ``a,b`` in ``param_names`` order), checked against the noise model's domain; ``--param auto`` estimates it
per image with the noise model's classical estimator (Chen et al. for Gaussian σ) and prints it. Models that
learned the level (``sigma_global`` / ``sigma_per_image``) use what they learned. One line per image on stdout
names the output and the level used; progress (images, and tiles of large ones) goes to stderr.
"""

from __future__ import annotations

import argparse
import glob
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import png
import tifffile
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ssdn.data.io import IMAGE_EXTENSIONS, ImageDecodeError, bit_depth, list_images, load_native_with_alpha
from ssdn.errors import UserError, exit_on_user_error
from ssdn.inference.tiling import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    check_tiling,
    denoise_tiled,
    fits_one_tile,
    tile_count,
)
from ssdn.training.checkpoints import load_denoiser, read_checkpoint
from ssdn.training.module import DenoiserModule
from ssdn.utils import atomic_path

PROG = "python -m ssdn.denoise"
TIFF_SUFFIXES = (".tif", ".tiff")
AUTO_CROP = 1024
"""``--param auto`` estimates on the central AUTO_CROP² of an image: enough patches, bounded time."""


class DenoiseInputError(UserError, ValueError):
    """What was asked of ``ssdn.denoise`` cannot be done safely: missing inputs, clashing or existing outputs."""


def training_bit_depth(checkpoint: str | Path) -> int | None:
    """The bit depth training scaled its pixels by (``ssdn_pixel_scale`` of the checkpoint), if recorded."""
    saved = read_checkpoint(checkpoint)
    scale = saved.get("ssdn_pixel_scale")
    return int(scale["bit_depth"]) if scale else None


# ----------------------------------------------------------------------------------------------- the level


def parse_param(text: str | None) -> list[float] | str | None:
    """``--param``: None, ``"auto"``, or the comma-separated numbers (validated later against the model)."""
    if text is None or text == "auto":
        return text
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise DenoiseInputError(
            f"--param {text!r}: give numbers in the paper's units (several as a,b) or 'auto'"
        ) from None


def resolve_params(
    module: DenoiserModule, param: Sequence[float] | str | None, pixels: Tensor | None = None
) -> Tensor:
    """One image's params (1,) or (1, P) float64 in paper units: ``param`` checked against the noise model's
    domain, ``"auto"`` estimated from ``pixels`` (C, H, W) in [0, 1], or the configured value when None."""
    noise = module.noise
    if param is None:
        return noise.sample_params(1, torch.Generator().manual_seed(0))
    if param == "auto":
        if pixels is None:
            raise ValueError("--param auto needs the image to estimate its level from")
        h, w = pixels.shape[1:]
        top, left = max((h - AUTO_CROP) // 2, 0), max((w - AUTO_CROP) // 2, 0)
        try:
            estimate = noise.estimate_params([pixels[:, top : top + AUTO_CROP, left : left + AUTO_CROP]])
        except ValueError as exc:
            raise DenoiseInputError(f"--param auto: {exc}; pass the level with --param") from None
        values = estimate.reshape(-1).tolist()
    else:
        values = [float(v) for v in param]
    noise.check_params(values)
    return torch.tensor([values[0]] if len(values) == 1 else [values], dtype=torch.float64)


def check_level_given(module: DenoiserModule, param: Sequence[float] | str | None) -> None:
    """A model trained with the level known cannot guess it: ``--param`` (a value or ``auto``) is required."""
    method = module.method
    if method.level_source is not None and not method.learned_level and param is None:
        names = ",".join(module.noise.param_names)
        raise DenoiseInputError(
            f"this model was trained with a known noise level; pass --param (its {names} in the paper's units) "
            "or --param auto to estimate it per image"
        )


# ----------------------------------------------------------------------------------------------- denoising


def _tile_fn(
    module: DenoiserModule,
    params: Tensor,
    scale: float,
    bf16: bool | None,
    uncertainty: bool,
    levels: list[Tensor],
) -> Callable[[Tensor], dict[str, Tensor]]:
    """What ``denoise_tiled`` runs on each tile: the reported output and the posterior std if asked; the level
    each tile used (paper units) is appended to ``levels``, so a per-image estimator's is averaged over tiles.

    Tiles go in as channels_last whatever the training's memory format: at image sizes the fp32 CPU convs
    (oneDNN) run ~1.6× faster on it (bench/README.md), and the posterior reads pixels channel-last anyway."""

    def fn(tile: Tensor) -> dict[str, Tensor]:
        noisy = tile.float() / scale if scale != 1.0 else tile.float()
        noisy = noisy.contiguous(memory_format=torch.channels_last)
        outs = module.denoise(noisy, params, bf16=bf16, uncertainty=uncertainty)
        result = {"out": next(iter(outs.values()))}
        if uncertainty:
            result["std"] = outs["posterior_std"]
        if module.method.level_source is not None:
            with torch.no_grad():
                level = module.method.level(noisy.to(module.device), params.to(module.device), module.noise)
            assert level is not None, "a method with a level source always gives a level"
            levels.append(module.noise.to_params(level).reshape(-1).cpu())
        return result

    return fn


def denoise_pixels(
    module: DenoiserModule,
    pixels: Tensor,
    params: Tensor,
    *,
    scale: float = 1.0,
    bf16: bool | None = None,
    uncertainty: bool = False,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    progress: Callable[[int], object] | None = None,
) -> tuple[Tensor, Tensor | None, dict[str, float]]:
    """Denoise one (C, H, W) image (float in [0, 1], or integers with ``scale`` their maximum: each tile is
    scaled on its own, so the image is never held as float); returns the reported output (C, H, W) float32, the
    posterior std (C, H, W) or None, and the level used (paper units, the mean over tiles; empty for methods
    without one)."""
    levels: list[Tensor] = []
    outs = denoise_tiled(
        _tile_fn(module, params, scale, bf16, uncertainty, levels), pixels, tile, overlap, progress=progress
    )
    used: dict[str, float] = {}
    if levels:
        means = torch.stack(levels).double().mean(0).tolist()
        used = dict(zip(module.noise.param_names, means, strict=True))
    return outs["out"], outs.get("std"), used


# ----------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Job:
    """One input image and every file it will write (the denoised image first)."""

    source: Path
    outputs: tuple[Path, ...]


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def collect_images(inputs: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """(file, its path relative to the output folder, suffix as the input's) for every input: a file as its
    name, a folder's images (recursive, sorted) below it, a glob's matches (sorted) below its fixed part."""
    found: list[tuple[Path, Path]] = []
    for entry in map(str, inputs):
        path = Path(entry)
        if path.is_dir():
            found += [(p, p.relative_to(path)) for p in list_images(path, recursive=True)]
        elif path.is_file():
            found.append((path, Path(path.name)))
        elif glob.has_magic(entry):
            matches = sorted(Path(p) for p in glob.glob(entry, recursive=True) if _is_image(Path(p)))
            if not matches:
                raise DenoiseInputError(f"{entry}: no image file matches this pattern")
            fixed = Path(*_glob_root(Path(entry).parts))
            found += [(p, p.relative_to(fixed)) for p in matches]
        else:
            raise DenoiseInputError(f"{entry}: no such file or folder")
    return found


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


def _listing(paths: Sequence[object], limit: int = 5) -> str:
    shown = ", ".join(map(str, paths[:limit]))
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def plan(
    inputs: Sequence[str | Path],
    out_dir: Path,
    *,
    uncertainty: bool = False,
    overwrite: bool = False,
    skip_existing: bool = False,
) -> tuple[list[Job], list[Job]]:
    """(jobs to run, jobs skipped because their outputs exist) — or a ``DenoiseInputError`` before any work
    when an output would replace an input, two inputs would write one file, or outputs exist unasked."""
    jobs: dict[Path, Job] = {}
    for source, relative in collect_images(inputs):
        main = out_dir / output_name(relative)
        extra = (main.with_suffix(".std.tif"), main.with_suffix(".std.png")) if uncertainty else ()
        jobs.setdefault(source.resolve(), Job(source, (main, *extra)))  # one file given twice runs once
    if not jobs:
        raise DenoiseInputError(f"no images found in {_listing(list(inputs))}")
    writers: dict[Path, list[Path]] = {}
    for job in jobs.values():
        for target in job.outputs:
            writers.setdefault(target.resolve(), []).append(job.source)
    clashes = [f"{t} (from {_listing(s)})" for t, s in writers.items() if len(s) > 1]
    if clashes:
        raise DenoiseInputError(
            f"two inputs would write the same output: {_listing(clashes, 3)}; rename one or denoise them into "
            "separate --out folders"
        )
    replaced = [str(t) for t in writers if t in jobs]
    if replaced:
        raise DenoiseInputError(
            f"refusing to overwrite the input image(s) {_listing(replaced)}; choose another --out folder"
        )
    existing = [job for job in jobs.values() if any(t.exists() for t in job.outputs)]
    if existing and not (overwrite or skip_existing):
        names = [t for job in existing for t in job.outputs if t.exists()]
        raise DenoiseInputError(
            f"{len(names)} output(s) exist already: {_listing(names)}; pass --overwrite to replace them or "
            "--skip-existing to keep them and denoise the rest"
        )
    if skip_existing:
        done = [job for job in jobs.values() if all(t.exists() for t in job.outputs)]
        return [job for job in jobs.values() if job not in done], done
    return list(jobs.values()), []


# ----------------------------------------------------------------------------------------------- writing


def _quantize(image: Tensor, depth: int) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W, C) integers at ``depth`` bits, floor(x·peak + 0.5) clipped (at 8 bits
    exactly ssdn.eval.metrics.quantize), a band of rows at a time so a large image needs no float64 copy."""
    peak = 2**depth - 1
    c, h, w = image.shape
    out = np.empty((h, w, c), np.uint16 if depth == 16 else np.uint8)
    for top in range(0, h, 256):
        band = image[:, top : top + 256].permute(1, 2, 0).double().numpy()
        out[top : top + 256] = np.clip(np.floor(band * peak + 0.5), 0, peak)
    return out


def _write_pixels(path: Path, pixels: np.ndarray, has_alpha: bool) -> None:
    """(H, W, K) integers atomically: TIFF for .tif, PNG (8 or 16 bits, via pypng) otherwise."""
    with atomic_path(path) as tmp:
        h, w, k = pixels.shape
        if path.suffix == ".tif":
            photometric = "rgb" if k >= 3 else "minisblack"
            tifffile.imwrite(
                tmp,
                pixels[:, :, 0] if k == 1 else pixels,
                photometric=photometric,
                extrasamples=["unassalpha"] if has_alpha else None,
            )
        else:
            depth = 16 if pixels.dtype == np.uint16 else 8
            writer = png.Writer(w, h, greyscale=k - has_alpha == 1, alpha=has_alpha, bitdepth=depth)
            with Path(tmp).open("wb") as f:
                writer.write(f, pixels.reshape(h, w * k))


def write_output(path: Path, image: Tensor, depth: int, alpha: np.ndarray | None = None) -> Path:
    """Write (C,H,W) in [0, 1] atomically at ``depth`` bits (a PNG, or a TIFF when ``path`` says .tif), with
    ``alpha`` (H, W, 1) at the same depth appended unchanged."""
    pixels = _quantize(image, depth)
    if alpha is not None:
        pixels = np.concatenate([pixels, alpha.astype(pixels.dtype)], axis=2)
    _write_pixels(path, pixels, alpha is not None)
    return path


def write_uncertainty(tif_path: Path, png_path: Path, std: Tensor, depth: int) -> float:
    """The posterior std (C, H, W, [0, 1] units): float32 TIFF in the image's units (×(2^depth − 1)) and an
    8-bit false-colour PNG of its channel mean, black to yellow up to the 99.5th percentile, which is returned
    (image units) so the colours can be read."""
    from matplotlib import colormaps  # only --uncertainty needs it; keeps the CLI's start-up light

    units = std.float().permute(1, 2, 0).numpy() * np.float32(2**depth - 1)
    with atomic_path(tif_path) as tmp:
        tifffile.imwrite(tmp, units[:, :, 0] if units.shape[2] == 1 else units, photometric="minisblack")
    mean = units.mean(axis=2)
    top = float(np.percentile(mean, 99.5)) or 1.0
    colours = colormaps["inferno"](np.clip(mean / top, 0, 1), bytes=True)[:, :, :3]
    _write_pixels(png_path, np.ascontiguousarray(colours), False)
    return top


# ----------------------------------------------------------------------------------------------- the CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 all written, 1 some images failed (listed), 2 a usage error.",
    )
    parser.add_argument("checkpoint", help="a .ckpt written by train.py")
    parser.add_argument("inputs", nargs="+", help="noisy images (PNG, JPEG, TIFF), folders of them, or globs")
    parser.add_argument("--out", required=True, help="output folder (its structure mirrors the inputs')")
    parser.add_argument(
        "--param",
        default=None,
        help="noise level for models trained with it known (paper units; several as a,b in param_names "
        "order), or 'auto' to estimate it per image",
    )
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace outputs that exist already")
    existing.add_argument(
        "--skip-existing", action="store_true", help="keep outputs that exist already (resume a batch)"
    )
    parser.add_argument(
        "--uncertainty",
        action="store_true",
        help="also write the posterior std: NAME.std.tif (float32, image units) and NAME.std.png (false colour)",
    )
    parser.add_argument(
        "--tile",
        type=int,
        default=DEFAULT_TILE,
        help=f"tile side, a multiple of 32 (default {DEFAULT_TILE}: about 2 GB on CPU); an image of at most "
        "tile² pixels (sides rounded up to 32) runs whole; larger is faster if memory allows",
    )
    parser.add_argument(
        "--overlap", type=int, default=DEFAULT_OVERLAP, help=f"tile overlap (default {DEFAULT_OVERLAP})"
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="network precision (the posterior is always float64); auto: the module's default",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of usage errors")
    return parser


def _load(checkpoint: str, device: str) -> DenoiserModule:
    if not Path(checkpoint).is_file():
        raise DenoiseInputError(f"checkpoint not found: {checkpoint}")
    return load_denoiser(checkpoint, device)


def _run(args: argparse.Namespace) -> int:
    try:
        check_tiling(args.tile, args.overlap)
    except ValueError as exc:
        raise DenoiseInputError(f"--tile/--overlap: {exc}") from None
    param = parse_param(args.param)
    out_dir = Path(args.out)
    jobs, skipped = plan(
        args.inputs,
        out_dir,
        uncertainty=args.uncertainty,
        overwrite=args.overwrite,
        skip_existing=args.skip_existing,
    )
    module = _load(args.checkpoint, args.device)
    check_level_given(module, param)
    fixed = None if param == "auto" else resolve_params(module, param)
    trained_depth = training_bit_depth(args.checkpoint)
    bf16 = {"auto": None, "fp32": False, "bf16": True}[args.precision]
    failed: list[tuple[Path, str]] = []
    written = 0
    with tqdm(total=len(jobs), unit="img", desc="denoise", file=sys.stderr, dynamic_ncols=True) as bar:
        for job in jobs:
            try:
                native, alpha = load_native_with_alpha(job.source, channels=module.channels)
            except (ImageDecodeError, OSError) as exc:
                failed.append((job.source, str(exc)))
                bar.write(f"{PROG}: skipped {job.source}: {exc}", file=sys.stderr)
                bar.update(1)
                continue
            depth = bit_depth(native)
            if trained_depth is not None and depth != trained_depth:
                warnings.warn(
                    f"{job.source} is {depth}-bit but the model was trained on {trained_depth}-bit images; it "
                    "is scaled by its own depth, which may not match the noise level the model learned",
                    stacklevel=1,
                )
            scale = float(2**depth - 1)
            pixels = torch.from_numpy(native).permute(2, 0, 1)
            params = fixed if fixed is not None else resolve_params(module, param, pixels.float() / scale)
            h, w = native.shape[:2]
            tiles = None
            if not fits_one_tile(h, w, args.tile):
                tiles = tqdm(
                    total=tile_count(h, w, args.tile, args.overlap),
                    unit="tile",
                    desc=job.source.name,
                    leave=False,
                    file=sys.stderr,
                    dynamic_ncols=True,
                )
            try:
                out, std, used = denoise_pixels(
                    module,
                    pixels,
                    params,
                    scale=scale,
                    bf16=bf16,
                    uncertainty=args.uncertainty,
                    tile=args.tile,
                    overlap=args.overlap,
                    progress=tiles.update if tiles is not None else None,
                )
            finally:
                if tiles is not None:
                    tiles.close()
            del pixels
            try:
                write_output(job.outputs[0], out, depth, alpha)
                note = ""
                if std is not None:
                    top = write_uncertainty(job.outputs[1], job.outputs[2], std, depth)
                    note = f"\tstd png scale 0..{top:.4g}"
            except OSError as exc:
                failed.append((job.source, f"cannot write {job.outputs[0]}: {exc}"))
                bar.write(f"{PROG}: failed {job.source}: cannot write: {exc}", file=sys.stderr)
                bar.update(1)
                continue
            written += 1
            level = " ".join(f"{k}={v:.6g}" for k, v in used.items()) or "none"
            bar.write(f"{job.outputs[0]}\tlevel {level}{' (auto)' if param == 'auto' else ''}{note}")
            bar.update(1)
    summary = f"{PROG}: {written} written, {len(skipped)} skipped (outputs exist), {len(failed)} failed"
    print(summary, file=sys.stderr)
    for source, why in failed:
        print(f"  failed: {source}: {why}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> None:
    """The command line; exits 1 when some images failed, 2 on a usage error (``exit_on_user_error``)."""
    args = _parser().parse_args(argv)
    with exit_on_user_error(PROG, args.debug):
        status = _run(args)
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    main()
