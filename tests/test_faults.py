"""Fault injection: real signals to the command-line tools, and a corpus of bad inputs.

- SIGKILL at random points of a tiny training run (validation off, so only ``last.ckpt`` can save it), each
  followed by ``resume=auto``: the final weights and optimiser state equal the uninterrupted run's, bit for bit.
- SIGTERM and SIGINT: the run writes ``last.ckpt`` at the step in flight, exits with 128 + the signal, and
  resumes to the same bits.
- A killed ``ssdn.evaluate`` and a killed ``ssdn.prepare`` rerun to outputs identical to uninterrupted ones.
- Bad image files (made here) through training, evaluation and denoising: each a named skip or error.

Each test prints its tally (``faults: ...``); ``python -m pytest tests/test_faults.py -q -s`` shows them all
(recorded in bench/README.md).
"""

from __future__ import annotations

import json
import random
import signal
import struct
import subprocess
import sys
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssdn import evaluate
from ssdn.data.testsets import get_testset
from ssdn.training.checkpoints import CheckpointError, read_checkpoint
from tests.cli_subprocess import TINY_CLI, clean_env

pytestmark = pytest.mark.slow

#: A run of 8 steps, a checkpoint every 2, validation off: what a kill can only survive through last.ckpt.
RUN = (*TINY_CLI, "trainer.max_steps=8", "trainer.checkpoint_every_n_steps=2", "data.val_count=0")


