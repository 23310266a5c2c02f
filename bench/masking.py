"""Do the masking baselines learn? Masking recipes against the blind-spot net under one budget counted in steps.

Why: issue 21 found the paper's masking settings (64 masked pixels per 256² crop, lr 3e-4) near the noisy input
after ten CPU minutes. This trains each recipe of `RUNS` on the 400 BSDS500 training photos with fresh Gaussian
noise (σ = 25, known), random 64² crops in minibatches of 4, and scores the EMA of the weights (and, at the end,
the raw weights) on the 24 KODAK 256² centre crops with one fixed noise draw (seed 0), uint8 PSNR. Budgets are
steps, not minutes, because this 2-core CPU is shared; the CPU minutes of each run are recorded beside them.

    python bench/masking.py --data ../shared/data --work outputs/bench-masking [--runs a,b] [--threads 1]

Each run is written as a job folder the report reads (``.hydra/config.yaml``, ``csv/metrics.csv`` with the EMA's
PSNR against images seen, ``results.json``, ``metrics.json``), so ``python -m ssdn.report <work> --out R`` draws
the Figure 3 plot; ``<work>/summary.md`` is the table. Finished runs are skipped when rerun.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from ssdn.eval.metrics import psnr
from ssdn.methods import StepBatch
from ssdn.methods.schedule import learning_rate
from ssdn.training.ema import ema_decay
from ssdn.training.module import DenoiserModule
from ssdn.utils import atomic_write_json, atomic_write_text

CROP, BATCH, TEST_CROP, SIGMA = 64, 4, 256, 25.0
EMA_DECAY = 0.999


@dataclass(frozen=True)
class Run:
    """One training run: a method config (``conf/method/*.yaml`` keys), its learning rate and length."""

    name: str
    method: dict[str, Any]
    lr: float = 3e-4
    steps: int = 800
    evals: tuple[int, ...] = (100, 200, 400, 800)
    rampdown: float = 0.0  # the masking runs' EMA replaces the ramp-down (App. A)
    experiment: str | None = None  # figure3/<row> for the Figure 3 plot
    notes: dict[str, Any] = field(default_factory=dict)


def _masking(strategy: str, cell: int, objective: str = "mean") -> dict[str, Any]:
    return {
        "name": f"n2v_{strategy}",
        "tag": f"masking_{strategy}",
        "blindspot": False,
        "objective": objective,
        "masking": strategy,
        "mask_cell": cell,
    }


BLINDSPOT = {"name": "ssdn", "tag": "blindspot", "blindspot": True, "objective": "prior"}
FIG3 = {
    "steps": 300,
    "evals": (100, 200, 300),
}  # 4× the blind-spot run's minibatches: cost 1 on Figure 3's axis
TABLE = {"steps": 200, "evals": (100, 200)}
# The paper's density: one masked pixel per 32² cell (64 per 256² crop, 4 per 64² crop).
RUNS = {
    r.name: r
    for r in (
        Run("blindspot", BLINDSPOT, steps=75, evals=(25, 50, 75), experiment="figure3/blindspot"),
        Run("random-paper-mean", _masking("random", 32), experiment="figure3/random-mean"),
        Run("random-paper-pme", _masking("random", 32, "prior"), experiment="figure3/random-pme", **FIG3),
        Run("copy-paper-pme", _masking("copy", 32, "prior"), experiment="figure3/copy-pme", **FIG3),
        Run("copy-paper-mean", _masking("copy", 32), experiment="figure3/copy-mean", **FIG3),
        Run("random-cell4-lr1e-3", _masking("random", 4), lr=1e-3),  # = method=n2v_random_dense
        Run("random-cell4", _masking("random", 4), **TABLE),
        Run("copy-cell4-lr1e-3", _masking("copy", 4), lr=1e-3, **TABLE),
        Run("random-cell8-lr1e-3", _masking("random", 8), lr=1e-3, **TABLE),
        Run("random-cell4-lr1e-3-pme", _masking("random", 4, "prior"), lr=1e-3, **TABLE),
    )
}


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def load_data(root: Path) -> tuple[list[np.ndarray], torch.Tensor]:
    """The 400 training photos (uint8 HWC) and the 24 clean KODAK centre crops (24,3,256,256) in [0, 1]."""
    train = sorted((root / "train-bsds500-400").glob("*.jpg"))
    kodak = sorted((root / "kodak").glob("*.png"))
    if len(train) != 400 or len(kodak) != 24:
        raise SystemExit(f"bench/masking.py: expected 400 BSDS500 photos and 24 KODAK images under {root}")
    crops = []
    for path in kodak:
        x = _rgb(path)
        top, left = (x.shape[0] - TEST_CROP) // 2, (x.shape[1] - TEST_CROP) // 2
        crops.append(x[top : top + TEST_CROP, left : left + TEST_CROP])
    clean = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0
    return [_rgb(p) for p in train], clean


def random_crops(photos: list[np.ndarray], rng: np.random.Generator) -> torch.Tensor:
    out = np.empty((BATCH, CROP, CROP, 3), np.uint8)
    for i in range(BATCH):
        x = photos[rng.integers(len(photos))]
        top, left = rng.integers(x.shape[0] - CROP + 1), rng.integers(x.shape[1] - CROP + 1)
        out[i] = x[top : top + CROP, left : left + CROP]
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0


def config(run: Run) -> dict[str, Any]:
    """The run config the module is built from (also written as the job's ``.hydra/config.yaml``)."""
    return {
        "run": {"name": run.name, "group": "figure3-small"},
        "noise": {"name": "gaussian", "value": SIGMA},
        "method": run.method,
        "noise_params": {"source": "known", "tag": "sigma_known"},
        "optim": {"lr": run.lr, "betas": [0.9, 0.99], "eps": 1e-8},
        "schedule": {"rampup": 0.1, "rampdown": run.rampdown},
        "train": {"images": run.steps * BATCH},
        "data": {"batch_size": BATCH, "crop_size": CROP},
        "ema": {"enabled": True, "decay": EMA_DECAY},
        "channels": 3,
        "seed": 0,
        "channels_last": False,
    }


@torch.no_grad()
def score(module: DenoiserModule, clean: torch.Tensor, noisy: torch.Tensor, params: torch.Tensor) -> float:
    """Mean uint8 PSNR of the reported output over the test crops."""
    values = []
    for i in range(0, len(clean), 4):
        out = module.method.denoise(module, module.noise, noisy[i : i + 4], params[i : i + 4])
        values.append(psnr(next(iter(out.values())), clean[i : i + 4]))
    return float(torch.cat(values).mean())


def train(run: Run, photos: list[np.ndarray], clean: torch.Tensor, job: Path) -> dict[str, Any]:
    """Train one run; write its job folder; return its summary row."""
    cfg = config(run)
    torch.manual_seed(0)
    module = DenoiserModule(cfg)
    noise = module.noise
    test_gen = torch.Generator().manual_seed(0)
    test_params = noise.sample_params(len(clean), test_gen)
    test_noisy = noise.corrupt(clean, test_params, test_gen)
    opt = module.configure_optimizers()
    ema = copy.deepcopy(module)
    gen, rng = torch.Generator().manual_seed(1), np.random.default_rng(1)
    total = run.steps * BATCH
    row: dict[str, Any] = {
        "run": run.name,
        "masking": run.method.get("masking") or "blind-spot",
        "objective": run.method["objective"],
        "mask_cell": run.method.get("mask_cell"),
        "masked_per_step": BATCH * (CROP // run.method["mask_cell"]) ** 2
        if run.method.get("masking")
        else None,
        "lr": run.lr,
        "steps": run.steps,
        "psnr_raw": None,
        "noisy": float(psnr(test_noisy, clean).mean()),
        "curve": [],
    }
    start = time.process_time()
    for step in range(run.steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step * BATCH, total, run.lr, rampup=0.1, rampdown=run.rampdown)
        x = random_crops(photos, rng)
        params = noise.sample_params(BATCH, gen)
        batch = StepBatch(x, noise.corrupt(x, params, gen), params, gen, step / run.steps)
        loss, _ = module.method.training_loss(module, noise, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        d = 0.0 if step == 0 else float(ema_decay(EMA_DECAY, torch.tensor(float(step))))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), module.parameters(), strict=True):
                pe.mul_(d).add_(p, alpha=1.0 - d)
        if step + 1 in run.evals:
            row["curve"].append((step, (step + 1) * BATCH, score(ema, clean, test_noisy, test_params)))
            row |= {"psnr_ema": row["curve"][-1][2], "cpu_min": (time.process_time() - start) / 60}
            print(f"{run.name}: step {step + 1}: EMA {row['psnr_ema']:.2f} dB", flush=True)
            write_job(run, cfg, job, row, done=False)  # a run stopped early keeps its curve so far
    row["psnr_raw"] = score(module, clean, test_noisy, test_params)
    row["cpu_min"] = (time.process_time() - start) / 60
    write_job(run, cfg, job, row, done=True)
    return row


def write_job(run: Run, cfg: dict[str, Any], job: Path, row: dict[str, Any], done: bool) -> None:
    """A folder ``ssdn.report`` reads like a training run's (the EMA curve as its validation PSNR);
    ``results.json`` only once the run is done, ``partial.json`` before."""
    hydra = job / ".hydra"
    hydra.mkdir(parents=True, exist_ok=True)
    atomic_write_text(hydra / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    choices = {"experiment": run.experiment} if run.experiment else {}
    atomic_write_text(hydra / "hydra.yaml", yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    lines = ["step,train/images_seen,val/psnr"] + [f"{s},{n},{p}" for s, n, p in row["curve"]]
    (job / "csv").mkdir(exist_ok=True)
    atomic_write_text(job / "csv" / "metrics.csv", "\n".join(lines) + "\n")
    key = "pme" if run.method["objective"] == "prior" else "out"
    protocol = {"crop": TEST_CROP, "repeats": 1, "pad_mode": "authors"}
    sets = {"kodak": {"psnr": {key: row["psnr_ema"]}, "reported": key, "protocol": protocol}}
    images = row["curve"][-1][1]
    atomic_write_json(job / "metrics.json", {"images_seen": images, "cpu_min": row["cpu_min"]})
    atomic_write_json(job / ("results.json" if done else "partial.json"), {"sets": sets, "bench": row})


def _db(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def summary(rows: list[dict[str, Any]]) -> str:
    head = "| run | masking | objective | masked px/step | lr | steps | EMA PSNR | raw PSNR | CPU min |"
    out = [head, "|" + "---|" * 9]
    for r in rows:
        out.append(
            f"| {r['run']} | {r['masking']} | {r['objective']} | {r['masked_per_step'] or 'all'} | {r['lr']:g} | "
            f"{r['curve'][-1][0] + 1} | {r['psnr_ema']:.2f} | {_db(r['psnr_raw'])} | {r['cpu_min']:.1f} |"
        )
    if rows:
        out.append(f"\nnoisy input: {rows[0]['noisy']:.2f} dB")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("SSDN_DATA_ROOT", "../shared/data")))
    p.add_argument("--work", type=Path, default=Path("outputs/bench-masking"))
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of: {', '.join(RUNS)}")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    unknown = set(args.runs.split(",")) - set(RUNS)
    if unknown:
        p.error(f"unknown runs {sorted(unknown)}; valid: {', '.join(RUNS)}")
    torch.set_num_threads(args.threads)
    photos, clean = load_data(args.data)
    for name in args.runs.split(","):
        job = args.work / "runs" / name
        if not (job / "results.json").is_file():
            train(RUNS[name], photos, clean, job)
    rows = []  # finished runs, then those stopped early (their last evaluated step)
    for name in RUNS:
        found = [args.work / "runs" / name / f for f in ("results.json", "partial.json")]
        if path := next((f for f in found if f.is_file()), None):
            rows.append(json.loads(path.read_text())["bench"])
    atomic_write_text(args.work / "summary.md", summary(rows))
    atomic_write_json(args.work / "summary.json", rows)
    print(summary(rows))


if __name__ == "__main__":
    main()
