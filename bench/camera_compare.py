"""The camera-noise comparison of issue 27: each remedy for correlated noise, trained on noisy photos alone.

Why: a blind-spot net trained on camera photos learns to hand the demosaicing's correlated noise back. This
trains each configuration on the noisy training photos of one level of a ``bench/camera.py build`` set, with
nothing clean, denoises the noisy test crops with ``python -m ssdn.denoise`` and scores them against the clean
references (``ssdn.eval.metrics.psnr``, mean over images), beside CBM3D at the σ that suits it best:

    python bench/camera_compare.py --set outputs/bench-camera --level iso1600 --minutes 20 \\
        --out outputs/camera-compare [--configs plain,hole3,...] [--best "method.blind_hole=3 method.pd_stride=2"]
    python bench/camera_compare.py --set /tmp/cam --level iso1600 --images 64 --test-images 4 ...   # smoke

CBM3D runs one crop at a time; ``--workers N`` spreads the crops over N spawned processes.

Configurations (``--configs``): ``plain`` (method=ssdn, hole 1, stride 1), ``hole3``, ``hole5``
(``method.blind_hole``), ``hole3-infer1`` (the hole3 model denoised with ``--blind-hole 1``), ``pd5``
(``method.pd_stride=5 method.pd_stride_infer=2``), ``pd5-r3`` (the same model, denoised with R³: ``--r3-passes
8``), ``best`` (``--best``'s overrides), ``best-r3`` (the best model denoised with ``--best-r3-passes`` R³
passes, default 8), ``n2v-dense`` (``method=n2v_random_dense optim.lr=3e-4``: recipe=short's 1e-3 diverged for
it), every ssdn row with ``-ch`` appended (``plain-ch``, ``hole3-ch``, …: the same with
``noise=gaussian_channels``, noise correlated across R, G, B) and ``cbm3d`` (no training: every σ of
``--cbm3d-sigmas`` on the test crops, plus the σ Chen et al. estimate per image and the one
``ssdn.noise.correlation`` estimates for the set). For the posterior configurations (ssdn without R³) the
posterior std's coverage is measured: the share of pixel values with |posterior mean − clean| ≤ σ and ≤ 2σ
(68.3% / 95.4% for an honest Gaussian posterior).

Each training is ``python train.py`` in a subprocess (printed, logged to ``OUT/runs/NAME.log``) into
``OUT/runs/NAME``; the denoised crops go to ``OUT/denoised/CONFIG`` and each result to
``OUT/results/CONFIG.json``; ``OUT/summary.md`` / ``summary.json`` hold the table. A rerun reuses every
finished training, denoised image and result, so a long comparison can be stopped and continued; a run folder
trained with another budget or other overrides is refused.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ssdn.data.io import list_images, load_image  # noqa: E402
from ssdn.errors import UserError, exit_on_user_error  # noqa: E402
from ssdn.utils import atomic_write_json, atomic_write_text  # noqa: E402

PROG = "bench/camera_compare.py"
DEFAULT_BEST = "method.blind_hole=3 method.pd_stride=2"
DEFAULT_SIGMAS = "10,15,20,25,30,35,40"
CHANNELS_SUFFIX = "-ch"
GAUSS_WITHIN = (0.683, 0.954)
"""The share of a Gaussian's mass within 1σ and 2σ of its mean: what an honest posterior std covers."""


@dataclass(frozen=True)
class Config:
    """One row: the training run it uses (shared by rows that differ only at inference) and how it denoises."""

    name: str
    what: str
    run: str
    overrides: tuple[str, ...]
    r3_passes: int = 0
    #: ``python -m ssdn.denoise --blind-hole``: the blind square at inference (None: the training one)
    infer_hole: int | None = None

    @property
    def posterior(self) -> bool:
        """ssdn's prior methods report a posterior (std); R³ averages prior means, which have none."""
        return (
            not any(o.startswith("method=") and o != "method=ssdn" for o in self.overrides)
            and not self.r3_passes
        )