def _start(module: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: int = 600) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _train(run_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return _start("ssdn.train", *RUN, f"hydra.run.dir={run_dir}", *extra, cwd=run_dir.parent)


def _ckpt_step(ckpt: Path) -> int:
    try:
        return int(read_checkpoint(ckpt)["global_step"])
    except CheckpointError:  # not there yet
        return -1


def _signal_when(
    proc: subprocess.Popen[str], ready: Callable[[], bool], delay: float, sig: int, timeout: float = 300
) -> bool:
    """Send ``sig`` ``delay`` seconds after ``ready()`` holds; False when the process ended first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(sig)
    return True


def _state(ckpt: Path) -> dict[str, torch.Tensor]:
    """Weights and optimiser moments of a checkpoint, flattened for exact comparison."""
    saved = read_checkpoint(ckpt)
    flat = {f"w.{k}": v for k, v in saved["state_dict"].items()}
    for i, s in saved["optimizer_states"][0]["state"].items():
        flat |= {f"opt.{i}.{k}": v for k, v in s.items() if isinstance(v, torch.Tensor)}
    flat["step"] = torch.tensor(saved["global_step"])
    return flat


def _assert_identical(a: Path, b: Path) -> None:
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"not bit-identical: {different[:5]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run's last.ckpt."""
    run_dir = tmp_path_factory.mktemp("faults") / "reference"
    code, out = _finish(_train(run_dir))
    assert code == 0, out[-3000:]
    return run_dir / "checkpoints" / "last.ckpt"


def test_sigkill_at_random_points_then_resume_is_bit_identical(reference: Path, tmp_path: Path) -> None:
    rng = random.Random(19)
    run_dir = tmp_path / "killed"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    tried = 0
    for _ in range(3):
        after = rng.choice([0, 2, 4])  # kill once last.ckpt holds this step (0: before any checkpoint)
        proc = _train(run_dir, "resume=auto")
        ready = (
            (lambda: (run_dir / ".hydra").is_dir()) if after == 0 else (lambda a=after: _ckpt_step(ckpt) >= a)
        )
        if _signal_when(proc, ready, rng.uniform(0, 1.5), signal.SIGKILL):
            tried += 1
        proc.wait()
    code, out = _finish(_train(run_dir, "resume=auto"))
    assert code == 0, out[-3000:]
    _assert_identical(reference, ckpt)
    print(f"\nfaults: SIGKILL during training, resumed bit-identical: {tried}/{tried} (3 attempted)")
    assert tried >= 2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_writes_last_checkpoint_and_exits_cleanly(reference: Path, tmp_path: Path, sig: int) -> None:
    run_dir = tmp_path / "signalled"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    proc = _train(run_dir)
    seen = -1

    def ready() -> bool:
        nonlocal seen
        seen = _ckpt_step(ckpt)
        return seen >= 2

    assert _signal_when(proc, ready, 0.2, sig), "the run ended before the signal"
    code, out = _finish(proc)
    name = signal.Signals(sig).name
    assert code == 128 + sig, out[-3000:]
    assert "Traceback" not in out
    stopped = _ckpt_step(ckpt)
    assert stopped >= seen  # nothing done before the signal is lost
    log = (run_dir / "train.log").read_text()
    assert f"stopped by {name} at step {stopped}" in log and "resume=auto" in log
    assert not (run_dir / "metrics.json").exists()  # an interrupted run has no final results
    code, out = _finish(_train(run_dir, "resume=auto"))
    assert code == 0, out[-3000:]
    _assert_identical(reference, ckpt)
    print(f"\nfaults: {name} at step {stopped} -> last.ckpt, exit {128 + sig}, resumed bit-identical: 1/1")


def test_finished_run_is_kept_and_a_rerun_without_resume_refused(reference: Path) -> None:
    run_dir = reference.parent.parent
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and ".hydra" not in p.parts}
    code, out = _finish(_train(run_dir))
    assert code == 2 and "resume=auto" in out and "hydra.run.dir" in out and "Traceback" not in out
    code, out = _finish(_train(run_dir, "resume=auto"))
    assert code == 0 and "finished at step 8: nothing to do" in out
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and ".hydra" not in p.parts}
    changed = [p for p in before if before[p] != after.get(p) and p.name != "train.log"]
    assert not changed, changed


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_checkpoint_is_a_named_error(
    reference: Path, tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resuming from (training CLI) or evaluating a damaged checkpoint: exit 2, one line naming the file."""
    bad = tmp_path / f"{damage}.ckpt"
    data = reference.read_bytes()
    bad.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"\x00garbage" * 1000)
    expected = (
        f"{bad}: truncated or not a checkpoint" if damage == "truncated" else f"{bad}: not a checkpoint"
    )
    code, out = _finish(_train(tmp_path / "run", f"resume={bad}"))
    assert code == 2 and f"ssdn-train: error: {expected}" in out, out[-3000:]
    assert "Traceback" not in out and not (tmp_path / "run" / "checkpoints").exists()
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(
            ["--checkpoint", str(bad), "--sets", "kodak", "--out", str(tmp_path / "e"), "--device", "cpu"]
        )
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err
    print(f"\nfaults: {damage} checkpoint -> named error, exit 2: 2/2 (train, evaluate)")


def _evaluate_args(ckpt: Path, data_root: Path, out: Path) -> list[str]:
    return [
        "--checkpoint", str(ckpt), "--sets", "kodak", "--repeats", "2", "--limit", "3", "--crop", "64",
        "--root", str(data_root), "--device", "cpu", "--no-progress", "--out", str(out),
    ]  # fmt: skip


def _comparable(results: Path) -> dict:
    data = json.loads(results.read_text())
    data.pop("meta")
    for s in data["sets"].values():
        s.pop("seconds")
    return data


def test_killed_evaluation_resumes_to_identical_outputs(
    reference: Path, data_root: Path, tmp_path: Path
) -> None:
    full, killed = tmp_path / "full", tmp_path / "killed"
    code, out = _finish(_start("ssdn.evaluate", *_evaluate_args(reference, data_root, full), cwd=tmp_path))
    assert code == 0, out[-3000:]
    journal = killed / "partial-kodak.jsonl"
    proc = _start("ssdn.evaluate", *_evaluate_args(reference, data_root, killed), cwd=tmp_path)
    scored = lambda: journal.is_file() and len(journal.read_text().splitlines()) >= 3  # noqa: E731
    assert _signal_when(proc, scored, 0.0, signal.SIGKILL), "evaluation ended before the kill"
    proc.wait()
    assert not (killed / "results.json").exists()
    code, out = _finish(_start("ssdn.evaluate", *_evaluate_args(reference, data_root, killed), cwd=tmp_path))
    assert code == 0, out[-3000:]
    assert _comparable(full / "results.json") == _comparable(killed / "results.json")
    assert (full / "per_image.csv").read_bytes() == (killed / "per_image.csv").read_bytes()
    print("\nfaults: SIGKILL during evaluation, resumed identical: 1/1")


def test_killed_prepare_resumes_to_identical_outputs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (48, 40 + i % 9, 3), dtype=np.uint8)).save(
            src / f"im{i:02d}.png"
        )
    args = ["--min-size", "32", "--max-size", "64", "--shard-size", "2"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    code, out = _finish(_start("ssdn.prepare", str(src), str(full), *args, cwd=tmp_path))
    assert code == 0, out[-3000:]
    proc = _start("ssdn.prepare", str(src), str(killed), *args, cwd=tmp_path)
    shards = killed / "shards"
    started = lambda: shards.is_dir() and len(list(shards.glob("*.json"))) >= 2  # noqa: E731
    assert _signal_when(proc, started, 0.0, signal.SIGKILL), "prepare ended before the kill"
    proc.wait()
    code, out = _finish(_start("ssdn.prepare", str(src), str(killed), *args, cwd=tmp_path))
    assert code == 0, out[-3000:]
    files = sorted(p.relative_to(full) for p in full.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(killed) for p in killed.rglob("*") if p.is_file())
    for name in files:
        a, b = (full / name).read_bytes(), (killed / name).read_bytes()
        if name.suffix == ".json":  # the manifest names its own folder
            a, b = a.replace(str(full).encode(), b""), b.replace(str(killed).encode(), b"")
        assert a == b, name
    print("\nfaults: SIGKILL during prepare, resumed identical: 1/1")


# ------------------------------------------------------------------ bad inputs


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, rows: bytes, depth: int = 8, color: int = 0) -> bytes:
    head = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", head)
        + _png_chunk(b"IDAT", rows)
        + _png_chunk(b"IEND", b"")
    )


def _bomb() -> bytes:
    """A 20000² grayscale PNG of zeros: 400 MB of pixels in ~400 kB of file."""
    side, z = 20000, zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    data = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    return _png(side, side, data)


def bad_corpus(folder: Path) -> dict[str, Path]:
    """One file per kind of bad or unusual input, each 64² (the usable ones) so that training could use it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    made: dict[str, Path] = {}

    def put(name: str, write: Callable[[Path], object]) -> None:
        made[name] = folder / name
        write(made[name])

    put("empty.png", lambda p: p.write_bytes(b""))
    good = folder / "_good.png"
    Image.fromarray(rgb).save(good)
    put("truncated.png", lambda p: p.write_bytes(good.read_bytes()[:300]))
    good.unlink()
    put("text.png", lambda p: p.write_text("this is not an image\n" * 20))
    put("gray.png", lambda p: Image.fromarray(rgb[:, :, 0]).save(p))
    put("rgba.png", lambda p: Image.fromarray(np.dstack([rgb, rgb[:, :, :1]])).save(p))
    put("palette.png", lambda p: Image.fromarray(rgb).convert("P").save(p))
    put("sixteen.png", lambda p: Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257).save(p))

    def exif(p: Path) -> None:
        info = Image.Exif()
        info[0x0112] = 6  # orientation: rotate 90°
        Image.fromarray(rgb[:, :48]).save(p, exif=info)

    put("exif.jpg", exif)
    put("tiny.png", lambda p: Image.fromarray(rgb[:2, :2]).save(p))
    put("huge_header.png", lambda p: p.write_bytes(_png(200000, 200000, zlib.compress(b"\x00" * 100))))
    put("bomb.png", lambda p: p.write_bytes(_bomb()))
    return made


