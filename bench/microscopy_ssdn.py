"""ssdn (2-D on planes or 3-D) on bench/microscopy.py's synthetic stacks, scored as the CAREamics baseline is.

Why: issue 28 compares ssdn with CAREamics N2V2 (``bench/careamics_baseline.py``) on the same noisy training
stacks, the same CPU budget and the same scoring (``bench/microscopy_score.py``). This script runs what a
microscopist would run, the README's two commands, as subprocesses of this checkout:

    python bench/microscopy_ssdn.py --data outputs/microscopy --level low --dims 3 --minutes 20 \\
        --out outputs/ssdn/low-3d.json

- Training: ``train.py`` on the level's ``train/`` stacks, noisy data only, ``noise=poisson_gaussian
  noise_params=sigma_global``, ``recipe=short`` with ``train.minutes`` = ``--minutes`` (the schedule fitted to
  the clock), ``data.offset`` = the camera's offset (a microscopist knows it from the datasheet or a dark frame)
  and ``data.peak=auto``; all four volumes train (``data.val_count=0``: CAREamics also validates on patches of
  its training data). 3-D adds the settings of ``SETTINGS`` (a CPU-sized 3-D net, see bench/README.md).
  ``--set KEY=VALUE`` passes more overrides.
- Denoising: ``python -m ssdn.denoise`` of the held-out volume with ``--uncertainty --float32`` (the counts as
  denoised, as CAREamics predicts them); the PSNR of those rounded to whole ADU (what the default uint16 output
  holds) is recorded too. ``--skip-training`` denoises again with the checkpoint in ``--work-dir``, keeping the
  training figures of the record at ``--out``.
- Record (``--out``, JSON, refused if present unless ``--overwrite``): PSNR of the prediction and of the noisy
  input against the clean photons, the share of voxels within ±1σ / ±2σ of the posterior std, the learned
  (a, b) in ADU against the camera's truth (Var = gain·(E − offset) + read²), training wall and CPU seconds,
  optimizer steps and images, denoising time, the overrides and the versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from microscopy_score import coverage, score_adu  # noqa: E402  (bench/ is the script's own folder)

from ssdn.errors import UserError, exit_on_user_error  # noqa: E402

SETTINGS: dict[int, tuple[str, ...]] = {
    2: (),
    # 16×64×64 sub-volumes; Z pooled only by the 2 deepest of 3 poolings (0.2 µm Z steps against 0.1 µm pixels);
    # 3 levels and half the paper's widths, so that a 1-thread CPU step takes ~1 s, not minutes
    3: (
        "model.dims=3",
        "data.crop_depth=16",
        "data.crop_size=64",
        "model.pool_z=2",
        "model.levels=3",
        "model.enc_channels=24",
        "model.dec_channels=48",
    ),
}
LEVEL_LINE = re.compile(r"\blevel a=(\S+) b=(\S+)")


def _child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(cmd: list[str], env: dict[str, str], log: Path) -> tuple[str, float, float]:
    """Run ``cmd``, its output appended to ``log``; returns stdout, wall seconds and CPU seconds (with children)."""
    wall, cpu = time.perf_counter(), _child_cpu_s()
    with log.open("a") as err:
        done = subprocess.run(
            cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True, check=False
        )
    if done.returncode:
        raise UserError(f"{' '.join(cmd[:3])} ... failed (exit {done.returncode}); see {log}")
    return done.stdout, time.perf_counter() - wall, _child_cpu_s() - cpu


def _overrides(args: argparse.Namespace, truth: dict[str, Any], run_dir: Path) -> list[str]:
    return [
        "data=folder",
        f"data.train_dir={args.data / args.level / 'train'}",
        "data.add_noise=false",
        "data.axes=ZYX",
        "data.val_count=0",
        f"data.offset={float(truth['camera']['offset'])}",
        "data.peak=auto",
        f"data.num_workers={args.workers}",
        "channels=1",
        "noise=poisson_gaussian",
        "noise_params=sigma_global",
        "recipe=short",
        f"train.minutes={args.minutes}",
        "trainer=cpu",
        f"seed={args.seed}",
        f"hydra.run.dir={run_dir}",
        *SETTINGS[args.dims],
        *args.set,
    ]


def _record(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    from ssdn.training.checkpoints import read_checkpoint, training_intensity

    truth = json.loads((args.data / "truth.json").read_text())
    test = args.data / args.level / "test"
    noisy, clean = (
        np.asarray(tifffile.imread(test / n)) for n in ("heldout.ome.tif", "heldout_clean.ome.tif")
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "WANDB_MODE": "disabled"}
    log = work / "log.txt"
    run_dir = work / "run"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if args.skip_training:
        if not (ckpt.is_file() and args.out.is_file()):
            raise UserError(f"--skip-training needs {ckpt} and the record --out {args.out} of its training")
        previous = json.loads(args.out.read_text())
        overrides, train = previous["overrides"], previous["train"]
    else:
        overrides = _overrides(args, truth, run_dir)
        _, wall, cpu = _run([sys.executable, "train.py", *overrides], env, log)
        train = {"wall_s": wall, "cpu_s": cpu, "minutes": args.minutes, "threads": args.threads}
    state = read_checkpoint(ckpt)
    scale = training_intensity(state)
    out_dir = work / "denoised"
    cmd = [
        sys.executable,
        "-m",
        "ssdn.denoise",
        str(ckpt),
        str(test / "heldout.ome.tif"),
        "--out",
        str(out_dir),
    ]
    flags = ["--uncertainty", "--float32", "--device", "cpu", "--overwrite"]
    stdout, denoise_wall, denoise_cpu = _run([*cmd, *flags], env, log)
    pred = np.asarray(tifffile.imread(out_dir / "heldout.ome.tif"))
    std = np.asarray(tifffile.imread(out_dir / "heldout.std.ome.tif"))
    camera = truth["camera"]
    learned: dict[str, float] = {}
    if (m := LEVEL_LINE.search(stdout)) and scale is not None:
        a, b = float(m.group(1)), float(m.group(2))
        learned = {"a_adu": a * scale.peak, "b_adu2": b * scale.peak**2, "a_unit": a, "b_unit": b}
    batch = int(state["ssdn_config"]["data"]["batch_size"])
    return {
        "method": f"ssdn-{args.dims}d",
        "level": args.level,
        "psnr": score_adu(pred, clean, truth, args.level),
        "psnr_rounded": score_adu(np.clip(np.rint(pred), 0, 65535), clean, truth, args.level),
        "psnr_noisy": score_adu(noisy, clean, truth, args.level),
        "within_1_std": coverage(pred, std, clean, truth, 1.0),
        "within_2_std": coverage(pred, std, clean, truth, 2.0),
        "within_1_2_std_rounded": [coverage(np.rint(pred), std, clean, truth, k) for k in (1.0, 2.0)],
        "mean_adu": {"prediction": float(pred.mean()), "noisy": float(noisy.mean())},
        "learned_level": learned,
        "true_level": {"a_adu": float(camera["gain"]), "b_adu2": float(camera["read_noise"]) ** 2},
        "intensity": None if scale is None else scale.record(),
        "train": train | {"steps": int(state["global_step"]), "images": int(state["global_step"]) * batch},
        "denoise": {"wall_s": denoise_wall, "cpu_s": denoise_cpu, "stdout": stdout.strip()},
        "overrides": overrides,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu": platform.processor(),
        },
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="bench/microscopy.py's --out folder")
    p.add_argument("--level", choices=("low", "high"), required=True)
    p.add_argument(
        "--dims", type=int, choices=(2, 3), required=True, help="2: the paper's net on planes; 3: volumes"
    )
    p.add_argument("--minutes", type=float, default=20.0, help="training wall-clock budget (train.minutes)")
    p.add_argument("--skip-training", action="store_true", help="denoise again with --work-dir's checkpoint")
    p.add_argument("--out", type=Path, required=True, help="the JSON record to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="OMP_NUM_THREADS of both steps")
    p.add_argument("--workers", type=int, default=1, help="data.num_workers (loader processes)")
    p.add_argument("--set", action="append", default=[], help="another train.py override (repeatable)")
    p.add_argument(
        "--work-dir", type=Path, help="keep the run and the denoised volume here (default: a temp folder)"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    with exit_on_user_error("microscopy_ssdn", args.debug):
        if args.skip_training and args.work_dir is None:
            raise UserError("--skip-training needs --work-dir (the folder of the earlier run)")
        if args.out.exists() and not args.overwrite:
            raise UserError(f"--out {args.out}: exists; pass --overwrite or choose another path")
        if not (args.data / "truth.json").is_file():
            raise UserError(
                f"--data {args.data}: no truth.json; generate the set with bench/microscopy.py --out"
            )
        args.data = args.data.resolve()
        if args.work_dir is not None:
            args.work_dir.mkdir(parents=True, exist_ok=True)
            record = _record(args, args.work_dir.resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="ssdn-micro-") as tmp:
                record = _record(args, Path(tmp))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = args.out.with_name(f".{args.out.name}.part")
        tmp_out.write_text(json.dumps(record, indent=2) + "\n")
        tmp_out.replace(args.out)
        keys = ("method", "level", "psnr", "psnr_rounded", "psnr_noisy", "within_1_std", "within_2_std")
        print(json.dumps({k: record[k] for k in keys}))
    return record


if __name__ == "__main__":
    main()
