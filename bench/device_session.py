"""One command for a lent GPU: everything worth measuring in about 8 minutes, written under ``--out``.

    python bench/device_session.py --out results/gpu-session        # on the GPU machine, first thing
    python bench/device_session.py --out /tmp/dry --dry-run         # the same steps on a CPU with tiny sizes

Steps (each timed; a failing step is recorded and the session goes on):

1. ``env``: GPU, driver, torch, CUDA capability; the ``gpu``-marked tests (``pytest -m gpu``);
2. ``bench_nets``: train-step speed at 256², batch 4 of the blind-spot and baseline nets in fp32, bf16 +
   channels_last, and bf16 through ``torch.compile``; ``bench_crops``: crops/s from a packed set of the
   training images (packed here first; the training run reads the same set);
3. ``train``: ``experiment=table1/gauss25-blindspot-sigma_known`` at the paper's settings (256² crops, batch 4,
   Adam, the paper's schedule compressed by ``train.minutes``), then KODAK ×1 in fp32: PSNR, images seen,
   images/s, the checkpoint;
4. ``summary.json`` and ``summary.md`` (a table to paste into a note).

``--dry-run`` runs every step on the CPU with tiny sizes and a few synthetic training images, so that the
script is exercised by the test suite (``tests/test_device_session.py``) and cannot rot before a GPU comes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ssdn.utils import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
EXPERIMENT = "table1/gauss25-blindspot-sigma_known"


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env |= {
            "gpu": props.name,
            "gpu_count": torch.cuda.device_count(),
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            env["driver"] = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            env["driver"] = f"unknown ({exc})"
    return env


def run_logged(cmd: Sequence[str], log: Path, timeout: float) -> int:
    """Run ``cmd`` from the repository root with its output in ``log``; returns the exit status."""
    with log.open("w") as f:
        try:
            return subprocess.run(
                list(cmd), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            f.write(f"\n[device_session] timed out after {timeout:.0f} s\n")
            return 124


def gpu_tests(out: Path, dry_run: bool) -> dict[str, Any]:
    # The dry run collects one file's gpu tests (all skipped on a CPU): the command is exercised, cheaply.
    target = ["tests/test_nets.py"] if dry_run else ["tests"]
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *target]
    rc = run_logged(cmd, out / "gpu_tests.log", timeout=240)
    tail = (out / "gpu_tests.log").read_text().strip().splitlines()
    return {"exit_status": rc, "result": tail[-1] if tail else ""}


def bench_networks(out: Path, dry_run: bool, device: str) -> list[dict[str, Any]]:
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_nets

    if dry_run:
        sizes = ["--sizes", "32", "--batch", "1", "--steps", "1", "--warmup", "1"]
        runs = [["--modes", "fp32"]]  # compiling takes minutes on a CPU; test_compile covers that path
    else:
        sizes = ["--sizes", "256", "--batch", "4", "--steps", "10", "--warmup", "3"]
        runs = [["--modes", "fp32", "bf16cl"], ["--modes", "bf16cl", "--compile"]]
    rows: list[dict[str, Any]] = []
    for extra in runs:
        rows += bench_nets.main(["--device", device, *sizes, *extra])
    # the compiled run repeats the eager bf16 rows: keep the first of each
    unique = {(r["mode"], r["path"], r["size"], r["net"]): r for r in reversed(rows)}
    rows = list(reversed(unique.values()))
    atomic_write_json(out / "bench_nets.json", rows)
    return rows


def synthetic_images(folder: Path, count: int = 6, size: int = 64) -> Path:
    """Smooth random colour images for the dry run (no data set needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        coarse = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC).save(folder / f"{i:02d}.png")
    return folder


def pack_and_bench_crops(out: Path, src: Path, dry_run: bool, device: str) -> dict[str, Any]:
    from ssdn.config.schema import DataSettings
    from ssdn.data.crops import RandomCropStream
    from ssdn.prepare import pack

    sys.path.insert(0, str(ROOT / "bench"))
    import bench_crops

    packed = out / "packed"
    t0 = time.perf_counter()
    sizes = {"min_size": 32, "max_size": 512} if dry_run else {}
    manifest = pack(src, packed, workers=0 if dry_run else min(8, os.cpu_count() or 1), **sizes)
    pack_s = time.perf_counter() - t0
    crop, batch = (32, 2) if dry_run else (256, 4)
    stream = RandomCropStream(DataSettings(train_dir=packed, crop_size=crop, batch_size=batch, seed=0))
    rates = {w: bench_crops.crops_per_second(stream, w, device, 0.5 if dry_run else 3.0) for w in (0, 2)}
    return {
        "packed": str(packed),
        "images": manifest["counts"]["kept"],
        "pack_s": pack_s,
        "crop": crop,
        "crops_per_s": {f"workers={w}": r for w, r in rates.items()},
    }


