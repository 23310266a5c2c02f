"""Train-step speed of the baseline and blind-spot U-Nets (forward + backward + Adam, random data).

Run: ``python bench/bench_nets.py`` (CPU, and CUDA when present); ``--help`` for sizes, steps, devices;
``--compile`` adds each net through ``torch.compile`` (the ``compile=true`` path; its first warm-up step, which
compiles, is reported as ``compile s``); ``--json FILE`` also writes the rows.
The two nets are stepped alternately, so a machine that is busy with other work slows both alike and their
ratio stays meaningful. The table gives the median (and minimum) wall time over the timed steps, and the
median process CPU time (all threads), which other load inflates less, mostly with OMP_WAIT_POLICY=PASSIVE.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ssdn.nets import CompiledForward, UNet
from ssdn.utils import atomic_write_json, keep_freed_memory

MODES = {"fp32": (None, torch.contiguous_format), "bf16cl": (torch.bfloat16, torch.channels_last)}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_step(
    blindspot: bool, size: int, batch: int, device: str, mode: str, compiled: bool = False
) -> Callable[[], None]:
    """One optimiser step of a 9-output net on random data with an L2 loss (computed in fp32)."""
    amp_dtype, fmt = MODES[mode]
    net = UNet(3, 9, blindspot=blindspot).to(device=device, memory_format=fmt)
    forward = CompiledForward(net) if compiled else net
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(batch, 3, size, size, device=device, generator=g).contiguous(memory_format=fmt)
    target = torch.rand(batch, 9, size, size, device=device, generator=g)

    def step() -> None:
        with torch.autocast(device, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
            out = forward(x)
        loss = (out.float() - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_pair(
    size: int, batch: int, device: str, mode: str, steps: int, warmup: int, compiled: bool = False
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, float]]:
    """(wall, process CPU) seconds of each timed step of each net (the nets step alternately), and the wall
    seconds of each net's first warm-up step (start-up; with ``compiled``, mostly compilation)."""
    runs = {
        "blind-spot": make_step(True, size, batch, device, mode, compiled),
        "baseline": make_step(False, size, batch, device, mode, compiled),
    }
    first: dict[str, float] = {}
    for name, step in runs.items():
        for i in range(max(warmup, 1)):
            t = time.perf_counter()
            step()
            _sync(device)
            if i == 0:
                first[name] = time.perf_counter() - t
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(steps):
        for name, step in runs.items():
            _sync(device)
            t, c = time.perf_counter(), time.process_time()
            step()
            _sync(device)
            times[name].append((time.perf_counter() - t, time.process_time() - c))
    return times, first


def step_flops(blindspot: bool, size: int, batch: int) -> int:
    """FLOPs of one forward + backward on CPU in fp32, as counted by torch (convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = UNet(3, 9, blindspot=blindspot)
    x = torch.rand(batch, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        net(x).square().mean().backward()
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--sizes", type=int, nargs="+", default=[64, 128, 256], help="square crop sides (multiples of 32)"
    )
    p.add_argument("--batch", type=int, default=4, help="images per step (the paper's minibatch is 4)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per net")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per net first")
    p.add_argument(
        "--device", choices=["cpu", "cuda", "all"], default="all", help="'all': CPU, and CUDA if present"
    )
    p.add_argument(
        "--modes", nargs="+", choices=list(MODES), default=None, help="default: CPU both, CUDA bf16cl"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--malloc-tune", action="store_true", help="keep freed memory in the process (glibc only)")
    p.add_argument("--compile", action="store_true", help="also time each net through torch.compile")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    rows = run(args)
    if args.json is not None:
        atomic_write_json(args.json, rows)
    return rows


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Print the table; return its rows (one per device, mode, eager/compiled, size and net)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.malloc_tune and not keep_freed_memory():
        sys.exit("--malloc-tune needs glibc")
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    if not devices:
        sys.exit("no CUDA device")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, batch {args.batch}, ", end="")
    print(f"malloc-tune {args.malloc_tune}; median (min) of {args.steps} steps after {args.warmup} warm-up")
    if "cuda" in devices:
        print(f"CUDA device: {torch.cuda.get_device_name()}")
    print(
        f"{'device':6} {'mode':7} {'path':8} {'size':>5} {'net':10} {'ms/step (min)':>16} {'img/s':>7} "
        f"{'CPU ms':>7} {'compile s':>9}  bs/base (FLOPs)"
    )
    rows: list[dict[str, Any]] = []
    paths = [False, True] if args.compile else [False]
    for device in devices:
        for mode in args.modes or (list(MODES) if device == "cpu" else ["bf16cl"]):
            for compiled in paths:
                for size in args.sizes:
                    rows += _bench_rows(args, device, mode, compiled, size)
    return rows


def _bench_rows(
    args: argparse.Namespace, device: str, mode: str, compiled: bool, size: int
) -> list[dict[str, Any]]:
    flop_ratio = step_flops(True, size, args.batch) / step_flops(False, size, args.batch)
    times, first = bench_pair(size, args.batch, device, mode, args.steps, args.warmup, compiled)
    wall = {name: statistics.median(w for w, _ in t) for name, t in times.items()}
    time_ratio = wall["blind-spot"] / wall["baseline"]
    path = "compiled" if compiled else "eager"
    rows = []
    for name, t in times.items():
        cpu = statistics.median(c for _, c in t)
        ms = f"{wall[name] * 1e3:9.0f} ({min(w for w, _ in t) * 1e3:4.0f})"
        rate = f"{args.batch / wall[name]:7.2f} {cpu * 1e3:7.0f} {first[name]:9.1f}"
        ratio = f"  {time_ratio:.2f} ({flop_ratio:.2f})" if name == "baseline" else ""
        print(f"{device:6} {mode:7} {path:8} {size:5d} {name:10} {ms} {rate}{ratio}", flush=True)
        rows.append(
            {
                "device": device,
                "mode": mode,
                "path": path,
                "size": size,
                "batch": args.batch,
                "net": name,
                "step_s": wall[name],
                "images_per_s": args.batch / wall[name],
                "cpu_s": cpu,
                "first_step_s": first[name],
                "time_ratio": time_ratio,
                "flop_ratio": flop_ratio,
            }
        )
    return rows


if __name__ == "__main__":
    main()
