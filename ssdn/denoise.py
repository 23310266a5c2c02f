"""Denoise your own images with a trained checkpoint.

    python -m ssdn.denoise CHECKPOINT IMAGE [IMAGE ...] --out DIR [--param 25] [--device cuda]

Each image is mirror-padded to the square multiple of 32 the network needs, denoised, cropped back and written
as ``DIR/<name>.png`` (the reported output: the posterior mean for the paper's method). Models trained with a
known noise level need that level (``--param``, in the paper's units: σ in 8-bit units, λ, or α); models that
learned the level (``sigma_global`` / ``sigma_per_image``) estimate it themselves.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from ssdn.data.io import load_image
from ssdn.eval.metrics import quantize
from ssdn.module import DenoiserModule
from ssdn.nets import crop, pad_to_square
from ssdn.utils import atomic_write_png


def load_denoiser(checkpoint: str | Path, device: str | torch.device = "cpu") -> DenoiserModule:
    """Rebuild a trained module (network, noise model, method) from its checkpoint."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    module = DenoiserModule.load_from_checkpoint(path, map_location=torch.device(device))
    return module.eval()


def denoise_image(
    module: DenoiserModule, pixels: torch.Tensor, param: float | None, bf16: bool | None = None
) -> torch.Tensor:
    """Denoise one (C,H,W) float image in [0, 1]; returns the reported output, cropped back to (C,H,W)."""
    if module.method.level_source is not None and not module.method.learned_level and param is None:
        raise ValueError(
            f"this model was trained with a known noise level; pass --param (its {module.noise.param_name} in the "
            "paper's units)"
        )
    value = float(param) if param is not None else float(module.noise.low)
    padded, (h, w) = pad_to_square(pixels[None])
    outs = module.denoise(padded, torch.tensor([value], dtype=torch.float64), bf16=bf16)
    return crop(next(iter(outs.values())).cpu(), h, w)[0]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ssdn.denoise", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a .ckpt written by train.py")
    parser.add_argument("images", nargs="+", help="noisy images (PNG, JPEG, ...)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--param", type=float, default=None, help="noise level for models trained with it known"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    module = load_denoiser(args.checkpoint, args.device)
    out_dir = Path(args.out)
    for name in args.images:
        pixels = torch.from_numpy(load_image(name, channels=module.channels)).permute(2, 0, 1).float() / 255
        result = denoise_image(module, pixels, args.param)
        target = out_dir / f"{Path(name).stem}.png"
        atomic_write_png(target, quantize(result).permute(1, 2, 0).numpy())
        print(target)


if __name__ == "__main__":
    main()
