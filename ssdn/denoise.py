"""Denoise your own images with a trained checkpoint: any size, files, folders or globs, nothing ever lost.

    python -m ssdn.denoise CHECKPOINT INPUT [INPUT ...] --out DIR [--param 25|auto] [--tile 640] [--uncertainty]
    python -m ssdn.denoise CHECKPOINT stack.ome.tif [cells.ome.zarr ...] --out DIR [--axes ZYX] [--uncertainty]

This module wires together steps that live in ``ssdn.inference``: ``plan`` refuses, before any work, a run that
would replace an input or an existing output; ``levels`` picks the noise level; ``tiling`` bounds memory;
``write`` and ``stacks`` write atomically, with the input's bit depth, channels and axes, so a killed batch
leaves no half-written file and ``--skip-existing`` resumes it. An unreadable input is reported and skipped,
not fatal. The options are in README.md ("Denoising images").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ssdn.data.intensity import Intensity
from ssdn.data.io import ImageDecodeError, bit_depth, is_palette, load_as_stored, photo_metadata
from ssdn.data.stacks import StackError, check_axes
from ssdn.errors import UserError, exit_on_user_error
from ssdn.inference.denoiser import (
    PRECISIONS,
    ChannelError,
    Refinement,
    denoise_pixels,
    model_input,
    network_bf16,
)
from ssdn.inference.levels import check_level_given, parse_param, resolve_params, use_given_level
from ssdn.inference.plan import ImageTask, check_writable, plan
from ssdn.inference.stacks import check_depth, denoise_stack, is_stack, open_input_stack, trained_axes
from ssdn.inference.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, check_tiling, fits_one_tile, tile_count
from ssdn.inference.volumes import OVERLAP_3D, OVERLAP_DEPTH, TILE_3D, TILE_DEPTH, denoise_volumes
from ssdn.inference.write import write_output, write_uncertainty
from ssdn.training.checkpoints import (
    load_denoiser,
    read_checkpoint,
    training_bit_depth,
    training_intensity,
    training_noise,
)
from ssdn.training.module import DenoiserModule
from ssdn.training.noise_check import posterior_note

PROG = "python -m ssdn.denoise"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 all written, 1 some images failed (listed), 2 a usage error.",
    )
    parser.add_argument("checkpoint", help="a .ckpt written by train.py")
    parser.add_argument(
        "inputs",
        nargs="+",
        help="noisy images (PNG, JPEG, TIFF), TIFF / OME-TIFF stacks, OME-Zarr folders, folders of images, or globs",
    )
    parser.add_argument("--out", required=True, help="output folder (its structure mirrors the inputs')")
    parser.add_argument(
        "--param",
        default=None,
        help="noise level (paper units; several as a,b in param_names order), or 'auto' to estimate it per "
        "image; needed by models trained with the level known, used instead of a learned level if given",
    )
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace outputs that exist already")
    existing.add_argument(
        "--skip-existing", action="store_true", help="keep outputs that exist already (resume a batch)"
    )
    parser.add_argument(
        "--uncertainty",
        action="store_true",
        help="also write the posterior std: NAME.std.tif (float32, image units) and NAME.std.png (false colour); "
        "for a stack NAME.std.ome.tif (float32, same axes)",
    )
    parser.add_argument(
        "--float32",
        action="store_true",
        help="stacks: write the denoised counts as float32 (same axes and metadata) instead of rounding them to "
        "the input's integer type; at low light a denoised value lies between whole counts",
    )
    parser.add_argument(
        "--tile",
        type=int,
        default=None,
        help=f"tile side, a multiple of 32 (default {DEFAULT_TILE}: about 2 GB on CPU); an image of at most "
        "tile² pixels (sides rounded up to 32) runs whole; larger is faster if memory allows. 3-D models: the "
        f"Y/X side of a tile's core, any size (default {TILE_3D})",
    )
    parser.add_argument(
        "--overlap",
        type=int,
        default=None,
        help=f"tile overlap (default {DEFAULT_OVERLAP}); 3-D models: the Y/X context read on each side of a "
        f"core (default {OVERLAP_3D})",
    )
    parser.add_argument(
        "--tile-depth",
        type=int,
        default=TILE_DEPTH,
        help=f"3-D models: the Z planes of a tile's core (default {TILE_DEPTH})",
    )
    parser.add_argument(
        "--overlap-depth",
        type=int,
        default=OVERLAP_DEPTH,
        help=f"3-D models: the Z context planes read on each side of a core (default {OVERLAP_DEPTH})",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="network precision (the posterior is always float64); auto: bf16 where the device computes it "
        "natively (GPUs, CPUs with AVX-512-BF16 or AMX), else fp32",
    )
    parser.add_argument(
        "--r3-passes",
        type=int,
        default=0,
        help="R³ refinement for camera photos (models trained with method.pd_stride > 1): re-denoise the first "
        "result this many times with a share --r3-prob of its pixels put back to the noisy ones, and average "
        "(AP-BSN uses 8; default 0: off; not with --uncertainty)",
    )
    parser.add_argument("--r3-prob", type=float, default=0.16, help="R³'s replacement probability (0.16)")
    parser.add_argument(
        "--blind-hole",
        type=int,
        default=None,
        help="the blind square's side at inference (odd; default: the model's method.blind_hole_infer, else "
        "its method.blind_hole): the hole is a shift, not a weight, so a model trained with a larger square "
        "for correlated noise can denoise with the nearest pixels (1)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of R³'s draws (the same seed, the same output)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--axes",
        default=None,
        help="axes of TIFF stacks that do not name their own, OME letters T Z C Y X ending in YX (e.g. ZYX, TYX, "
        "TZCYX); with T or Z every TIFF input is a stack. Without it, a TIFF with more than one plane and any "
        "OME-Zarr folder are stacks, other images are 2-D",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of usage errors")
    return parser


class _Batch:
    """The run over the planned images: one line per image on stdout, failures collected for the summary."""

    def __init__(
        self,
        module: DenoiserModule,
        args: argparse.Namespace,
        trained_depth: int | None,
        trained_axes: str | None = None,
        intensity: Intensity | None = None,
    ) -> None:
        self.module, self.args, self.trained_depth = module, args, trained_depth
        self.trained_axes, self.intensity = trained_axes, intensity
        self.param = parse_param(args.param)
        self.fixed = None if self.param == "auto" else resolve_params(module, self.param)
        self.bf16 = network_bf16(args.precision, args.device)
        self.r3 = Refinement(args.r3_passes, args.r3_prob, args.seed) if args.r3_passes else None
        self.failed: list[tuple[Path, str]] = []
        self.written = 0

    def run(self, tasks: Sequence[ImageTask], bar: tqdm) -> None:
        for task in tasks:
            try:
                line = self._one(task)
            except (ImageDecodeError, ChannelError, StackError, OSError) as exc:
                self.failed.append((task.source, str(exc)))
                bar.write(f"{PROG}: skipped {task.source}: {exc}", file=sys.stderr)
            else:
                self.written += 1
                bar.write(line)
            bar.update(1)

    def _one(self, task: ImageTask) -> str:
        """Denoise and write one image; returns its stdout line."""
        if task.stack:
            return self._stack(task)
        args, module = self.args, self.module
        if module.dims == 3:
            raise ChannelError(
                f"{task.source}: a 2-D image, but the model is 3-D (model.dims=3) and denoises ZYX stacks; give a "
                "stack (--axes ZYX for a TIFF that names no axes) or use a 2-D model"
            )
        if args.float32:
            raise ChannelError(
                f"{task.source}: --float32 applies to stacks (TIFF / OME-TIFF with Z or T, OME-Zarr); a 2-D image "
                "is written at its own bit depth: leave --float32 out for it"
            )
        stored, alpha = load_as_stored(task.source)
        native = model_input(stored, module.channels, task.source)
        depth = bit_depth(native)
        check_depth(task.source, depth, self.trained_depth)
        intensity = self.intensity or Intensity.of_depth(depth)
        pixels = torch.from_numpy(native).permute(2, 0, 1)
        params = (
            self.fixed
            if self.fixed is not None
            else resolve_params(module, self.param, intensity.tensor_to_unit(pixels))
        )
        h, w = native.shape[:2]
        tiles = None
        if not fits_one_tile(h, w, args.tile):
            tiles = tqdm(
                total=tile_count(h, w, args.tile, args.overlap),
                unit="tile",
                desc=task.source.name,
                leave=False,
                file=sys.stderr,
                dynamic_ncols=True,
            )
        try:
            out, std, used = denoise_pixels(
                module,
                pixels,
                params,
                intensity=intensity,
                bf16=self.bf16,
                uncertainty=args.uncertainty,
                tile=args.tile,
                overlap=args.overlap,
                progress=tiles.update if tiles is not None else None,
                r3=self.r3,
            )
        finally:
            if tiles is not None:
                tiles.close()
        del pixels
        channels = stored.shape[2]
        try:
            meta = photo_metadata(task.source)
            write_output(task.outputs[0], out, depth, alpha, channels, meta, intensity)
            note = ""
            if std is not None:
                top = write_uncertainty(task.outputs[1], task.outputs[2], std, depth, channels, intensity)
                note = f"\tstd png scale 0..{top:.4g}"
        except OSError as exc:
            raise OSError(f"cannot write {task.outputs[0]}: {exc}") from exc
        if is_palette(task.source):
            note += "\tpalette image written as RGB"
        return f"{task.outputs[0]}\tlevel {self._level(used)}{note}"

    def _level(self, used: dict[str, float]) -> str:
        level = " ".join(f"{k}={v:.6g}" for k, v in used.items()) or "none"
        return f"{level}{' (auto)' if self.param == 'auto' else ''}"

    def _stack(self, task: ImageTask) -> str:
        """Denoise and write one stack plane by plane (``ssdn.inference.stacks``); returns its stdout line."""
        args, module = self.args, self.module
        stack = open_input_stack(task.source, args.axes, self.trained_axes)
        check_depth(task.source, bit_depth(np.empty(0, stack.dtype)), self.trained_depth)
        fixed, param = self.fixed, self.param

        def params_for(pixels: torch.Tensor) -> torch.Tensor:
            return fixed if fixed is not None else resolve_params(module, param, pixels)

        volumes = module.dims == 3  # a 3-D model runs on ZYX tiles, a 2-D one plane by plane
        with tqdm(
            unit="tile" if volumes else "plane",
            desc=task.source.name,
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        ) as bar:
            common = dict(
                intensity=self.intensity,
                float32=args.float32,
                bf16=self.bf16,
                tile=args.tile,
                overlap=args.overlap,
                overwrite=args.overwrite,
                progress=bar.update,
            )
            result = (
                denoise_volumes(
                    module,
                    stack,
                    task.outputs,
                    params_for,
                    tile_depth=args.tile_depth,
                    overlap_depth=args.overlap_depth,
                    **common,
                )
                if volumes
                else denoise_stack(module, stack, task.outputs, params_for, **common)
            )
        note = f"\tstd {task.outputs[1]}" if len(task.outputs) > 1 else ""
        planes = f"{result.planes} planes {stack.axes}" + (" (3-D)" if volumes else "")
        return f"{task.outputs[0]}\tlevel {self._level(result.level)}\t{planes}{note}"


def _tiling(args: argparse.Namespace, dims: int) -> None:
    """``--tile`` and ``--overlap`` at the model's defaults where not given, then checked: 2-D tiles align on the
    U-Net's grid; 3-D tiles are cores of any size, padded per tile (``ssdn.inference.volumes``)."""
    if dims == 3:
        args.tile = TILE_3D if args.tile is None else args.tile
        args.overlap = OVERLAP_3D if args.overlap is None else args.overlap
        if min(args.tile, args.tile_depth) < 1 or min(args.overlap, args.overlap_depth) < 0:
            raise UserError(
                f"--tile={args.tile}, --tile-depth={args.tile_depth}: 3-D tile cores are at least 1 voxel; "
                f"--overlap={args.overlap}, --overlap-depth={args.overlap_depth}: context is 0 or more"
            )
        return
    args.tile = DEFAULT_TILE if args.tile is None else args.tile
    args.overlap = DEFAULT_OVERLAP if args.overlap is None else args.overlap
    try:
        check_tiling(args.tile, args.overlap)
    except ValueError as exc:
        raise UserError(f"--tile/--overlap: {exc}") from None


