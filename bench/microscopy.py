"""Synthetic fluorescence-microscopy volumes with known truth: noisy 16-bit OME-TIFF stacks and their clean photons.

Why: real microscopy data cannot be downloaded here, and scoring a denoiser needs the clean signal, which a
microscope never gives. So this builds what a widefield/confocal camera records, from a stated physical model:

1. **Structures** below the optical resolution, drawn on the voxel grid (ZYX, 0.1 µm pixels, 0.2 µm Z steps):
   filaments (random 3-D curves: a persistent random walk with a turning rate, deposited every 0.5 voxel),
   vesicles (small spheres, half filled and half hollow shells, radius 1.5–4 voxels) and one membrane (a curved
   sheet z = z0 + A·sin(·)·cos(·) across the whole field). Each is a density of fluorophores, one unit per
   deposit, spread over the 8 nearest voxels (trilinear), so sub-voxel positions are kept.
2. **Optics**: a Gaussian PSF, anisotropic as a real one: σ_xy = 0.1 µm (1 px), σ_z = 0.3 µm (1.5 Z steps),
   i.e. σ_z = 3 σ_xy in physical units.
3. **Photons**: the blurred density scaled so that its 99.9th percentile is the level's peak (low: 20 photons,
   high: 200) plus a uniform background of 5% of the peak (out-of-focus light, autofluorescence). This is
   the expected photon count per voxel, saved as the clean volume (float32).
4. **Camera**: photons ~ Poisson(clean), ADU = offset + gain · photons + N(0, read_noise²), rounded to
   integers and stored as uint16 (offset 100 ADU, gain 2 ADU/photon, read noise 3 ADU; with the offset the
   values never reach 0, so nothing is clipped). In ssdn's [0, 1] units u = ADU / 65535 the noise is
   Poisson–Gaussian with Var(u) = a·(E[u] − offset/65535) + (read_noise/65535)², a = gain/65535: the
   offset shifts the signal that the Poisson part scales with, which ``truth.json`` spells out.

The structures of volume i are the same at both signal levels (own noise draws), so the two levels differ in
noise only. Every draw comes from ``numpy.random.Generator``s spawned from ``--seed``.

    python bench/microscopy.py --out outputs/microscopy              # 4 training volumes 64×256×256 + 1 held out
    python bench/microscopy.py --out /tmp/micro --small --train 2    # 8×64×64, for tests

Writes under ``--out`` (refused inside the repository unless git ignores the path):
``{low,high}/train/vol{i}.ome.tif`` (noisy uint16), ``{low,high}/test/heldout.ome.tif`` (noisy uint16),
``{low,high}/test/heldout_clean.ome.tif`` (float32 expected photons), and ``truth.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the repository's ssdn, not an installed one
    sys.path.insert(0, str(ROOT))

from ssdn.data.stacks import StackMeta, write_stack  # noqa: E402

FULL_SHAPE = (64, 256, 256)
SMALL_SHAPE = (8, 64, 64)
LEVELS = {"low": 20.0, "high": 200.0}


@dataclass(frozen=True)
class Camera:
    """The recording model's constants (ADU = offset + gain · photons + N(0, read_noise²))."""

    offset: float = 100.0
    gain: float = 2.0
    read_noise: float = 3.0
    pixel_xy_um: float = 0.1
    pixel_z_um: float = 0.2
    psf_sigma_xy_um: float = 0.1
    psf_sigma_z_um: float = 0.3
    background_fraction: float = 0.05
    peak_percentile: float = 99.9


def _splat(volume: np.ndarray, points: np.ndarray, weight: float = 1.0) -> None:
    """Add ``weight`` at each (z, y, x) point, spread trilinearly over its 8 neighbouring voxels (in place)."""
    shape = np.array(volume.shape)
    base = np.floor(points).astype(np.int64)
    frac = points - base
    for corner in np.ndindex(2, 2, 2):
        idx = base + np.array(corner)
        w = np.prod(np.where(np.array(corner), frac, 1.0 - frac), axis=1) * weight
        inside = np.all((idx >= 0) & (idx < shape), axis=1)
        np.add.at(volume, tuple(idx[inside].T), w[inside])


