"""Short real-photo runs of the paper's method against its μ-only ablation (was part of tests/test_quality.py).

Why a benchmark: the ablation's margin (the prior's gain over μ only, +0.5 dB or more at 400 steps) is a result
to reproduce and record, not a behaviour a test must prove on every change, and its second run doubled the
test's time (about 5 minutes on a quiet 2-core CPU). The test keeps one run: the method clearly denoises.

    python bench/quality.py --data ../shared/data [--steps 400] [--methods ssdn,mu_only]
        [--work outputs/bench-quality] [--threads 2]

Trains each method on the BSDS500 training photos (64² crops, batch 4, Gaussian σ = 25, the test's settings) and
scores the centre 64² crops of the first 20 BSD300 test images, with the same noise draw for every method.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from ssdn.config.compose import compose
from ssdn.data.io import list_images, load_image
from ssdn.eval.metrics import psnr
from ssdn.train import run
from ssdn.training.checkpoints import load_denoiser


def held_out(data_root: Path, n: int = 20, size: int = 64) -> torch.Tensor:
    """Centre ``size``² crops of the first ``n`` BSD300 test images (disjoint from the BSDS500 training folder)."""
    crops = []
    for path in list_images(data_root / "bsd300")[:n]:
        img = load_image(path)
        top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
        crops.append(torch.from_numpy(img[top : top + size, left : left + size].copy()).permute(2, 0, 1))
    return torch.stack(crops).float() / 255


def train(data_root: Path, out: Path, method: str, steps: int) -> Path:
    """One run with the test's settings; returns its last checkpoint."""
    cfg = compose(
        "logger=csv",
        "data=folder",
        f"data.train_dir={data_root / 'train-bsds500-400'}",
        "data.recursive=false",
        "data.crop_size=64",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.in_memory=true",
        "data.val_dir=skimage:val",
        "data.val_count=1",
        "data.val_size=64",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        f"trainer.checkpoint_every_n_steps={steps}",
        "trainer.enable_progress_bar=false",
        "example.enabled=false",
        f"method={method}",
        output_dir=out,
    )
    run(cfg)
    return out / "checkpoints" / "last.ckpt"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data", type=Path, default=Path("../shared/data"), help="folder with bsd300/ and train-bsds500-400/"
    )
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--methods", default="ssdn,mu_only", help="comma-separated method configs")
    p.add_argument("--work", type=Path, default=Path("outputs/bench-quality"))
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    clean = held_out(args.data)
    rows = []
    for method in args.methods.split(","):
        start = time.monotonic()
        module = load_denoiser(train(args.data, args.work / f"{method}-{args.steps}", method, args.steps))
        gen = torch.Generator().manual_seed(2019)  # the same noisy crops for every method
        params = module.noise.sample_params(clean.shape[0], gen)
        noisy = module.noise.corrupt(clean, params, gen)
        with torch.no_grad():
            out = next(iter(module.denoise(noisy, params, bf16=False).values()))
        rows.append((method, float(psnr(noisy, clean).mean()), float(psnr(out, clean).mean())))
        print(f"{method}: {time.monotonic() - start:.0f} s", flush=True)
    print(f"\n{args.steps} steps, 64² crops, 20 BSD300 crops, σ = 25\n\n| method | noisy dB | denoised dB |")
    print("|---|---|---|")
    for method, noisy_db, out_db in rows:
        print(f"| {method} | {noisy_db:.2f} | {out_db:.2f} |")


if __name__ == "__main__":
    main()