BAD = {"empty.png", "truncated.png", "text.png", "huge_header.png", "bomb.png"}  # undecodable: named skips
SMALL = {"tiny.png"}  # decodable, smaller than the crop: a named skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return bad_corpus(tmp_path_factory.mktemp("corpus") / "images")


def test_bad_inputs_in_training_are_named_skips(corpus: dict[str, Path], tmp_path: Path) -> None:
    """Training on the corpus: every bad file is skipped by name in train.log, and the checkpoint's data record
    lists it as skipped (truncated.png only fails when cropped, in a loader worker)."""
    folder = next(iter(corpus.values())).parent
    run_dir = tmp_path / "run"
    overrides = ("data=folder", f"data.train_dir={folder}", "data.add_noise=true", "trainer.max_steps=2")
    code, out = _finish(_start("ssdn.train", *TINY_CLI, *overrides, f"hydra.run.dir={run_dir}", cwd=tmp_path))
    assert code == 0, out[-3000:]
    record = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["DenoisingDataModule"]["train"]
    skipped = {Path(p).name for p in record["skipped_files"]}
    small = {Path(p).name for p in record["too_small_files"]}
    used = {Path(p).name for p in record["files"]}
    assert skipped == BAD and small == SMALL and used == set(corpus) - BAD - SMALL
    assert [Path(p).name for p in record["crop_failed_files"]] == ["truncated.png"]
    log = (run_dir / "train.log").read_text()
    assert not [name for name in BAD | SMALL if name not in log], log[-3000:]
    handled = len(skipped) + len(small) + len(used)
    print(f"\nfaults: bad inputs in training handled (named skip or used): {handled}/{len(corpus)}")
    assert handled == len(corpus)