def configs(best: str, best_r3: int) -> dict[str, Config]:
    pd5 = ("method=ssdn", "method.pd_stride=5", "method.pd_stride_infer=2")
    rows = [
        Config("plain", "blind spot, hole 1, stride 1", "plain", ("method=ssdn",)),
        Config("hole3", "method.blind_hole=3", "hole3", ("method=ssdn", "method.blind_hole=3")),
        Config(
            "hole3-infer1",
            "method.blind_hole=3, denoised with --blind-hole 1",
            "hole3",
            ("method=ssdn", "method.blind_hole=3"),
            infer_hole=1,
        ),
        Config("hole5", "method.blind_hole=5", "hole5", ("method=ssdn", "method.blind_hole=5")),
        Config("pd5", "pd_stride 5, infer 2", "pd5", pd5),
        Config("pd5-r3", "pd_stride 5, infer 2, R³ 8 passes", "pd5", pd5, r3_passes=8),
        Config("best", best, "best", ("method=ssdn", *shlex.split(best))),
        Config(
            "best-r3",
            f"{best}, R³ {best_r3} passes",
            "best",
            ("method=ssdn", *shlex.split(best)),
            r3_passes=best_r3,
        ),
        # recipe=short's lr 1e-3 diverged for the masking baseline on these photos (bench/README.md)
        Config(
            "n2v-dense",
            "method=n2v_random_dense optim.lr=3e-4",
            "n2v-dense",
            ("method=n2v_random_dense", "optim.lr=3e-4"),
        ),
    ]
    # Each ssdn row again with the channel-correlated noise model (camera noise is correlated across R, G, B).
    rows += [
        Config(
            f"{c.name}{CHANNELS_SUFFIX}",
            f"{c.what}, noise=gaussian_channels",
            f"{c.run}{CHANNELS_SUFFIX}",
            (*c.overrides, "noise=gaussian_channels"),
            c.r3_passes,
            c.infer_hole,
        )
        for c in rows
        if c.overrides[0] == "method=ssdn"
    ]
    return {c.name: c for c in rows}


# ---------------------------------------------------------------------------------------------- scoring


def coverage_counts(pme: np.ndarray, clean: np.ndarray, std: np.ndarray) -> tuple[int, int, int]:
    """(values with |pme − clean| ≤ std, ≤ 2·std, all values), in float64 on arrays of one shape and units."""
    if not pme.shape == clean.shape == std.shape:
        raise ValueError(f"shapes differ: pme {pme.shape}, clean {clean.shape}, std {std.shape}")
    err = np.abs(pme.astype(np.float64) - clean.astype(np.float64))
    s = std.astype(np.float64)
    return int((err <= s).sum()), int((err <= 2 * s).sum()), int(err.size)


def psnr_of(pred: np.ndarray, clean: np.ndarray) -> float:
    """The project's PSNR (ssdn.eval.metrics: quantised 8-bit, float64) of two (H, W, C) images."""
    import torch

    from ssdn.eval.metrics import psnr

    def tensor(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)
        return t if t.dtype == torch.uint8 else t.to(torch.float64)

    return float(psnr(tensor(pred), tensor(clean))[0])


def mean_psnr(values: Sequence[float]) -> float:
    from ssdn.eval.metrics import mean_psnr as mean

    return mean(values)


# ---------------------------------------------------------------------------------------------- the set


@dataclass(frozen=True)
class CameraSet:
    """One level of a built camera set: noisy training photos, noisy and clean test crops (first ``limit``)."""

    train: Path
    noisy: list[Path]
    clean: list[Path]

    @classmethod
    def open(cls, root: Path, level: str, limit: int | None) -> CameraSet:
        base = root / level
        folders = [base / "train" / "noisy", base / "test" / "noisy", base / "test" / "clean"]
        for folder in folders:
            if not folder.is_dir():
                raise UserError(
                    f"--set {root} --level {level}: {folder} is missing; build the set first "
                    "(python bench/camera.py build --out ...)"
                )
        noisy = list_images(folders[1])
        missing = [p.name for p in noisy if not (folders[2] / p.name).is_file()]
        if missing or not noisy:
            raise UserError(f"--set: {folders[2]} lacks clean references for {missing[:3] or 'any crop'}")
        noisy = noisy[:limit] if limit else noisy
        return cls(folders[0], noisy, [folders[2] / p.name for p in noisy])

    def noisy_psnr(self) -> float:
        return mean_psnr(
            [psnr_of(load_image(n), load_image(c)) for n, c in zip(self.noisy, self.clean, strict=True)]
        )


# ---------------------------------------------------------------------------------------------- training


def budget_overrides(minutes: float | None, images: int | None) -> list[str]:
    if images is not None:
        return ["train.minutes=null", f"train.images={images}"]
    return [f"train.minutes={minutes:g}"]


