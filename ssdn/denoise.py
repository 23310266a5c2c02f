"""Denoise your own images with a trained checkpoint.

    python -m ssdn.denoise CHECKPOINT IMAGE_OR_FOLDER [...] --out DIR [--param 25] [--device cuda]

Folders are read non-recursively, their images sorted. Each image is read at its own bit depth and scaled to
[0, 1] by it, as training read the noisy photos (a warning when its depth differs from the training data's),
mirror-padded to the square multiple of 32 the network needs, denoised, cropped back and written as
``DIR/<name>.png`` (8-bit PNG for 8-bit input, 16-bit PNG for 16-bit input, 16-bit TIFF for TIFF input): the
reported output, the posterior mean for the paper's method. Models trained with a known noise level need it
(``--param``, in the paper's units: σ in 8-bit units, λ, α, or ``a,b`` in ``param_names`` order); models that
learned the level (``sigma_global`` / ``sigma_per_image``) use what they learned. One line per image says
which level was used.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import png
import tifffile
import torch
from torch import Tensor

from ssdn.checkpoints import load_denoiser, read_checkpoint
from ssdn.data.io import bit_depth, list_images, load_native, to_unit
from ssdn.module import DenoiserModule
from ssdn.nets import crop, pad_to_square
from ssdn.utils import atomic_path


def training_bit_depth(checkpoint: str | Path) -> int | None:
    """The bit depth training scaled its pixels by (``ssdn_pixel_scale`` of the checkpoint), if recorded."""
    saved = read_checkpoint(checkpoint)
    scale = saved.get("ssdn_pixel_scale")
    return int(scale["bit_depth"]) if scale else None


def _params(module: DenoiserModule, param: Sequence[float] | float | None) -> Tensor:
    """One image's params (1,) or (1, P) float64 from ``param`` (paper units), or the configured value."""
    if param is None:
        return module.noise.sample_params(1, torch.Generator().manual_seed(0))
    values = [float(param)] if isinstance(param, int | float) else [float(v) for v in param]
    names = module.noise.param_names
    if len(values) != len(names):
        raise ValueError(f"--param needs {len(names)} value(s), {','.join(names)}; got {len(values)}")
    return torch.tensor([values[0]] if len(values) == 1 else [values], dtype=torch.float64)


def denoise_with_level(
    module: DenoiserModule, pixels: Tensor, param: Sequence[float] | float | None, bf16: bool | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Denoise one (C,H,W) float image in [0, 1]; returns the reported output (C,H,W) and the level used
    (paper units, ``{param name: value}``; empty for methods that use no level)."""
    source = module.method.level_source
    if source is not None and not module.method.learned_level and param is None:
        raise ValueError(
            f"this model was trained with a known noise level; pass --param (its {module.noise.param_name} in "
            "the paper's units)"
        )
    padded, (h, w) = pad_to_square(pixels[None])
    params = _params(module, param)
    outs = module.denoise(padded, params, bf16=bf16)
    used: dict[str, float] = {}
    if source is not None:
        with torch.no_grad():
            level = module.method.level(padded.to(module.device), params.to(module.device), module.noise)
        assert level is not None, "a method with a level source always gives a level"
        values = module.noise.to_params(level[0]).reshape(-1).tolist()
        used = dict(zip(module.noise.param_names, values, strict=True))
    return crop(next(iter(outs.values())).float().cpu(), h, w)[0], used


def denoise_image(
    module: DenoiserModule, pixels: Tensor, param: Sequence[float] | float | None, bf16: bool | None = None
) -> Tensor:
    """Denoise one (C,H,W) float image in [0, 1]; returns the reported output, cropped back to (C,H,W)."""
    return denoise_with_level(module, pixels, param, bf16)[0]


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted, not recursive)."""
    files: list[Path] = []
    for entry in map(Path, inputs):
        files += list_images(entry) if entry.is_dir() else [entry]
    return files


def write_output(path: Path, image: Tensor, depth: int) -> Path:
    """Write (C,H,W) in [0, 1] atomically at ``depth`` bits: a PNG, or a TIFF when ``path`` says .tif."""
    peak = 2**depth - 1
    dtype = np.uint16 if depth == 16 else np.uint8
    # floor(x·peak + 0.5), clipped: at 8 bits exactly ssdn.eval.metrics.quantize
    pixels = np.clip(np.floor(image.permute(1, 2, 0).double().numpy() * peak + 0.5), 0, peak).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if path.suffix == ".tif":
            tifffile.imwrite(tmp, pixels[:, :, 0] if pixels.shape[2] == 1 else pixels, photometric=None)
        else:
            h, w, c = pixels.shape
            writer = png.Writer(w, h, greyscale=c == 1, bitdepth=depth)
            with Path(tmp).open("wb") as f:
                writer.write(f, pixels.reshape(h, w * c))
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ssdn.denoise", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a .ckpt written by train.py")
    parser.add_argument("images", nargs="+", help="noisy images (PNG, TIFF, JPEG, ...) or folders of them")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--param",
        default=None,
        help="noise level for models trained with it known (paper units; several as a,b in param_names order)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    module = load_denoiser(args.checkpoint, args.device)
    param = [float(v) for v in args.param.split(",")] if args.param is not None else None
    trained_depth = training_bit_depth(args.checkpoint)
    out_dir = Path(args.out)
    for path in collect_images(args.images):
        native = load_native(path, channels=module.channels)
        depth = bit_depth(native)
        if trained_depth is not None and depth != trained_depth:
            warnings.warn(
                f"{path} is {depth}-bit but the model was trained on {trained_depth}-bit images; it is scaled "
                f"by its own depth, which may not match the noise level the model learned",
                stacklevel=1,
            )
        pixels = torch.from_numpy(to_unit(native)).permute(2, 0, 1)
        result, used = denoise_with_level(module, pixels, param)
        suffix = ".tif" if path.suffix.lower() in (".tif", ".tiff") and depth == 16 else ".png"
        target = write_output(out_dir / f"{path.stem}{suffix}", result, depth)
        level = " ".join(f"{k}={v:.6g}" for k, v in used.items()) or "none"
        print(f"{target}\tlevel {level}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