def _inference_hole(module: DenoiserModule, hole: int | None) -> None:
    """``--blind-hole``: checked on the model's net before any image is read, then used for every image."""
    if hole is None:
        return
    try:
        with module.blind_hole(hole):
            pass
    except ValueError as exc:
        raise UserError(f"--blind-hole {hole}: {exc}") from None
    module.infer_hole = hole


def _run(args: argparse.Namespace) -> int:
    param = parse_param(args.param)
    axes = None if args.axes is None else check_axes(args.axes, setting="--axes")
    out_dir = Path(args.out)
    batch_plan = plan(
        args.inputs,
        out_dir,
        uncertainty=args.uncertainty,
        overwrite=args.overwrite,
        skip_existing=args.skip_existing,
        is_stack=lambda path: is_stack(path, axes),
    )
    checkpoint = read_checkpoint(args.checkpoint)
    trained_depth, default_axes = training_bit_depth(checkpoint), trained_axes(checkpoint)
    intensity = training_intensity(checkpoint)
    noise = training_noise(checkpoint)
    del checkpoint  # its weights: the module loads its own copy
    module = load_denoiser(args.checkpoint, args.device)
    std_note = posterior_note(noise, module.infer_stride) if args.uncertainty else None
    _tiling(args, module.dims)
    _inference_hole(module, args.blind_hole)
    check_level_given(module, param)
    check_writable(out_dir)
    note = use_given_level(module, param)
    for line in (note, std_note):
        if line:
            print(f"{PROG}: {line}", file=sys.stderr)
    batch = _Batch(module, args, trained_depth, default_axes, intensity)
    for source, why in batch_plan.rejected:
        print(f"{PROG}: skipped {source}: {why}", file=sys.stderr)
    with tqdm(
        total=len(batch_plan.tasks), unit="img", desc="denoise", file=sys.stderr, dynamic_ncols=True
    ) as bar:
        batch.run(batch_plan.tasks, bar)
    failed = batch_plan.rejected + batch.failed
    summary = f"{PROG}: {batch.written} written, {len(batch_plan.done)} skipped (outputs exist), {len(failed)} failed"
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