def train_command(
    cfg: Config, cam: CameraSet, run_dir: Path, budget: list[str], extra: Sequence[str]
) -> list[str]:
    """``python train.py`` on the noisy photos alone, as README's "Denoise your own noisy images" says."""
    return [
        sys.executable,
        str(ROOT / "train.py"),
        *cfg.overrides,
        "data=folder",
        f"data.train_dir={cam.train}",
        "data.add_noise=false",
        "data.val_dir=null",
        "data.val_size=128",
        "data.num_workers=0",
        "noise_params=sigma_global",
        "recipe=short",
        *budget,
        "logger=csv",
        "example.enabled=false",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
        "resume=auto",
        *extra,
    ]


def _env(threads: int | None) -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _run(cmd: list[str], log: Path, threads: int | None) -> float:
    """Run a printed command, its output to ``log``; the wall seconds (a failure names the log)."""
    print(f"[{time.strftime('%H:%M:%S')}] {shlex.join(cmd)}", flush=True)
    start = time.monotonic()
    with log.open("ab") as fh:
        code = subprocess.run(
            cmd, cwd=ROOT, env=_env(threads), stdout=fh, stderr=subprocess.STDOUT
        ).returncode
    if code:
        raise SystemExit(f"{PROG}: exit {code} from {cmd[1]}: see {log}")
    return time.monotonic() - start


