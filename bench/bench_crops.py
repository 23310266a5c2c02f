"""Training-crop throughput: packed set (memory-mapped) versus the folder-of-JPEGs loader.

Run from the repository root: ``python bench/bench_crops.py`` (``--help`` for options). It packs ``--src``
(default: the shared 1000-photo ImageNet sample; 782 images pass the paper's 256..512 filter) into a
temporary packed set with ``ssdn.prepare`` (or reuses ``--packed DIR``), then counts 256² uint8 crops per
second through ``DataLoader(stream, batch_size=None, num_workers=W)`` onto the device (CPU; with CUDA also
``.to("cuda", non_blocking=True)`` from pinned memory) for W = 0, 1, 2 and for:

- ``packed``: crops cut from memory-mapped shards (no decode per sample);
- ``folder``: the same images as files, decoded per crop (``in_memory=false``, the folder config);
- ``folder-ram``: the same files decoded once at setup and held in RAM (``in_memory=true``).

Rounds are interleaved over the configurations so that load from other processes hits them alike; the table
shows the median and the best round. Numbers from a shared machine are noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ssdn.config.schema import DataSettings
from ssdn.data.crops import DataWarning, RandomCropStream
from ssdn.prepare import pack

DEFAULT_SRC = Path(__file__).resolve().parents[2] / "shared" / "data" / "train-imagenet-sample-1000"


def build_streams(
    src: Path, packed: Path, crop: int, batch: int
) -> dict[str, tuple[RandomCropStream, float]]:
    """Each loader's stream and its set-up time in seconds (listing, header scan, decoding for folder-ram)."""
    common = DataSettings(crop_size=crop, batch_size=batch, seed=0)
    streams = {}
    for name, settings in (
        ("packed", replace(common, train_dir=packed)),
        ("folder", replace(common, train_dir=src, size_filter=True, recursive=True, in_memory=False)),
        ("folder-ram", replace(common, train_dir=src, size_filter=True, recursive=True, in_memory=True)),
    ):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)  # small images are skipped: expected here
            stream = RandomCropStream(settings)
        streams[name] = (stream, time.perf_counter() - t0)
    return streams


def crops_per_second(stream: RandomCropStream, workers: int, device: str, seconds: float) -> float:
    """Steady-state crops/s: worker start-up and the first prefetched batches are not timed."""
    loader = DataLoader(
        stream, batch_size=None, num_workers=workers, pin_memory=device == "cuda", prefetch_factor=None
    )
    it = iter(loader)
    for _ in range(max(2, 2 * workers)):
        next(it)["clean"].to(device, non_blocking=True)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        count += next(it)["clean"].to(device, non_blocking=True).shape[0]
    if device == "cuda":
        torch.cuda.synchronize()
    rate = count / (time.perf_counter() - t0)
    del it
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src", type=Path, default=DEFAULT_SRC, help="image folder (e.g. the BSDS training set)")
    p.add_argument("--packed", type=Path, help="packed set to use or create (default: a temporary one)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch", type=int, default=16, help="crops per batch")
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per configuration and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--prepare-workers", type=int, default=2, help="decoding processes for ssdn.prepare")
    args = p.parse_args()
    if not args.src.is_dir():
        raise SystemExit(f"--src {args.src} is not a folder; point it at a folder of training images")

    with tempfile.TemporaryDirectory(prefix="ssdn-bench-") as tmp:
        packed = args.packed or Path(tmp) / "packed"
        t0 = time.perf_counter()
        manifest = pack(args.src, packed, workers=args.prepare_workers)
        size = sum(s["bytes"] for s in manifest["shards"]) / 1e6
        print(
            f"packed set: {packed}, {manifest['counts']['kept']} images, {size:.0f} MB, "
            f"prepare (or verify) {time.perf_counter() - t0:.1f} s with {args.prepare_workers} processes"
        )
        streams = build_streams(args.src, packed, args.crop, args.batch)
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        configs = [(n, w, d) for d in devices for n in streams for w in args.workers]
        rates: dict[tuple[str, int, str], list[float]] = {c: [] for c in configs}
        for _ in range(args.rounds):
            for name, workers, device in configs:
                rates[(name, workers, device)].append(
                    crops_per_second(streams[name][0], workers, device, args.seconds)
                )

    print(
        f"\n{args.crop}² uint8 crops, batch {args.batch}, {args.rounds} rounds of {args.seconds:g} s; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print("| source | set-up s | workers | device | crops/s (median) | best | per worker (median) |")
    print("|---|---|---|---|---|---|---|")
    for name, workers, device in configs:
        r = rates[(name, workers, device)]
        med = statistics.median(r)
        print(
            f"| {name} | {streams[name][1]:.1f} | {workers} | {device} | {med:.0f} | {max(r):.0f} | "
            f"{med / max(1, workers):.0f} |"
        )


if __name__ == "__main__":
    main()
