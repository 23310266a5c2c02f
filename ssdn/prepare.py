"""Pack a folder tree of images into a training set that streams crops without decoding (ssdn.data.packed).

    python -m ssdn.prepare SRC OUT [--min-size 256] [--max-size 512] [--seed 0xbadf00d] [--shard-size 1000]
                           [--workers N]

Train on it with ``python train.py data=imagenet data.train_dir=OUT``. Images are chosen as the authors'
dataset tool does with ILSVRC2012 validation (`select`). Why it is safe to interrupt: the plan is fixed by
the listing and the settings (``prepare.json``); each shard is written under a temporary name, renamed and
described by a sidecar; ``manifest.json`` comes last. A re-run verifies finished shards (size, sha256),
rebuilds the rest and refuses other settings. The output does not depend on ``--workers``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

import ssdn
from ssdn.data.checksum import sha256_file
from ssdn.data.io import ImageDecodeError, list_images, load_image
from ssdn.data.packed import (
    CHANNELS,
    FORMAT,
    INDEX,
    MANIFEST,
    PLAN,
    SHARD_DIR,
    VERSION,
    shard_name,
)
from ssdn.data.sources import header_size
from ssdn.errors import UserError, exit_on_user_error
from ssdn.utils import atomic_path, atomic_write, atomic_write_json

log = logging.getLogger("ssdn.prepare")

AUTHORS_SEED = 0xBADF00D
LOCK = ".prepare.lock"


class PrepareError(UserError, ValueError):
    """The command cannot run as asked (bad arguments, a foreign or mismatched OUT folder)."""


# ---------------------------------------------------------------------------------------------- workers


def _header(job: tuple[str, str]) -> tuple[int, int] | str:
    """(width, height) from the file header, or the reason it cannot be read."""
    try:
        return header_size(Path(job[0]) / job[1])
    except ImageDecodeError as exc:
        return str(exc)


def _decode(job: tuple[str, str]) -> tuple[int, str, np.ndarray | str]:
    """(file bytes, file sha256, RGB pixels) or the error text in place of the pixels."""
    path = Path(job[0]) / job[1]
    try:
        data = path.read_bytes()
    except OSError as exc:
        return 0, "", f"cannot read file ({exc})"
    digest = hashlib.sha256(data).hexdigest()
    try:
        return len(data), digest, load_image(path, CHANNELS)
    except (ImageDecodeError, OSError) as exc:
        return len(data), digest, str(exc)


# ---------------------------------------------------------------------------------------------- plan


def select(
    src: Path, min_size: int, max_size: int, seed: int, mapper: Callable[..., Iterator[Any]]
) -> tuple[list[str], dict[str, Any], list[dict[str, str]]]:
    """The authors' order and filter: ``(candidates in packing order, counts, header failures)``.

    As their dataset tool (reference notes §3.1): SRC's image files listed recursively, sorted by path relative
    to SRC, shuffled with ``numpy.random.RandomState(seed)`` (0xbadf00d is theirs), kept when
    ``min <= width, height <= max`` (inclusive); they are converted to RGB with ``ssdn.data.io.load_image``
    when their shard is written.
    """
    files = [p.relative_to(src).as_posix() for p in list_images(src, recursive=True)]
    if not files:
        raise PrepareError(f"SRC={src} holds no image files (searched recursively); point SRC at the images")
    files = [files[i] for i in np.random.RandomState(seed).permutation(len(files))]
    kept, failed, filtered = [], [], 0
    for rel, size in zip(files, mapper(_header, [(str(src), f) for f in files]), strict=True):
        if isinstance(size, str):
            failed.append({"path": rel, "error": size})
            log.warning("skipping undecodable %s: %s", rel, size)
        elif min_size <= size[0] <= max_size and min_size <= size[1] <= max_size:
            kept.append(rel)
        else:
            filtered += 1
    return kept, {"listed": len(files), "filtered": filtered}, failed


def plan_digest(src: Path, candidates: list[str], settings: dict[str, Any]) -> str:
    """Fingerprint of what the shards will hold: settings plus each candidate's path and byte size."""
    listing = [[rel, (src / rel).stat().st_size] for rel in candidates]
    blob = json.dumps({"settings": settings, "candidates": listing}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def claim(out: Path, plan: dict[str, Any]) -> None:
    """Start OUT, or check that it was started with the same plan (one set never mixes two plans)."""
    existing = out / PLAN
    if existing.is_file():
        old = json.loads(existing.read_text())
        if old.get("settings") != plan["settings"] or old.get("plan_sha256") != plan["plan_sha256"]:
            diff = [k for k in plan["settings"] if old.get("settings", {}).get(k) != plan["settings"][k]]
            what = f"settings differ ({', '.join(diff)})" if diff else "the source listing differs"
            raise PrepareError(
                f"OUT={out} was started with another plan: {what}. Finish it with the original SRC and "
                "arguments, or delete OUT (or choose another) to start over"
            )
        return
    atomic_write_json(existing, plan)


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """One ssdn.prepare per OUT at a time (two SLURM jobs on one OUT would overwrite each other)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise PrepareError(f"OUT={out} is being written by another ssdn.prepare; wait for it") from exc
        yield


# ---------------------------------------------------------------------------------------------- shards


def _sidecar(out: Path, k: int) -> Path:
    return out / SHARD_DIR / f"{shard_name(k)}.json"


def finished_shard(out: Path, k: int, digest: str) -> dict[str, Any] | None:
    """The sidecar of shard ``k`` when the shard is complete, of this plan, and its bytes verify."""
    try:
        meta = json.loads(_sidecar(out, k).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    path = out / SHARD_DIR / meta.get("file", "")
    if meta.get("plan_sha256") != digest or meta.get("shard") != k or not path.is_file():
        return None
    if path.stat().st_size != meta["bytes"] or sha256_file(path) != meta["sha256"]:
        log.warning("shard %d: %s does not match its record; rebuilding it", k, path.name)
        return None
    return meta


def write_shard(
    src: Path, out: Path, k: int, files: list[str], digest: str, mapper: Callable[..., Iterator[Any]]
) -> dict[str, Any]:
    """Decode ``files`` in order into shard ``k`` (temporary name, then rename), then write its sidecar."""
    name = f"{shard_name(k)}.bin"
    images: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    sha = hashlib.sha256()
    offset = 0
    with atomic_path(out / SHARD_DIR / name) as tmp, open(tmp, "wb") as fh:
        for rel, (nbytes, file_sha, pixels) in zip(
            files, mapper(_decode, [(str(src), f) for f in files]), strict=True
        ):
            if isinstance(pixels, str):
                failed.append({"path": rel, "error": pixels})
                log.warning("skipping undecodable %s: %s", rel, pixels)
                continue
            data = pixels.tobytes()
            fh.write(data)
            sha.update(data)
            h, w = pixels.shape[:2]
            images.append(
                {"path": rel, "bytes": nbytes, "sha256": file_sha, "offset": offset, "height": h, "width": w}
            )
            offset += len(data)
    meta = {
        "shard": k,
        "file": name,
        "plan_sha256": digest,
        "bytes": offset,
        "sha256": sha.hexdigest(),
        "images": images,
        "undecodable": failed,
    }
    atomic_write_json(_sidecar(out, k), meta)
    return meta


def _drop_stale_temporaries(out: Path) -> None:
    """Temporary files of a killed run (a clean interruption removes its own)."""
    for folder in (out, out / SHARD_DIR):
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- driver


@contextlib.contextmanager
def _mapper(workers: int) -> Iterator[Callable[..., Iterator[Any]]]:
    """``map`` in order, in ``workers`` processes (forkserver: safe beside threads) or in this one."""
    if workers <= 1:
        yield map
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("forkserver")) as pool:
        yield lambda fn, jobs: pool.map(fn, jobs, chunksize=4)


def pack(
    src: str | Path,
    out: str | Path,
    *,
    min_size: int = 256,
    max_size: int = 512,
    seed: int = AUTHORS_SEED,
    shard_size: int = 1000,
    workers: int = 1,
) -> dict[str, Any]:
    """Build (or finish) the packed set ``out`` from the images under ``src``; returns the manifest.

    Undecodable files are reported, skipped and listed in the manifest.
    """
    src, out = Path(src).expanduser().resolve(), Path(out).expanduser().resolve()
    if not src.is_dir():
        raise PrepareError(f"SRC={src} is not a folder; give the folder that holds the images")
    if not 1 <= min_size <= max_size:
        raise PrepareError(f"need 1 <= --min-size <= --max-size, got {min_size} and {max_size}")
    if shard_size < 1 or workers < 0:
        raise PrepareError(f"need --shard-size >= 1 and --workers >= 0, got {shard_size} and {workers}")
    if not 0 <= seed < 2**32:
        raise PrepareError(f"--seed must be in 0 .. 2**32-1 (numpy RandomState), got {seed}")
    if out == src or src in out.parents:
        raise PrepareError(f"OUT={out} is inside SRC={src}; a re-run would list the shards as images")
    if out.is_dir() and not (out / PLAN).is_file() and any(p.name != LOCK for p in out.iterdir()):
        raise PrepareError(f"OUT={out} is not empty and holds no packed set; choose a new or empty folder")
    settings = {
        "min_size": min_size,
        "max_size": max_size,
        "seed": seed,
        "shard_size": shard_size,
        "channels": CHANNELS,
    }
    start = time.monotonic()
    with locked(out), _mapper(workers) as mapper:
        candidates, counts, failed = select(src, min_size, max_size, seed, mapper)
        if not candidates:
            raise PrepareError(
                f"SRC={src}: none of the {counts['listed']} image files has {min_size} <= width, height <= "
                f"{max_size} ({counts['filtered']} outside, {len(failed)} unreadable); change --min-size / "
                "--max-size"
            )
        digest = plan_digest(src, candidates, settings)
        groups = [candidates[i : i + shard_size] for i in range(0, len(candidates), shard_size)]
        claim(
            out,
            {
                "format": FORMAT,
                "version": VERSION,
                "source": str(src),
                "settings": settings,
                "plan_sha256": digest,
                "candidates": len(candidates),
                "shards": len(groups),
            },
        )
        _drop_stale_temporaries(out)
        shards = []
        for k, files in enumerate(groups):
            meta = finished_shard(out, k, digest)
            if meta is None:
                (out / MANIFEST).unlink(missing_ok=True)  # the set is incomplete until this shard is back
                t0 = time.monotonic()
                meta = write_shard(src, out, k, files, digest, mapper)
                log.info(
                    "shard %d/%d: %d images, %.0f MB in %.1f s",
                    k + 1,
                    len(groups),
                    len(meta["images"]),
                    meta["bytes"] / 1e6,
                    time.monotonic() - t0,
                )
            else:
                log.info("shard %d/%d: complete, verified", k + 1, len(groups))
            shards.append(meta)
        manifest = finish(src, out, settings, counts, failed, shards)
    c = manifest["counts"]
    log.info(
        "%s: %d images kept, %d outside %d..%d px, %d undecodable, of %d listed (%.0f MB, %.1f s)",
        out,
        c["kept"],
        c["filtered"],
        min_size,
        max_size,
        c["undecodable"],
        c["listed"],
        sum(s["bytes"] for s in manifest["shards"]) / 1e6,
        time.monotonic() - start,
    )
    return manifest


def finish(
    src: Path,
    out: Path,
    settings: dict[str, Any],
    counts: dict[str, Any],
    failed: list[dict[str, str]],
    shards: list[dict[str, Any]],
) -> dict[str, Any]:
    """Write ``index.npy`` and then ``manifest.json`` (last: its presence means the set is complete)."""
    images, rows = [], []
    for k, meta in enumerate(shards):
        for entry in meta["images"]:
            images.append(
                {
                    "path": entry["path"],
                    "bytes": entry["bytes"],
                    "sha256": entry["sha256"],
                    "shard": k,
                    "offset": entry["offset"],
                    "height": entry["height"],
                    "width": entry["width"],
                }
            )
            rows.append((k, entry["offset"], entry["height"], entry["width"]))
        failed = failed + meta["undecodable"]
    if not images:
        raise PrepareError(f"SRC={src}: no image could be decoded ({len(failed)} failed); see the warnings")
    atomic_write(out / INDEX, lambda fh: np.save(fh, np.array(rows, dtype=np.int64)))
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "ssdn_version": ssdn.__version__,
        "source": str(src),
        "settings": settings,
        "order": "files under source sorted by relative path, shuffled with numpy RandomState(seed), then "
        "filtered min_size <= width, height <= max_size and converted to RGB; packed in that order",
        "counts": counts | {"kept": len(images), "undecodable": len(failed)},
        "index": {
            "file": INDEX,
            "columns": ["shard", "offset", "height", "width"],
            "sha256": sha256_file(out / INDEX),
        },
        "shards": [
            {"file": m["file"], "bytes": m["bytes"], "sha256": m["sha256"], "images": len(m["images"])}
            for m in shards
        ],
        "images": images,
        "undecodable": failed,
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="ssdn-prepare",
        description="Pack a folder tree of images (e.g. ILSVRC2012 val) into a memory-mappable training set.",
    )
    p.add_argument("src", type=Path, help="folder of images (searched recursively)")
    p.add_argument("out", type=Path, help="output folder (new or empty; or an unfinished set to finish)")
    p.add_argument("--min-size", type=int, default=256, help="keep images with width and height >= this")
    p.add_argument("--max-size", type=int, default=512, help="keep images with width and height <= this")
    p.add_argument(
        "--seed",
        type=lambda s: int(s, 0),
        default=AUTHORS_SEED,
        help="shuffle seed (numpy RandomState; decimal or 0x...); default: the authors' 0xbadf00d",
    )
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard file")
    p.add_argument("--workers", type=int, default=1, help="decoding processes (1: in this process)")
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 when packed, 2 for a user error (bad SRC/OUT/settings), 1 when the system failed (I/O)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with exit_on_user_error("ssdn-prepare", args.debug):
        try:
            pack(
                args.src,
                args.out,
                min_size=args.min_size,
                max_size=args.max_size,
                seed=args.seed,
                shard_size=args.shard_size,
                workers=args.workers,
            )
        except OSError as exc:
            print(f"ssdn-prepare: error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