def train_and_evaluate(out: Path, packed: Path, data: Path, dry_run: bool, minutes: float) -> dict[str, Any]:
    """The paper's Gaussian σ=25 (known) row for ``minutes``, then KODAK ×1 in fp32, in a child process."""
    run_dir = out / "train"
    overrides = [
        f"experiment={EXPERIMENT}",
        f"train.minutes={minutes}",
        f"data.train_dir={packed}",
        f"data.val_dir={data / 'kodak'}",
        f"eval.root={data}",
        "eval.sets=[kodak]",
        "eval.repeats=1",
        "logger=csv",
        "example.enabled=false",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
    ]
    if dry_run:
        overrides += [
            "trainer=cpu",
            "data.crop_size=32",
            "data.batch_size=2",
            "data.num_workers=0",
            "data.val_size=32",
            "data.val_count=1",
            "data.size_filter=false",
            "trainer.val_check_interval=1000",
            "eval.limit=1",
            "eval.crop=64",
        ]
    t0 = time.perf_counter()
    rc = run_logged([sys.executable, "train.py", *overrides], out / "train.log", timeout=minutes * 60 + 300)
    result: dict[str, Any] = {"exit_status": rc, "wall_s": time.perf_counter() - t0, "overrides": overrides}
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        m = json.loads(metrics_file.read_text())
        used = float(m.get("train_minutes_used", minutes)) * 60
        result |= {
            "kodak_psnr": m.get("test/kodak/psnr"),
            "images_seen": m.get("images_seen"),
            "images_per_s": m["images_seen"] / used if used else None,
            "train_s": used,
            "val_psnr": m.get("val/psnr"),
        }
    ckpt = run_dir / "checkpoints" / "last.ckpt"  # the final weights: those scored on KODAK
    if ckpt.is_file():
        result |= {"checkpoint": str(ckpt), "checkpoint_mb": ckpt.stat().st_size / 1e6}
    return result


def markdown(summary: dict[str, Any]) -> str:
    env, steps = summary["env"], summary["steps"]
    lines = [
        f"GPU session {summary['started']}: {env.get('gpu', 'CPU (dry run)' if summary['dry_run'] else 'CPU')}"
        f", torch {env['torch']}, CUDA {env.get('cuda_runtime')}, capability {env.get('capability', '-')}, "
        f"driver {env.get('driver', '-')}; total {summary['total_s']:.0f} s",
        "",
        "| step | result | seconds |",
        "|---|---|---|",
    ]
    for name, step in steps.items():
        lines.append(f"| {name} | {step['status']} | {step['seconds']:.0f} |")
    nets = steps.get("bench_nets", {}).get("result") or []
    if nets:
        lines += ["", "| mode | path | size | net | ms/step | img/s | first step s | bs/base (FLOPs) |"]
        lines.append("|---|---|---|---|---|---|---|---|")
        for r in nets:
            ratio = f"{r['time_ratio']:.2f} ({r['flop_ratio']:.2f})" if r["net"] == "baseline" else ""
            lines.append(
                f"| {r['mode']} | {r['path']} | {r['size']} | {r['net']} | {r['step_s'] * 1e3:.1f} | "
                f"{r['images_per_s']:.1f} | {r['first_step_s']:.1f} | {ratio} |"
            )
    crops = steps.get("bench_crops", {}).get("result") or {}
    if crops:
        rates = ", ".join(f"{k}: {v:.0f}" for k, v in crops["crops_per_s"].items())
        lines += [
            "",
            f"Packed set: {crops['images']} images in {crops['pack_s']:.0f} s; {crops['crop']}² crops/s {rates}",
        ]
    train = steps.get("train", {}).get("result") or {}
    if train:
        psnr = train.get("kodak_psnr")
        lines += [
            "",
            "| run | train s | images seen | images/s | KODAK ×1 fp32 dB | checkpoint MB |",
            "|---|---|---|---|---|---|",
            f"| {EXPERIMENT} | {train.get('train_s', 0):.0f} | {train.get('images_seen')} | "
            f"{train.get('images_per_s') or 0:.1f} | {f'{psnr:.2f}' if psnr is not None else '-'} | "
            f"{train.get('checkpoint_mb', 0):.1f} |",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for every output of the session")
    p.add_argument("--dry-run", action="store_true", help="the same steps on the CPU with tiny sizes")
    p.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder holding kodak/ and the training set"
    )
    p.add_argument("--train-src", default="train-imagenet-sample-1000", help="training images under --data")
    p.add_argument("--minutes", type=float, default=None, help="training budget (default 4.5; dry run 0.1)")
    args = p.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = args.data.resolve()
    if not (data / "kodak").is_dir():
        p.error(f"--data {data}: no kodak/ folder there; point --data at the folder holding kodak/")
    device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run and not torch.cuda.is_available():
        p.error("no CUDA device here: run with --dry-run to check the script on a CPU")
    minutes = args.minutes if args.minutes is not None else (0.1 if args.dry_run else 4.5)
    src = synthetic_images(out / "dry-src") if args.dry_run else data / args.train_src
    if not src.is_dir():
        p.error(f"--train-src {src} is not a folder of training images")

    start = time.perf_counter()
    summary: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "dry_run": args.dry_run,
        "env": environment(),
        "steps": {},
    }

    def step(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            result, status = fn(), "ok"
        except Exception as exc:  # a failing step is recorded; the session goes on with the others
            result, status = None, f"failed: {type(exc).__name__}: {exc}"
        summary["steps"][name] = {"status": status, "seconds": time.perf_counter() - t0, "result": result}
        atomic_write_json(out / "summary.json", summary | {"total_s": time.perf_counter() - start})
        print(f"[device_session] {name}: {status} ({time.perf_counter() - t0:.0f} s)", flush=True)
        return result

    step("gpu_tests", lambda: gpu_tests(out, args.dry_run))
    step("bench_nets", lambda: bench_networks(out, args.dry_run, device))
    crops = step("bench_crops", lambda: pack_and_bench_crops(out, src, args.dry_run, device))
    if crops is not None:
        step("train", lambda: train_and_evaluate(out, Path(crops["packed"]), data, args.dry_run, minutes))
        train = summary["steps"]["train"]
        if train["result"] and train["result"]["exit_status"] != 0:
            train["status"] = f"failed: exit status {train['result']['exit_status']} (see train.log)"
    summary["total_s"] = time.perf_counter() - start
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", markdown(summary))
    print(markdown(summary))
    return summary


if __name__ == "__main__":
    main()
