"""Short-budget recipes: what ``train.minutes=M`` on this machine buys with each training choice.

Why: the paper's schedule was made for 2M images; a user with ten CPU minutes sees a few hundred steps. This
benchmark trains Gaussian σ = 25 (known) on the 400 BSDS500 training photos for the same wall-clock budget with
one choice changed at a time (recipe, learning rate, crop size and batch, curriculum), and scores each on the 24
KODAK 256² centre crops with fixed noise (uint8 PSNR, ``eval.crop=256 eval.repeats=1``), so the rows compare what
a budget buys, not what a number of images buys. Runs are sequential and must have the machine to themselves:
a time budget turns any other load into fewer images.

    python bench/recipes.py --data ../shared/data --work outputs/bench-recipes --minutes 10 \\
        [--runs paper,short,short-lr2e-3] [overrides for every run ...]
    python bench/recipes.py --images 700 --parallel 2 --threads 1 --runs ...   # equal-time, any load

``--images N`` replaces the time budget by the images it buys on a quiet machine (N for 128² crops, scaled by
each run's pixel cost: 4× fewer 256² crops, 1/0.7 more with the 64²→128² curriculum), so runs can share a busy
machine, side by side, and still compare equal budgets; confirm the winner with a real ``train.minutes`` run.

Writes ``<work>/summary.json`` and ``<work>/summary.md``; each run lives in ``<work>/runs/<name>`` and a rerun
skips finished runs (delete a run's folder to redo it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]

#: One choice changed at a time against ``recipe=short``; ``paper`` is the paper's recipe at the same crops. The
#: last field is the cost of one image relative to a 128² crop (pixels), for ``--images`` (equal-time) runs.
RUNS: dict[str, tuple[str, list[str], float]] = {
    "paper": (
        "paper recipe: lr 3e-4, ramp-up 10%, 128²×2",
        ["recipe=paper", "data.crop_size=128", "data.batch_size=2", "trainer.precision=auto"],
        1.0,
    ),
    "short": ("recipe=short: lr 1e-3, ramp-up 2%, 128²×2", ["recipe=short"], 1.0),
    "short-lr5e-4": ("short, lr 5e-4", ["recipe=short", "optim.lr=5e-4"], 1.0),
    "short-lr2e-3": ("short, lr 2e-3", ["recipe=short", "optim.lr=2e-3"], 1.0),
    "short-128x4": ("short, 128²×4", ["recipe=short", "data.batch_size=4"], 1.0),
    "short-96x4": (
        "short, 96²×4",
        ["recipe=short", "data.crop_size=96", "data.batch_size=4"],
        (96 / 128) ** 2,
    ),
    "short-256x1": ("short, 256²×1", ["recipe=short", "data.crop_size=256", "data.batch_size=1"], 4.0),
    # 40% of the images at 64² (a quarter of the cost each), 60% at 128².
    "short-curriculum": (
        "recipe=short_curriculum: 64²×8 for 40%, then 128²×2",
        ["recipe=short_curriculum"],
        0.7,
    ),
}


def common_overrides(data: Path, run_dir: Path, length: list[str]) -> list[str]:
    """Everything but the recipe: the data, the run's length, a cheap validation, the KODAK crops at the end."""
    return [
        "data=folder",
        f"data.train_dir={data / 'train-bsds500-400'}",
        "data.in_memory=true",
        "data.val_count=1",
        "data.val_size=128",
        *length,
        "trainer.enable_progress_bar=false",
        "logger=csv",
        "example.enabled=false",
        "eval.sets=[kodak]",
        "eval.crop=256",
        "eval.repeats=1",
        f"eval.root={data}",
        f"hydra.run.dir={run_dir}",
    ]


def run_length(name: str, minutes: float, images: int | None) -> list[str]:
    """``train.minutes`` (the real thing: the machine to itself), or the images the same minutes buy at a
    measured quiet rate, scaled by the run's pixel cost (reproducible under any load, and runnable side by side)."""
    if images is None:
        return [f"train.minutes={minutes:g}"]
    return ["train.minutes=null", f"train.images={round(images / RUNS[name][2])}"]


