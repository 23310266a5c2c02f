"""Train on noisy photos alone, then denoise noisy test crops without being told the noise level.

Why: the paper's promise is a denoiser trained "based on unorganized collections of corrupted images". This
benchmark builds such a collection the way real photos are stored: the 400 BSDS500 training photos corrupted
**once** (Gaussian σ = 25, or Poisson–Gaussian a = 0.01, b = (5/255)²), clipped to [0, 255] and quantised to
8-bit PNG; and 24 KODAK 256² centre crops corrupted the same way with a seed. It then trains with
``data.add_noise=false`` and an unknown level on the noisy PNGs only, denoises the noisy test crops with
``python -m ssdn.denoise`` (no ``--param``), and scores against the clean crops (uint8 PSNR). Beside each, the
same budget with synthetic fresh noise on the clean photos and the level known shows what "noisy data only" costs.

    python bench/noisy_only.py --data ../shared/data --work outputs/bench-noisy-only [--images 3200]
        [--runs gauss-noisy,gauss-synthetic,pg-noisy,pg-synthetic] [--threads 2]

Writes ``<work>/summary.json`` and ``<work>/summary.md``. The generated data lives under ``<work>/data`` (never
inside the package); rerunning reuses it and skips finished runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TEST_CROP = 256
PG_A, PG_B = 0.01, (5 / 255) ** 2
GAUSS_SIGMA = 25.0


def gaussian_once(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x uint8 (H, W, C) -> noisy uint8: + N(0, 25²) in 8-bit units, clipped and rounded as a camera would."""
    y = x.astype(np.float64) + rng.normal(0.0, GAUSS_SIGMA, size=x.shape)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def poisson_gaussian_once(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x uint8 -> noisy uint8: Poisson(x/a)·a + N(0, b) on [0, 1] intensities, clipped and rounded."""
    v = x.astype(np.float64) / 255.0
    y = rng.poisson(v / PG_A) * PG_A + rng.normal(0.0, np.sqrt(PG_B), size=x.shape)
    return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)


NOISES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "gauss": gaussian_once,
    "pg": poisson_gaussian_once,
}


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _save_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(pixels).save(tmp)
    os.replace(tmp, path)


def build_data(data_root: Path, work: Path, seed: int = 0) -> None:
    """Noisy training PNGs per noise, clean + noisy KODAK centre crops; skipped when already complete."""
    train = sorted((data_root / "train-bsds500-400").glob("*.jpg"))
    kodak = sorted((data_root / "kodak").glob("*.png"))
    if len(train) != 400 or len(kodak) != 24:
        raise SystemExit(f"expected 400 BSDS500 photos and 24 KODAK images under {data_root}")
    clean_test = work / "data" / "kodak256-clean"
    for path in kodak:
        out = clean_test / path.name
        if not out.is_file():
            x = _rgb(path)
            top, left = (x.shape[0] - TEST_CROP) // 2, (x.shape[1] - TEST_CROP) // 2
            _save_png(out, x[top : top + TEST_CROP, left : left + TEST_CROP])
    for k, (name, corrupt) in enumerate(NOISES.items()):
        # one generator per noise and set, images in sorted order: the data are reproducible file by file
        rng = np.random.default_rng([seed, k, 0])
        folder = work / "data" / f"train-{name}"
        for path in train:
            noisy = corrupt(_rgb(path), rng)  # drawn even when the file exists, so the stream stays aligned
            out = folder / f"{path.stem}.png"
            if not out.is_file():
                _save_png(out, noisy)
        rng = np.random.default_rng([seed, k, 1])
        for path in sorted(clean_test.glob("*.png")):
            noisy = corrupt(_rgb(path), rng)
            out = work / "data" / f"kodak256-{name}" / path.name
            if not out.is_file():
                _save_png(out, noisy)


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def score(out_dir: Path, clean_dir: Path) -> float:
    """Mean per-image uint8 PSNR of ``out_dir``'s PNGs against the clean crops of the same names."""
    clean = sorted(clean_dir.glob("*.png"))
    return float(np.mean([psnr_uint8(_rgb(out_dir / p.name), _rgb(p)) for p in clean]))


@dataclass(frozen=True)
class Run:
    """One training run of the benchmark: which noise, which data, and how the level is given."""

    name: str
    noise: str  # key of NOISES
    noisy_only: bool

    def overrides(self, work: Path, data_root: Path, images: int) -> list[str]:
        noise = {"gauss": "noise=gaussian", "pg": "noise=poisson_gaussian"}[self.noise]
        common = [
            noise,
            "data=folder",
            "data.crop_size=128",
            "data.batch_size=2",
            "data.num_workers=0",
            "data.in_memory=true",
            "data.val_count=4",
            "data.val_size=128",
            "trainer=cpu",
            "trainer.val_check_interval=250",
            "trainer.checkpoint_every_n_steps=250",
            "trainer.enable_progress_bar=false",
            "logger=csv",
            "example.enabled=false",
            f"train.images={images}",
            f"hydra.run.dir={work / 'runs' / self.name}",
            "resume=auto",
        ]
        if self.noisy_only:
            return [
                *common,
                f"data.train_dir={work / 'data' / f'train-{self.noise}'}",
                "data.add_noise=false",
                "data.val_dir=null",
                "noise_params=sigma_global",
                "noise_params.init=data",
            ]
        return [
            *common,
            f"data.train_dir={data_root / 'train-bsds500-400'}",
            "noise_params=sigma_known",
        ]

    def denoise_args(self) -> list[str]:
        """Noisy-only models use their learned level; synthetic σ-known models are told the truth."""
        if self.noisy_only:
            return []
        return ["--param", str(GAUSS_SIGMA)] if self.noise == "gauss" else ["--param", f"{PG_A},{PG_B}"]


RUNS = {
    r.name: r
    for r in (
        Run("gauss-noisy", "gauss", noisy_only=True),
        Run("gauss-synthetic", "gauss", noisy_only=False),
        Run("pg-noisy", "pg", noisy_only=True),
        Run("pg-synthetic", "pg", noisy_only=False),
    )
}


def train(
    run: Run, work: Path, data_root: Path, images: int, threads: int, extra: list[str]
) -> dict[str, object]:
    run_dir = work / "runs" / run.name
    metrics_file = run_dir / "metrics.json"
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    cpu_start = os.times()
    if not metrics_file.is_file():
        cmd = [sys.executable, str(ROOT / "train.py"), *run.overrides(work, data_root, images), *extra]
        run_dir.mkdir(parents=True, exist_ok=True)
        with (work / "runs" / f"{run.name}.log").open("w") as log:
            subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    minutes = (time.perf_counter() - start) / 60
    cpu_end = os.times()
    used = (
        cpu_end.children_user + cpu_end.children_system - cpu_start.children_user - cpu_start.children_system
    )
    cpu_minutes = used / 60
    metrics = json.loads(metrics_file.read_text())
    out = work / "denoised" / run.name
    cmd = [
        sys.executable,
        "-m",
        "ssdn.denoise",
        str(run_dir / "checkpoints" / "last.ckpt"),
        str(work / "data" / f"kodak256-{run.noise}"),
        "--out",
        str(out),
        *run.denoise_args(),
    ]
    printed = subprocess.run(cmd, check=True, cwd=ROOT, env=env, capture_output=True, text=True).stdout
    return {
        "run": run.name,
        "noise": run.noise,
        "noisy_only": run.noisy_only,
        "train_minutes": round(minutes, 1),
        "train_cpu_minutes": round(cpu_minutes, 1),
        "images_seen": metrics.get("images_seen"),
        "psnr": round(score(out, work / "data" / "kodak256-clean"), 2),
        "psnr_noisy_input": round(
            score(work / "data" / f"kodak256-{run.noise}", work / "data" / "kodak256-clean"), 2
        ),
        "learned_level": metrics.get("noise_level"),
        "denoise_output": printed.strip().splitlines()[-3:],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench-noisy-only")
    parser.add_argument("--images", type=int, default=3200, help="training length of every run")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of " + ",".join(RUNS))
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per training run")
    parser.add_argument(
        "overrides", nargs="*", help="extra training overrides for every run, e.g. channels_last=false"
    )
    args = parser.parse_args(argv)
    build_data(args.data, args.work)
    rows = [
        train(RUNS[n], args.work, args.data, args.images, args.threads, args.overrides)
        for n in args.runs.split(",")
    ]
    summary = args.work / f"summary-{'_'.join(r['run'] for r in rows)}.json"
    summary.write_text(json.dumps(rows, indent=2))
    lines = [
        "| run | noisy only | train min | images | PSNR | noisy input | learned level |",
        "|---" * 7 + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['noisy_only']} | {r['train_minutes']} | {r['images_seen']} | {r['psnr']} "
            f"| {r['psnr_noisy_input']} | {r['learned_level']} |"
        )
    summary.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
