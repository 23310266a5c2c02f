"""The denoised example of a run: one held-out photo, noisy / denoised / clean, with their PSNRs.

Noise is drawn on the padded square, as the evaluation protocol draws it; the denoising goes through
``ssdn.inference.tiling``, so an example larger than a tile is tiled and one that fits runs whole, as it always did.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ssdn.config.schema import ExampleConfig
from ssdn.data.embedded import embedded_photos
from ssdn.data.io import load_image
from ssdn.eval.metrics import psnr, quantize
from ssdn.inference.tiling import denoise_tiled
from ssdn.nets import crop, pad_to_square
from ssdn.training.module import DenoiserModule
from ssdn.utils import atomic_write_json, atomic_write_png


def write_example(
    example: ExampleConfig, module: DenoiserModule, output_dir: Path, *, seed: int, channels: int
) -> dict[str, float]:
    """Denoise a held-out image and save noisy / denoised / clean PNGs with their PSNRs (``example.json``);
    ``seed``, ``channels``: the run's (its noise draw, its image format)."""
    size, source = example.size, example.image
    if source.startswith("skimage"):
        pixels = embedded_photos(channels=channels, split="val")[0][1]
    else:
        pixels = load_image(source, channels=channels)
    h, w = min(size, pixels.shape[0]), min(size, pixels.shape[1])
    top, left = (pixels.shape[0] - h) // 2, (pixels.shape[1] - w) // 2
    clean = (
        torch.from_numpy(pixels[top : top + h, left : left + w].copy()).permute(2, 0, 1)[None].float() / 255
    )
    gen = torch.Generator().manual_seed(seed + 12345)
    params = module.noise.sample_params(1, gen)
    padded, (h0, w0) = pad_to_square(clean)
    noisy = module.noise.corrupt(padded, params, gen)
    outs = {k: crop(v, h0, w0) for k, v in denoise_tiled(lambda x: module.denoise(x, params), noisy).items()}
    noisy = crop(noisy, h0, w0)
    scores = {"psnr_noisy": float(psnr(noisy, clean)[0])}
    scores |= {f"psnr_{k}": float(psnr(v, clean)[0]) for k, v in outs.items()}
    for name, img in {"noisy": noisy, **outs, "clean": clean}.items():
        atomic_write_png(output_dir / f"example_{name}.png", quantize(img[0]).permute(1, 2, 0).numpy())
    # one number (σ, λ, ...) or a list for the models of several parameters (Poisson–Gaussian a, b, ...)
    atomic_write_json(output_dir / "example.json", scores | {"image": source, "params": params[0].tolist()})
    return scores