def start(
    name: str, data: Path, work: Path, length: list[str], threads: int | None, extra: list[str]
) -> Job | None:
    """Start one run unless its ``metrics.json`` exists."""
    _, overrides, _ = RUNS[name]
    run_dir = work / "runs" / name
    if (run_dir / "metrics.json").is_file():
        return None
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        *overrides,
        *common_overrides(data, run_dir, length),
        *extra,
    ]
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd[1:])}", flush=True)
    log = open(run_dir.parent / f"{name}.log", "wb")  # closed by Job.finish()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return Job(name, proc, log, time.monotonic())


@dataclass
class Job:
    name: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    started: float

    def finish(self) -> float:
        """Wait; the wall minutes it took (raises if the run failed: its log says why)."""
        code = self.proc.wait()
        self.log.close()
        if code:
            raise SystemExit(f"{self.name} failed (exit {code}); see its log")
        return (time.monotonic() - self.started) / 60


def row(name: str, work: Path, wall: float | None) -> dict[str, object]:
    metrics = json.loads((work / "runs" / name / "metrics.json").read_text())
    return {
        "run": name,
        "what": RUNS[name][0],
        "images": metrics.get("images_seen"),
        "kodak_psnr": metrics.get("test/kodak/psnr"),
        "kodak_psnr_noisy": metrics.get("test/kodak/psnr_noisy"),
        "wall_minutes": wall,
    }


def run_all(names: list[str], args: argparse.Namespace) -> list[dict[str, object]]:
    """Up to ``--parallel`` runs at once, in the order given."""
    walls: dict[str, float | None] = {n: None for n in names}
    queue, running = list(names), list[Job]()
    while queue or running:
        while queue and len(running) < args.parallel:
            name = queue.pop(0)
            job = start(
                name,
                args.data,
                args.work,
                run_length(name, args.minutes, args.images),
                args.threads,
                args.overrides,
            )
            if job:
                running.append(job)
        if running:
            done = next((j for j in running if j.proc.poll() is not None), None)
            if done is None:
                time.sleep(2)
                continue
            walls[done.name] = done.finish()
            running.remove(done)
    return [row(n, args.work, walls[n]) for n in names]


def write_summary(rows: list[dict[str, object]], work: Path, length: str) -> None:
    (work / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        f"| run ({length}, train-bsds500-400) | images | KODAK 256² dB | noisy dB | wall min |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        wall = "" if r["wall_minutes"] is None else f"{r['wall_minutes']:.2f}"
        psnr, noisy = r["kodak_psnr"], r["kodak_psnr_noisy"]
        if isinstance(psnr, float) and isinstance(noisy, float):
            psnr, noisy = f"{psnr:.2f}", f"{noisy:.2f}"
        lines.append(f"| {r['what']} | {r['images']} | {psnr} | {noisy} | {wall} |")
    (work / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench-recipes")
    p.add_argument("--minutes", type=float, default=10.0, help="the budget each run gets (train.minutes)")
    p.add_argument(
        "--images",
        type=int,
        default=None,
        help="instead of train.minutes: the 128² images the budget buys on a quiet machine (scaled per run)",
    )
    p.add_argument("--parallel", type=int, default=1, help="runs at once (only with --images)")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS per run")
    p.add_argument("--runs", default="paper,short", help=f"comma-separated, from: {', '.join(RUNS)}")
    p.add_argument("overrides", nargs="*", help="extra training overrides for every run")
    args = p.parse_args()
    names = [n for n in args.runs.split(",") if n]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        p.error(f"unknown run(s) {', '.join(unknown)}; choose from {', '.join(RUNS)}")
    if args.parallel > 1 and args.images is None:
        p.error("--parallel needs --images: time-budgeted runs side by side would share the budget's CPU")
    if not (args.data / "train-bsds500-400").is_dir():
        p.error(f"no training photos under {args.data / 'train-bsds500-400'}; pass --data")
    length = (
        f"train.minutes={args.minutes:g}"
        if args.images is None
        else f"{args.minutes:g} min ≈ {args.images} 128² images"
    )
    write_summary(run_all(names, args), args.work, length)


if __name__ == "__main__":
    main()