def test_bad_inputs_in_a_test_set_are_named_errors(
    corpus: dict[str, Path],
    reference: Path,
    data_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each bad file in place of kodim01.png: refused by its checksum, and with --allow-modified by its decoder
    or size check; either way exit 2 naming the file, and no results written."""
    handled = 0
    for name, bad in corpus.items():
        root = tmp_path / name
        kodak = root / "kodak"
        kodak.mkdir(parents=True)
        for f in get_testset("kodak").files:
            (kodak / f.name).symlink_to(bad if f.name == "kodim01.png" else data_root / "kodak" / f.name)
        for extra in ([], ["--allow-modified"]):
            out = root / ("out-allowed" if extra else "out")
            args = ["--checkpoint", str(reference), "--sets", "kodak", "--repeats", "1", "--limit", "2"]
            with pytest.raises(SystemExit) as exit_info, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                evaluate.main(
                    [*args, "--root", str(root), "--device", "cpu", "--no-progress", "--out", str(out)]
                )
            err = capsys.readouterr().err
            assert exit_info.value.code == 2 and "kodim01.png" in err, (name, extra, err)
            assert not (out / "results.json").exists()
        handled += 1
    print(f"\nfaults: bad inputs in a test set refused by name: {handled}/{len(corpus)}")


def test_bad_inputs_through_denoise_cli(corpus: dict[str, Path], reference: Path, tmp_path: Path) -> None:
    """The denoise command on the whole corpus: it stops at (or skips) a bad file by name, and every image it
    wrote is complete, with no temporary file left behind. (Its exit status for a user error belongs to the
    denoise command's own error handling.)"""
    folder = next(iter(corpus.values())).parent
    out = tmp_path / "out"
    args = [str(reference), str(folder), "--out", str(out), "--param", "25", "--device", "cpu"]
    code, text = _finish(_start("ssdn.denoise", *args, cwd=tmp_path))
    assert code == 0 or any(f"{folder / name}: " in text for name in BAD), text[-3000:]
    written = sorted(out.iterdir()) if out.is_dir() else []
    for path in written:
        assert path.suffix in (".png", ".tif"), path
        with Image.open(path) as img:
            img.load()
    print(
        f"\nfaults: denoise on the bad corpus: exit {code}, {len(written)} complete output(s), none partial"
    )