def train(
    cfg: Config, cam: CameraSet, out: Path, budget: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """Train ``cfg.run`` unless finished with the same command; its metrics.json plus the wall time."""
    run_dir = out / "runs" / cfg.run
    cmd = train_command(cfg, cam, run_dir, budget, args.overrides)
    stamp = run_dir / "camera_compare.json"
    key = cmd[2:]
    if stamp.is_file() and json.loads(stamp.read_text())["command"] != key:
        raise UserError(
            f"{run_dir} was trained with another budget or other overrides ({stamp}); give another --out or "
            "delete that run folder"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp, {"command": key})
    metrics_file = run_dir / "metrics.json"
    wall = None
    if not metrics_file.is_file():
        wall = _run(cmd, out / "runs" / f"{cfg.run}.log", args.threads)
    return {**json.loads(metrics_file.read_text()), "train_wall_s": wall}


def denoise(cfg: Config, cam: CameraSet, out: Path, threads: int | None) -> Path:
    """``python -m ssdn.denoise`` of the test crops (with the std for posterior rows); resumes what exists."""
    dest = out / "denoised" / cfg.name
    cmd = [
        sys.executable,
        "-m",
        "ssdn.denoise",
        str(out / "runs" / cfg.run / "checkpoints" / "last.ckpt"),
        *map(str, cam.noisy),
        "--out",
        str(dest),
        "--skip-existing",
    ]
    if cfg.posterior:
        cmd.append("--uncertainty")
    if cfg.r3_passes:
        cmd += ["--r3-passes", str(cfg.r3_passes)]
    if cfg.infer_hole is not None:
        cmd += ["--blind-hole", str(cfg.infer_hole)]
    dest.mkdir(parents=True, exist_ok=True)
    _run(cmd, out / "denoised" / f"{cfg.name}.log", threads)
    return dest


def score(cfg: Config, cam: CameraSet, dest: Path) -> dict[str, Any]:
    """Mean PSNR over the test crops and, for posterior rows, the pooled coverage of the posterior std."""
    import tifffile

    values, hits1, hits2, total = [], 0, 0, 0
    for noisy, clean_path in zip(cam.noisy, cam.clean, strict=True):
        pme, clean = load_image(dest / f"{noisy.stem}.png"), load_image(clean_path)
        values.append(psnr_of(pme, clean))
        if cfg.posterior:
            std = np.asarray(tifffile.imread(dest / f"{noisy.stem}.std.tif"))
            c1, c2, n = coverage_counts(pme, clean, std.reshape(pme.shape))
            hits1, hits2, total = hits1 + c1, hits2 + c2, total + n
    result: dict[str, Any] = {"psnr": mean_psnr(values), "psnr_per_image": values}
    if total:
        result["coverage_1sigma"], result["coverage_2sigma"] = hits1 / total, hits2 / total
    return result


# ---------------------------------------------------------------------------------------------- CBM3D


def _cbm3d_psnr(noisy: np.ndarray, clean: np.ndarray, sigma: float) -> float:
    """PSNR of CBM3D at ``sigma`` (8-bit units) on one uint8 crop (a worker process's task)."""
    from ssdn.baselines.cbm3d import bm3d_denoise

    return psnr_of(bm3d_denoise(noisy.astype(np.float64) / 255.0, sigma / 255.0), clean)


def cbm3d(cam: CameraSet, out: Path, sigmas: list[float], workers: int) -> dict[str, Any]:
    """CBM3D on the test crops at each σ (8-bit units) of the grid, at Chen et al.'s per-image estimate and at
    the set's σ from ``ssdn.noise.correlation``; each level's result is kept in OUT/results/cbm3d.json as soon
    as it is done, so a rerun continues."""
    import torch

    from ssdn.baselines.cbm3d import require_bm3d
    from ssdn.noise.correlation import estimate_correlation
    from ssdn.noise.estimate import estimate_sigma

    require_bm3d()
    path = out / "results" / "cbm3d.json"
    names = [p.name for p in cam.noisy]
    done: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if done.get("images") != names:
        done = {"images": names, "levels": {}}
    noisy = [load_image(p) for p in cam.noisy]
    clean = [load_image(p) for p in cam.clean]
    chen = [estimate_sigma(torch.from_numpy(x).permute(2, 0, 1).float() / 255.0) * 255.0 for x in noisy]
    diag = estimate_correlation(noisy).sigma
    levels: dict[str, list[float]] = {f"{s:g}": [s] * len(noisy) for s in sigmas}
    levels["chen"], levels["diagnostic"] = chen, [diag] * len(noisy)
    for key, per_image in levels.items():
        if key in done["levels"]:
            continue
        start = time.monotonic()
        if workers > 1:  # spawned: a forked child of a process that ran torch can hang in OpenMP
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                values = list(pool.map(_cbm3d_psnr, noisy, clean, per_image))
        else:
            values = list(map(_cbm3d_psnr, noisy, clean, per_image))
        done["levels"][key] = {
            "sigma_mean": float(np.mean(per_image)),
            "psnr": mean_psnr(values),
            "seconds": round(time.monotonic() - start, 1),
        }
        print(f"CBM3D σ {key} ({np.mean(per_image):.2f}): {done['levels'][key]['psnr']:.2f} dB", flush=True)
        atomic_write_json(path, done)
    grid = {k: v for k, v in done["levels"].items() if k not in ("chen", "diagnostic")}
    best = max(grid, key=lambda k: grid[k]["psnr"])
    return {**done, "best": best}


# ---------------------------------------------------------------------------------------------- table


HEADER = (
    "| configuration | what | images seen | train min | PSNR dB | Δ noisy | learned σ (8-bit) | ≤1σ (68.3%) | "
    "≤2σ (95.4%) |\n|---|---|---|---|---|---|---|---|---|"
)


def _pct(v: object) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, float) else "–"


def _level(level: object) -> str:
    """A learned level in 8-bit units: one σ, or the named parameters of a multi-parameter model."""
    if isinstance(level, float):
        return f"{level:.2f}"
    if isinstance(level, dict):
        return ", ".join(f"{k.removeprefix('sigma_')} {v:.1f}" for k, v in level.items())
    return "–"


def table_row(r: dict[str, Any], noisy: float) -> str:
    if r["config"] == "cbm3d":
        lv = r["levels"]
        best = lv[r["best"]]
        what = (
            f"best σ {r['best']}: {best['psnr']:.2f}; Chen σ≈{lv['chen']['sigma_mean']:.1f}: "
            f"{lv['chen']['psnr']:.2f}; diagnostic σ {lv['diagnostic']['sigma_mean']:.1f}: "
            f"{lv['diagnostic']['psnr']:.2f}"
        )
        return f"| cbm3d | {what} | – | – | {best['psnr']:.2f} | {best['psnr'] - noisy:+.2f} | – | – | – |"
    wall = r.get("train_wall_s")
    level = r.get("noise_level")
    return (
        f"| {r['config']} | {r['what']} | {r.get('images_seen', '–')} | "
        f"{'–' if wall is None else f'{wall / 60:.1f}'} | {r['psnr']:.2f} | {r['psnr'] - noisy:+.2f} | "
        f"{_level(level)} | {_pct(r.get('coverage_1sigma'))} | "
        f"{_pct(r.get('coverage_2sigma'))} |"
    )


