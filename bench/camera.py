"""A simulated camera: photos whose noise is spatially correlated the way a real camera's is (issue 27).

Why: the paper's blind spot assumes pixel-independent noise; a camera's demosaicing spreads sensor noise into
neighbouring pixels. This builds a benchmark with a known truth from the shipped photos, per image:

    sRGB → linear (the sRGB EOTF) → RGGB Bayer mosaic → Poisson–Gaussian sensor noise (a·x + b, linear units)
    → demosaicing (Menon 2007, colour-demosaicing) → clip to [0, 1] → sRGB OETF → 8-bit

The clean reference is the same pipeline without the noise step, so noisy − clean is exactly the camera noise.

    python bench/camera.py build --data ../shared/data --out outputs/bench-camera [--train-images 400]
        [--test-images 100] [--levels iso1600,iso6400]
    python bench/camera.py diagnose --out outputs/bench-camera [--images 24]

``build`` writes ``OUT/LEVEL/SPLIT/noisy/*.png`` and ``OUT/LEVEL/SPLIT/clean/*.png`` (the clean files hard-linked
between levels), train from ``train-bsds500-400`` (whole photos), test from 256² centre crops of the 100
held-out ``bsd300`` photos, and ``OUT/camera.json`` with the parameters, the noisy PSNR and the TRUE noise
correlation of each set (from noisy − clean on the test split). Files already written are kept (resumable);
OUT must not hold a build with other parameters. ``diagnose`` runs ``ssdn.noise.correlation`` on the noisy
test photos of each level and, for comparison, on independent noise added to the clean test photos (Gaussian
σ = 25 and Poisson–Gaussian a = 0.01, b = (5/255)², quantised to 8 bits) and prints the estimate beside the
truth, with the verdict and the recommendation; ``OUT/diagnose.md`` and ``OUT/diagnose.json`` keep them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ssdn.data.io import list_images, load_image  # noqa: E402
from ssdn.noise.correlation import (  # noqa: E402
    NoiseCorrelation,
    estimate_correlation,
    noise_correlation,
    recommend,
    signal_dependence,
)
from ssdn.utils import atomic_write_json, atomic_write_png, atomic_write_text  # noqa: E402

LEVELS: dict[str, tuple[float, float]] = {
    "iso1600": (0.008, 0.00015),
    "iso6400": (0.025, 0.0005),
}
"""(a, b) of the sensor noise Var = a·x + b on linear [0, 1] intensities, chosen so the noisy 8-bit sRGB photos
score ≈ 24 and ≈ 20 dB against the clean pipeline (bench/README.md has the measured values)."""

TEST_CROP = 256
SEED = 2026
TRAIN_DIR, TEST_DIR = "train-bsds500-400", "bsd300"
INDEPENDENT: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {}


# ---------------------------------------------------------------------------------------------- pipeline


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """The sRGB EOTF (IEC 61966-2-1) on [0, 1] values."""
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    """The inverse EOTF on [0, 1] values (clip first: the power is undefined below 0)."""
    return np.where(v <= 0.0031308, 12.92 * v, 1.055 * np.power(np.maximum(v, 0.0031308), 1 / 2.4) - 0.055)


def camera(
    srgb: np.ndarray,
    noise: tuple[float, float] | None,
    rng: np.random.Generator | None = None,
    demosaic: str = "menon2007",
) -> np.ndarray:
    """uint8 (H, W, 3) sRGB photo -> uint8 (H, W, 3) through the simulated camera; ``noise=None``: clean."""
    import colour_demosaicing as cd  # slow to import (colour-science); only the pipeline needs it

    raw = cd.mosaicing_CFA_Bayer(srgb_to_linear(srgb.astype(np.float64) / 255.0), "RGGB")
    if noise is not None:
        if rng is None:
            raise ValueError("a noisy run needs an explicit numpy Generator")
        a, b = noise
        raw = rng.poisson(np.maximum(raw, 0.0) / a) * a + rng.normal(0.0, np.sqrt(b), size=raw.shape)
    method = {
        "menon2007": cd.demosaicing_CFA_Bayer_Menon2007,
        "malvar2004": cd.demosaicing_CFA_Bayer_Malvar2004,
        "bilinear": cd.demosaicing_CFA_Bayer_bilinear,
    }[demosaic]
    rgb = np.clip(np.asarray(method(raw, "RGGB"), dtype=np.float64), 0.0, 1.0)
    return np.rint(linear_to_srgb(rgb) * 255.0).astype(np.uint8)


def image_rng(level: str, split: str, index: int, seed: int = SEED) -> np.random.Generator:
    """The Generator of one noisy image: independent of the order images are built in."""
    return np.random.default_rng([seed, list(LEVELS).index(level), ("train", "test").index(split), index])


def centre_crop(x: np.ndarray, size: int) -> np.ndarray:
    h, w = x.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return x[top : top + size, left : left + size] if h >= size and w >= size else x


def psnr(clean: np.ndarray, noisy: np.ndarray) -> float:
    mse = float(np.mean((clean.astype(np.float64) - noisy.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse) if mse > 0 else float("inf")


# ---------------------------------------------------------------------------------------------- build


def _sources(data: Path, split: str, count: int) -> list[Path]:
    files = list_images(data / (TRAIN_DIR if split == "train" else TEST_DIR))
    if not files:
        raise SystemExit(f"camera.py: no photos in {data / (TRAIN_DIR if split == 'train' else TEST_DIR)}")
    return files[:count]


def _link_or_write(path: Path, pixels: np.ndarray, first: Path | None) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if first is not None and first.exists():
        try:
            os.link(first, path)
            return
        except OSError:
            pass
    atomic_write_png(path, pixels)


def _build_split(
    data: Path, out: Path, levels: Sequence[str], split: str, count: int, demosaic: str
) -> dict[str, dict[str, Any]]:
    """Write one split of every level; its noisy PSNR, and the true correlation on the test split."""
    noises: dict[str, list[np.ndarray]] = {lv: [] for lv in levels}
    psnrs: dict[str, list[float]] = {lv: [] for lv in levels}
    for i, src in enumerate(_sources(data, split, count)):
        photo = load_image(src, 3)
        if split == "test":
            photo = centre_crop(photo, TEST_CROP)
        clean = camera(photo, None, demosaic=demosaic)
        first: Path | None = None
        name = src.stem + ".png"
        for lv in levels:
            d = out / lv / split
            noisy = camera(photo, LEVELS[lv], image_rng(lv, split, i), demosaic=demosaic)
            if not (d / "noisy" / name).exists():
                atomic_write_png(d / "noisy" / name, noisy)
            _link_or_write(d / "clean" / name, clean, first)
            first = d / "clean" / name
            psnrs[lv].append(psnr(clean, noisy))
            if split == "test":
                noises[lv].append((noisy.astype(np.float64) - clean.astype(np.float64)) / 255.0)
    sets: dict[str, dict[str, Any]] = {}
    for lv in levels:
        entry: dict[str, Any] = {"images": len(psnrs[lv]), "noisy_psnr": round(float(np.mean(psnrs[lv])), 3)}
        if split == "test":
            entry["true_correlation"] = noise_correlation(noises[lv]).to_dict()
        sets[f"{lv}/{split}"] = entry
        print(f"{lv}/{split}: {entry['images']} images, noisy PSNR {entry['noisy_psnr']:.2f} dB", flush=True)
    return sets


def build(
    data: Path, out: Path, levels: Sequence[str], train: int, test: int, demosaic: str
) -> dict[str, Any]:
    """Write the sets (resuming), then camera.json with the truth measured on the test split."""
    params = {
        "pipeline": "sRGB EOTF, RGGB mosaic, Poisson-Gaussian a*x+b (linear), demosaic, clip, sRGB OETF, uint8",
        "demosaic": demosaic,
        "levels": {name: {"a": LEVELS[name][0], "b": LEVELS[name][1]} for name in levels},
        "seed": SEED,
        "train": {"source": TRAIN_DIR, "images": train, "crop": None},
        "test": {"source": TEST_DIR, "images": test, "crop": TEST_CROP},
    }
    meta = out / "camera.json"
    if meta.exists() and json.loads(meta.read_text()).get("parameters") != params:
        raise SystemExit(f"camera.py: {meta} was built with other parameters; choose another --out")
    results: dict[str, Any] = {"parameters": params, "sets": {}}
    for split, count in (("train", train), ("test", test)):
        if count > 0:
            t0 = time.time()
            results["sets"].update(_build_split(data, out, levels, split, count, demosaic))
            print(f"  {split}: {time.time() - t0:.0f} s", flush=True)
    atomic_write_json(meta, results)
    return results


# ---------------------------------------------------------------------------------------------- diagnose


def gaussian25(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(np.rint(clean + rng.normal(0.0, 25.0, clean.shape)), 0, 255).astype(np.uint8)


def poisson_gaussian(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    a, b = 0.01, (5 / 255) ** 2
    y = rng.poisson(clean / 255.0 / a) * a + rng.normal(0.0, np.sqrt(b), clean.shape)
    return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)


INDEPENDENT.update({"gauss25": gaussian25, "pg0.01": poisson_gaussian})


def _row(name: str, true: NoiseCorrelation, est: NoiseCorrelation, noisy: list[np.ndarray]) -> dict[str, Any]:
    rec = recommend(est, signal_dependence(noisy))
    extra = [o for o in rec.alternatives[0] if o.startswith("method.") or o.startswith("noise=")]
    return {
        "set": name,
        "true": true.to_dict(),
        "estimated": est.to_dict(),
        "recommendation": rec.to_dict(),
        "md": f"| {name} | {true.sigma:.2f} | {est.sigma:.2f} | "
        + " | ".join(
            f"{true.at(dy, dx):.3f} / {est.at(dy, dx):.3f}" for dy, dx in ((0, 1), (1, 0), (1, 1), (0, 2))
        )
        + f" | {true.channel_correlation:.3f} / {est.channel_correlation:.3f}"
        + f" | {true.extent} / {est.extent} | {'independent' if est.independent else '**correlated**'} | "
        + f"`{' '.join(extra)}`"
        + (f" or `method.pd_stride={rec.pd_stride}`" if not est.independent else "")
        + " |",
    }


def diagnose(out: Path, images: int) -> list[dict[str, Any]]:
    """Estimated vs true correlation and the verdict on each camera level and on independent noise."""
    meta = json.loads((out / "camera.json").read_text())
    levels = list(meta["parameters"]["levels"])
    rows = []
    clean_dir = out / levels[0] / "test" / "clean"
    files = list_images(clean_dir)[:images]
    clean = [load_image(p, 3) for p in files]
    for lv in levels:
        noisy = [load_image(out / lv / "test" / "noisy" / p.name, 3) for p in files]
        noise = [
            (n.astype(np.float64) - c.astype(np.float64)) / 255.0 for n, c in zip(noisy, clean, strict=True)
        ]
        rows.append(_row(f"camera {lv}", noise_correlation(noise), estimate_correlation(noisy), noisy))
    for k, (name, corrupt) in enumerate(INDEPENDENT.items()):
        rng = np.random.default_rng([SEED, 100 + k])
        noisy = [corrupt(c.astype(np.float64), rng) for c in clean]
        noise = [
            (n.astype(np.float64) - c.astype(np.float64)) / 255.0 for n, c in zip(noisy, clean, strict=True)
        ]
        truth = noise_correlation(noise)
        rows.append(_row(f"{name} on clean camera photos", truth, estimate_correlation(noisy), noisy))
    head = (
        "| set | σ true | σ est | ρ(0,1) true / est | ρ(1,0) | ρ(1,1) | ρ(0,2) | channel ρ true / est | "
        "extent true / est | verdict | recommended |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    table = "\n".join([head, *(r.pop("md") for r in rows)])
    print(table)
    atomic_write_text(out / "diagnose.md", table + "\n")
    atomic_write_json(out / "diagnose.json", rows)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the camera benchmark sets")
    b.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="the shipped photos")
    b.add_argument(
        "--out", type=Path, default=ROOT / "outputs" / "bench-camera", help="(git-ignored default)"
    )
    b.add_argument("--levels", default=",".join(LEVELS), help=f"comma-separated, of {', '.join(LEVELS)}")
    b.add_argument("--train-images", type=int, default=400)
    b.add_argument("--test-images", type=int, default=100)
    b.add_argument("--demosaic", choices=("menon2007", "malvar2004", "bilinear"), default="menon2007")
    d = sub.add_parser("diagnose", help="the noise diagnostic on the built sets and on independent noise")
    d.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench-camera")
    d.add_argument("--images", type=int, default=100, help="test photos used per set")
    args = p.parse_args(argv)
    if args.cmd == "build":
        levels = [s for s in args.levels.split(",") if s]
        unknown = [s for s in levels if s not in LEVELS]
        if unknown:
            p.error(f"--levels: unknown {', '.join(unknown)}; choose from {', '.join(LEVELS)}")
        build(args.data, args.out, levels, args.train_images, args.test_images, args.demosaic)
    else:
        diagnose(args.out, args.images)


if __name__ == "__main__":
    main()
