"""Figures of ``python -m ssdn.denoise`` and ``ssdn.inference.tiling`` (issue 18): speed, start-up, memory, exactness.

    python bench/bench_denoise.py all                      # every figure below with its defaults
    python bench/bench_denoise.py speed --images 3         # KODAK 768×512 s/image in-process, fp32 and bf16
    python bench/bench_denoise.py cli                      # the CLI's total for one KODAK image, start-up included
    python bench/bench_denoise.py big --tiles 3            # 6000×4000 RGB: peak RSS and s/tile (--full: whole run)
    python bench/bench_denoise.py exact --images 24        # tiled (512²) vs whole-image PSNR on KODAK; bf16 vs fp32

The checkpoint defaults to the Gaussian σ = 25 (known) one of bench/README.md; noise is Gaussian σ = 25 drawn
from a seeded generator on each clean KODAK image (not padded: what a user's photo is). PSNRs are scored as the
evaluator scores them (8-bit quantised). Timings depend on what else the machine runs: compare within one run.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ssdn.data.testsets import load_testset
from ssdn.eval.metrics import psnr, quantize
from ssdn.inference.denoiser import denoise_pixels
from ssdn.inference.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, tile_count
from ssdn.training.checkpoints import load_denoiser
from ssdn.training.module import DenoiserModule

CHECKPOINT = "outputs/bench-noisy-only/runs/gauss-synthetic/checkpoints/best.ckpt"
SIGMA = 25.0
WHOLE = 768  # a tile budget (768²) that holds a KODAK image whole: it runs as 512×768 (768×512), not squared
TILED = 512  # exact: a tile that cuts a KODAK image into 2 tiles (the default, 640, holds it whole)


def _kodak(root: str, count: int, crop: int | None = None) -> list[torch.Tensor]:
    """The first ``count`` KODAK images (C, H, W) in [0, 1], or their centre crop² (quicker bf16 figures)."""
    images = load_testset("kodak", root=root, channels=3, limit=count)
    out = [torch.from_numpy(im.pixels.copy()).permute(2, 0, 1).float() / 255 for im in images]
    if crop is None:
        return out
    return [x[:, (x.shape[1] - crop) // 2 :, (x.shape[2] - crop) // 2 :][:, :crop, :crop] for x in out]


def _noisy(clean: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return clean + torch.randn(clean.shape, generator=gen) * (SIGMA / 255)


def _params() -> torch.Tensor:
    return torch.tensor([SIGMA], dtype=torch.float64)


def _run(
    module: DenoiserModule, noisy: torch.Tensor, bf16: bool, tile: int
) -> tuple[torch.Tensor, float, float]:
    """Output, wall seconds and process CPU seconds (all threads; less inflated by other load than wall)."""
    start, cpu = time.perf_counter(), time.process_time()
    out, _, _ = denoise_pixels(module, noisy, _params(), bf16=bf16, tile=tile, overlap=DEFAULT_OVERLAP)
    return out, time.perf_counter() - start, time.process_time() - cpu


def speed(args: argparse.Namespace) -> None:
    module = load_denoiser(args.checkpoint)
    images = _kodak(args.root, args.images, args.crop)
    print(
        f"KODAK {images[0].shape[2]}×{images[0].shape[1]}, tile {args.tile}, overlap {DEFAULT_OVERLAP}, "
        f"{tile_count(*images[0].shape[1:], args.tile, DEFAULT_OVERLAP)} tiles/image, {torch.get_num_threads()} threads"
    )
    for bf16 in (False, True):
        runs = [(c, *_run(module, _noisy(c, i), bf16, args.tile)) for i, c in enumerate(images)]
        seconds, cpu = [r[2] for r in runs], [r[3] for r in runs]
        score = np.mean([float(psnr(quantize(out), quantize(clean))) for clean, out, *_ in runs])
        print(
            f"  {'bf16' if bf16 else 'fp32'}: median {statistics.median(seconds):.2f} s/image "
            f"(min {min(seconds):.2f}, {len(seconds)} images), CPU {statistics.median(cpu):.2f} s/image, "
            f"mean PSNR {score:.3f} dB"
        )


def _denoise_args(checkpoint: str, image: Path, out: Path) -> list[str]:
    """The CLI arguments every timed run uses: σ = 25, fp32, on the CPU."""
    return [
        checkpoint,
        str(image),
        "--out",
        str(out),
        "--param",
        "25",
        "--precision",
        "fp32",
        "--device",
        "cpu",
    ]


def cli(args: argparse.Namespace) -> None:
    image = Path(args.root) / "kodak" / "kodim01.png"
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "ssdn.denoise", *_denoise_args(args.checkpoint, image, Path(out))]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        print(f"CLI, one KODAK image (fp32, start-up included): {time.perf_counter() - start:.2f} s")


def _max_rss_kb(stderr: str) -> int:
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr).group(1))


def big(args: argparse.Namespace) -> None:
    """6000×4000 RGB through the CLI under /usr/bin/time -v. Without --full, the run stops after --tiles tiles
    (every buffer of the image is allocated at the first tile), which bounds the peak and gives s/tile."""
    h, w = 4000, 6000
    gen = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "big.png"
        ramp = np.linspace(40, 215, w, dtype=np.float32)[None, :, None]
        pixels = np.clip(ramp + gen.normal(0, SIGMA, (h, w, 3)).astype(np.float32), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(src, compress_level=1)
        del pixels
        code = (
            "import sys, ssdn.denoise as d, ssdn.inference.denoiser as r, ssdn.inference.tiling as t\n"
            f"limit = {0 if args.full else args.tiles}\n"
            "if limit:\n"
            "    real = t.denoise_tiled\n"
            "    def stop(fn, image, tile, overlap, **kw):\n"
            "        seen = [0]\n"
            "        def counted(x):\n"
            "            seen[0] += 1\n"
            "            if seen[0] > limit: raise KeyboardInterrupt\n"
            "            return fn(x)\n"
            "        try: return real(counted, image, tile, overlap, **kw)\n"
            "        except KeyboardInterrupt:\n"
            "            print('stopped after', limit, 'tiles', file=sys.stderr)\n"
            "            raise SystemExit(0) from None\n"
            "    r.denoise_tiled = stop\n"
            "d.main(sys.argv[1:])\n"
        )
        cmd = [
            "/usr/bin/time",
            "-v",
            sys.executable,
            "-c",
            code,
            *_denoise_args(args.checkpoint, src, Path(tmp) / "out"),
        ]
        start = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    tiles = tile_count(h, w, DEFAULT_TILE, DEFAULT_OVERLAP)
    done = tiles if args.full else args.tiles
    print(
        f"6000×4000 RGB, {tiles} tiles of {DEFAULT_TILE}²: peak RSS {_max_rss_kb(result.stderr) / 2**20:.2f} GiB, "
        f"{seconds:.1f} s for {done} tiles"
        + (
            ""
            if args.full
            else f" (whole image ≈ {seconds / done * tiles:.0f} s by extrapolation, start-up included)"
        )
    )
    if result.returncode:
        print(result.stderr[-2000:])


def exact(args: argparse.Namespace) -> None:
    module = load_denoiser(args.checkpoint)
    images = _kodak(args.root, args.images, args.crop)
    rows = []
    for i, clean in enumerate(images):
        noisy = _noisy(clean, i)
        whole = _run(module, noisy, False, WHOLE)[0]
        tiled = _run(module, noisy, False, args.tile)[0]
        p_whole, p_tiled = (float(psnr(quantize(x), quantize(clean))) for x in (whole, tiled))
        row = [p_whole, p_tiled]
        if i < args.bf16_images:
            row.append(float(psnr(quantize(_run(module, noisy, True, args.tile)[0]), quantize(clean))))
        rows.append(row)
        print(
            f"  kodim{i + 1:02d}: whole {p_whole:.3f}  tiled {p_tiled:.3f}"
            + (f"  tiled bf16 {row[2]:.3f}" if len(row) > 2 else ""),
            flush=True,
        )
    d_tile = [abs(r[1] - r[0]) for r in rows]
    print(
        f"tiled ({args.tile}/{DEFAULT_OVERLAP}) vs whole, {len(rows)} KODAK images: mean PSNR "
        f"{np.mean([r[0] for r in rows]):.3f} vs {np.mean([r[1] for r in rows]):.3f} dB, mean |ΔPSNR| "
        f"{np.mean(d_tile):.4f} dB, max {max(d_tile):.4f} dB"
    )
    bf = [r for r in rows if len(r) > 2]
    if bf:
        print(
            f"bf16 vs fp32 (tiled), {len(bf)} images: mean ΔPSNR {np.mean([r[2] - r[1] for r in bf]):+.4f} dB, "
            f"max |Δ| {max(abs(r[2] - r[1]) for r in bf):.4f} dB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("all", "speed", "cli", "big", "exact"))
    parser.add_argument("--checkpoint", default=CHECKPOINT)
    parser.add_argument("--root", default="../shared/data", help="folder holding kodak/")
    parser.add_argument("--images", type=int, default=None, help="KODAK images (speed: 3, exact: 24)")
    parser.add_argument("--bf16-images", type=int, default=24, help="exact: images also run in bf16")
    parser.add_argument("--tile", type=int, default=None, help=f"speed: {DEFAULT_TILE}, exact: {TILED}")
    parser.add_argument("--crop", type=int, default=None, help="speed/exact: centre crops of this side")
    parser.add_argument("--tiles", type=int, default=3, help="big: stop after this many tiles")
    parser.add_argument("--full", action="store_true", help="big: denoise the whole 6000×4000 image")
    args = parser.parse_args()
    for name, run, images in (("speed", speed, 3), ("cli", cli, 1), ("big", big, 0), ("exact", exact, 24)):
        if args.what in (name, "all"):
            tile = args.tile or (TILED if name == "exact" else DEFAULT_TILE)
            run(argparse.Namespace(**{**vars(args), "images": args.images or images, "tile": tile}))


if __name__ == "__main__":
    main()