def compare(args: argparse.Namespace) -> list[dict[str, Any]]:
    cam = CameraSet.open(args.set, args.level, args.test_images)
    table = configs(args.best, args.best_r3_passes)
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in table and n != "cbm3d"]
    if unknown:
        raise UserError(
            f"--configs: unknown {', '.join(unknown)}; choose from {', '.join([*table, 'cbm3d'])}"
        )
    out: Path = args.out
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(exist_ok=True)
    (out / "denoised").mkdir(exist_ok=True)
    budget = budget_overrides(args.minutes, args.images)
    try:
        sigmas = [float(s) for s in args.cbm3d_sigmas.split(",")]
    except ValueError:
        raise UserError(f"--cbm3d-sigmas={args.cbm3d_sigmas}: give numbers, e.g. {DEFAULT_SIGMAS}") from None
    noisy = cam.noisy_psnr()
    rows: list[dict[str, Any]] = []
    for name in names:
        path = out / "results" / f"{name}.json"
        if name == "cbm3d":
            row = {"config": "cbm3d", **cbm3d(cam, out, sigmas, args.workers)}
        elif path.is_file():
            row = json.loads(path.read_text())
        else:
            cfg = table[name]
            metrics = train(cfg, cam, out, budget, args)
            dest = denoise(cfg, cam, out, args.threads)
            row = {
                "config": name,
                "what": cfg.what,
                "level": args.level,
                "budget": budget,
                "overrides": list(cfg.overrides),
                "r3_passes": cfg.r3_passes,
                "test_images": len(cam.noisy),
                "psnr_noisy": noisy,
                "images_seen": metrics.get("images_seen"),
                "noise_level": metrics.get("noise_level"),
                "train_wall_s": metrics["train_wall_s"],
                **score(cfg, cam, dest),
            }
        atomic_write_json(path, row)
        rows.append(row)
        print(table_row(row, noisy), flush=True)
    title = (
        f"{args.level}, {len(cam.noisy)} test crops, noisy input {noisy:.2f} dB, budget {' '.join(budget)}"
    )
    lines = [title, "", HEADER, *(table_row(r, noisy) for r in rows)]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "summary.json", {"noisy_psnr": noisy, "rows": rows})
    print("\n".join(lines))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--set", type=Path, required=True, help="a bench/camera.py build folder")
    p.add_argument("--level", required=True, help="its level, e.g. iso1600 or iso6400")
    p.add_argument("--out", type=Path, required=True, help="the comparison's folder (reused when rerun)")
    length = p.add_mutually_exclusive_group(required=True)
    length.add_argument(
        "--minutes",
        type=float,
        help="train.minutes per training: wall time, so the machine must run nothing else meanwhile",
    )
    length.add_argument(
        "--images", type=int, help="train.images per training: a fair budget on a shared machine"
    )
    p.add_argument(
        "--configs",
        default="plain,hole3,hole3-infer1,hole5,pd5,pd5-r3,best,best-r3,n2v-dense,cbm3d",
        help="comma-separated rows, in order (default: all)",
    )
    p.add_argument(
        "--best", default=DEFAULT_BEST, help=f"overrides of the 'best' row (default {DEFAULT_BEST!r})"
    )
    p.add_argument("--best-r3-passes", type=int, default=8, help="R³ passes of the 'best-r3' row (default 8)")
    p.add_argument("--test-images", type=int, default=None, help="score the first N test crops only (smoke)")
    p.add_argument("--cbm3d-sigmas", default=DEFAULT_SIGMAS, help="CBM3D's σ grid, 8-bit units")
    p.add_argument("--workers", type=int, default=1, help="CBM3D processes, one crop each (default 1)")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of each subprocess")
    p.add_argument("--debug", action="store_true", help="show tracebacks of usage errors")
    p.add_argument("overrides", nargs="*", help="extra train.py overrides for every training")
    args = p.parse_args(argv)
    if (args.images is not None and args.images < 1) or (args.minutes is not None and args.minutes <= 0):
        p.error("--images / --minutes must be positive")
    if args.best_r3_passes < 1:
        p.error("--best-r3-passes must be positive (the 'best' row is the same model without R³)")
    with exit_on_user_error(PROG, args.debug):
        compare(args)


if __name__ == "__main__":
    main()
