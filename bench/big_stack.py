"""Denoising a stack larger than memory: time and peak RSS of ``python -m ssdn.denoise`` (issue 28's figure).

Why: a microscopist's 2048 × 2048 × 200 uint16 stack is 1.6 GB; the denoiser must walk it plane by plane (2-D
model) or tile by tile (3-D model), writing as it goes, within 3 GB of resident memory.

    python bench/big_stack.py make --out /tmp/big.ome.tif                    # 2048×2048×200, 1.6 GB, ~1 min
    python bench/big_stack.py run CKPT /tmp/big.ome.tif --minutes 10 --out big.json

``make`` writes Poisson–Gaussian counts around smooth structures (seeded generator, one plane in memory at a time)
through ``ssdn.data.stacks.StackWriter``. ``run`` starts the denoiser as a subprocess and samples its resident
memory (``VmRSS`` of it and its children, every 0.5 s) until it ends or ``--minutes`` pass (then it is stopped:
on a 2-core CPU the whole stack takes hours); the record holds the peak RSS, the planes (or tiles) done, read from
its progress bar, and the seconds per plane after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ssdn.data.stacks import StackMeta, StackWriter  # noqa: E402
from ssdn.errors import UserError, exit_on_user_error  # noqa: E402

PROGRESS = re.compile(r"(\d+)(?:/\d+)?\s*(?:plane|tile)")


def make(out: Path, planes: int, side: int, seed: int) -> None:
    """A ZYX uint16 stack: 100 ADU offset + 2 ADU/photon × Poisson(smooth pattern of 1–40 photons) + N(0, 3²)."""
    if out.exists():
        raise UserError(f"--out {out}: exists; remove it or choose another path")
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    meta = StackMeta("ZYX", np.dtype(np.uint16), {"Z": (0.2, "µm"), "Y": (0.1, "µm"), "X": (0.1, "µm")})
    with StackWriter(out, (planes, side, side), meta) as writer:
        for z in range(planes):
            photons = 1 + 39 * (0.5 + 0.5 * np.sin(40 * x + z / 7) * np.cos(30 * y - z / 11)) ** 4
            adu = 100 + 2 * rng.poisson(photons) + rng.normal(0, 3, photons.shape)
            writer.write((z, slice(None), slice(None)), np.clip(np.rint(adu), 0, 65535).astype(np.uint16))


def _rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (kB), from /proc."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            found = re.search(r"VmRSS:\s+(\d+)", status)
            total += int(found.group(1)) if found else 0
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children]
    return total


def run(checkpoint: Path, stack: Path, minutes: float, threads: int, extra: Sequence[str]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory(prefix="ssdn-big-", dir=stack.parent) as tmp:
        cmd = [sys.executable, "-m", "ssdn.denoise", str(checkpoint), str(stack), "--out", tmp, *extra]
        err_path = Path(tmp) / "stderr.txt"
        with err_path.open("w") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
            peak, times, done = 0, [], 0
            while proc.poll() is None and time.perf_counter() - start < minutes * 60:
                peak = max(peak, _rss_kb(proc.pid))
                text = err_path.read_text(errors="replace")
                counts = [int(n) for n in PROGRESS.findall(text)]
                if counts and counts[-1] > done:
                    done = counts[-1]
                    times.append((done, time.perf_counter() - start))
                time.sleep(0.5)
            finished = proc.poll() is not None
            if not finished:
                proc.terminate()
                proc.wait(30)
            wall = time.perf_counter() - start
        stdout = proc.stdout.read() if proc.stdout else ""
    per_plane = (times[-1][1] - times[0][1]) / (times[-1][0] - times[0][0]) if len(times) > 1 else None
    return {
        "stack": str(stack),
        "stack_bytes": stack.stat().st_size,
        "checkpoint": str(checkpoint),
        "finished": finished,
        "exit": proc.returncode if finished else None,
        "wall_s": wall,
        "units_done": done,
        "s_per_unit_after_first": per_plane,
        "peak_rss_mb": peak / 1024,
        "threads": threads,
        "command": cmd[1:],
        "stdout": stdout.strip(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="write the synthetic stack")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--planes", type=int, default=200)
    m.add_argument("--side", type=int, default=2048)
    m.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run", help="denoise it under an RSS monitor")
    r.add_argument("checkpoint", type=Path)
    r.add_argument("stack", type=Path)
    r.add_argument("--minutes", type=float, default=10.0, help="stop the denoiser after this long")
    r.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    r.add_argument("--out", type=Path, required=True, help="the JSON record")
    r.add_argument("--denoise-arg", action="append", default=[], help="passed to ssdn.denoise (repeatable)")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    with exit_on_user_error("big_stack", args.debug):
        if args.command == "make":
            make(args.out, args.planes, args.side, args.seed)
            return
        if args.out.exists():
            raise UserError(f"--out {args.out}: exists; remove it or choose another path")
        record = run(args.checkpoint, args.stack, args.minutes, args.threads, args.denoise_arg)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(
            json.dumps(
                {k: record[k] for k in ("finished", "units_done", "s_per_unit_after_first", "peak_rss_mb")}
            )
        )


if __name__ == "__main__":
    main()