def _filaments(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random 3-D curves: persistent random walks of 0.5-voxel steps, turning slowly, mostly lying in-plane."""
    count = max(2, round(20 * shape[1] * shape[2] / 256**2))
    length = int(1.5 * max(shape[1:]) / 0.5)
    pts = []
    for _ in range(count):
        pos = rng.uniform([0, 0, 0], shape)
        direction = rng.normal(size=3) * np.array([0.3, 1.0, 1.0])
        for _step in range(length):
            direction = direction / np.linalg.norm(direction)
            pos = pos + 0.5 * direction * np.array([0.5, 1.0, 1.0])  # Z steps are coarser: slower in Z
            pts.append(pos)
            direction = direction + rng.normal(scale=0.08, size=3)
    return np.array(pts)


def _vesicles(shape: tuple[int, ...], rng: np.random.Generator) -> list[np.ndarray]:
    """Small spheres: points filling a ball (half of them) or on its surface (hollow shells)."""
    count = max(4, round(60 * shape[0] * shape[1] * shape[2] / (64 * 256 * 256)))
    out = []
    for i in range(count):
        centre = rng.uniform([0, 0, 0], shape)
        radius = rng.uniform(1.5, 4.0)
        n = int(30 * radius**2)
        d = rng.normal(size=(n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        r = radius if i % 2 else radius * rng.uniform(0, 1, size=(n, 1)) ** (1 / 3)
        out.append(centre + d * r * np.array([0.5, 1.0, 1.0]))  # radius in XY voxels; Z voxels are 2× deeper
    return out


def _membrane(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """One curved sheet z(y, x) across the field, sampled every 0.5 voxel in Y and X."""
    depth, height, width = shape
    y, x = np.meshgrid(np.arange(0, height, 0.5), np.arange(0, width, 0.5), indexing="ij")
    fy, fx = rng.uniform(0.5, 1.5, size=2) * 2 * np.pi / np.array([height, width])
    py, px = rng.uniform(0, 2 * np.pi, size=2)
    z = depth * (0.5 + 0.25 * np.sin(fy * y + py) * np.cos(fx * x + px))
    return np.stack([z.ravel(), y.ravel(), x.ravel()], axis=1)


def structures(shape: tuple[int, ...], rng: np.random.Generator, camera: Camera) -> np.ndarray:
    """The blurred fluorophore density (float64, arbitrary units) of one volume."""
    density = np.zeros(shape, np.float64)
    # weights per deposit chosen so that filaments, vesicles and the membrane reach similar peak brightness
    _splat(density, _filaments(shape, rng), 4.0)
    for vesicle in _vesicles(shape, rng):
        _splat(density, vesicle, 0.4)
    _splat(density, _membrane(shape, rng), 0.5)
    sigma = (camera.psf_sigma_z_um / camera.pixel_z_um, *(2 * [camera.psf_sigma_xy_um / camera.pixel_xy_um]))
    return np.asarray(gaussian_filter(density, sigma=sigma, mode="constant"))


def photons(density: np.ndarray, peak: float, camera: Camera) -> np.ndarray:
    """Expected photons per voxel: the density scaled to ``peak`` at its 99.9th percentile, plus background."""
    scale = peak / np.percentile(density, camera.peak_percentile)
    return (density * scale + camera.background_fraction * peak).astype(np.float32)


def record(clean: np.ndarray, rng: np.random.Generator, camera: Camera) -> np.ndarray:
    """The camera's uint16 ADU of expected photons ``clean``: Poisson shot noise, gain, offset, read noise."""
    adu = camera.offset + camera.gain * rng.poisson(clean.astype(np.float64))
    adu = np.rint(adu + rng.normal(scale=camera.read_noise, size=clean.shape))
    if adu.min() < 0 or adu.max() > 65535:
        raise ValueError("ADU outside uint16: change the offset, gain or peak")  # never clip silently
    return adu.astype(np.uint16)


def _meta(dtype: type, camera: Camera) -> StackMeta:
    sizes = {"Z": (camera.pixel_z_um, "µm"), "Y": (camera.pixel_xy_um, "µm"), "X": (camera.pixel_xy_um, "µm")}
    return StackMeta("ZYX", np.dtype(dtype), sizes)


def _truth(camera: Camera, shape: tuple[int, ...], n_train: int, seed: int) -> dict[str, object]:
    a = camera.gain / 65535
    return {
        "camera": asdict(camera),
        "shape_zyx": list(shape),
        "train_volumes": n_train,
        "seed": seed,
        "levels": {
            name: {"peak_photons": peak, "background_photons": camera.background_fraction * peak}
            for name, peak in LEVELS.items()
        },
        "noise_in_unit_scale": {
            "model": "Var(u) = a * (E[u] - offset_u) + b_read, u = ADU / 65535",
            "a": a,
            "offset_u": camera.offset / 65535,
            "b_read": (camera.read_noise / 65535) ** 2,
            "as_a_x_plus_b": {"a": a, "b": (camera.read_noise / 65535) ** 2 - a * camera.offset / 65535},
        },
    }


def _check_out(out: Path) -> None:
    """Refuse an output inside the repository that git would track (generated data never goes into the repo)."""
    try:
        out.resolve().relative_to(ROOT)
    except ValueError:
        return
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(out.resolve())], check=False)
    if ignored.returncode != 0:
        raise SystemExit(
            f"--out {out}: inside the repository and not git-ignored; use outputs/... or a folder outside"
        )


def make_dataset(
    out: Path, shape: tuple[int, ...] = FULL_SHAPE, n_train: int = 4, seed: int = 0, camera: Camera = Camera()
) -> dict[str, object]:
    """Write the training volumes and the held-out one (noisy + clean) at both levels; return the truth."""
    _check_out(out)
    volume_seeds = np.random.SeedSequence(seed).spawn(n_train + 1)
    noisy_meta, clean_meta = _meta(np.uint16, camera), _meta(np.float32, camera)
    for level in LEVELS:
        for sub in ("train", "test"):
            (out / level / sub).mkdir(parents=True, exist_ok=True)
    # child 0 is the held-out volume, child 1 + i training volume i: each is the same whatever --train says
    for i, vseed in enumerate(volume_seeds):
        structure_seed, *level_seeds = vseed.spawn(1 + len(LEVELS))
        density = structures(shape, np.random.default_rng(structure_seed), camera)
        held_out = i == 0
        for (level, peak), lseed in zip(LEVELS.items(), level_seeds, strict=True):
            clean = photons(density, peak, camera)
            noisy = record(clean, np.random.default_rng(lseed), camera)
            folder = out / level / ("test" if held_out else "train")
            name = "heldout" if held_out else f"vol{i - 1:03d}"
            write_stack(folder / f"{name}.ome.tif", noisy, noisy_meta, overwrite=True)
            if held_out:
                write_stack(folder / f"{name}_clean.ome.tif", clean, clean_meta, overwrite=True)
    truth = _truth(camera, shape, n_train, seed)
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    return truth


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (outside the repo, or git-ignored)"
    )
    parser.add_argument(
        "--small", action="store_true", help=f"volumes of {SMALL_SHAPE} ZYX instead of {FULL_SHAPE}"
    )
    parser.add_argument("--train", type=int, default=4, help="training volumes (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return make_dataset(args.out, SMALL_SHAPE if args.small else FULL_SHAPE, args.train, args.seed)


if __name__ == "__main__":
    main()
