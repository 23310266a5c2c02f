"""Which training images a subset run (Table 2) saw: recorded from its checkpoint as ``train_files.txt``.

Why: Table 2 compares training-set sizes; the listing (and its digest in the report) shows which images a
cell was trained on. ``RecordTrainFiles`` is the Hydra callback that writes it after each run of a sweep.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ssdn.training.checkpoints import CheckpointError, read_checkpoint
from ssdn.utils import atomic_write_text

log = logging.getLogger(__name__)


def train_files_from_checkpoint(run_dir: Path) -> list[str] | None:
    """The training files the DataModule recorded in the run's last checkpoint (None without one, or with a
    damaged or unsafe one: the report goes on without that listing and says why)."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        return None
    try:
        state = read_checkpoint(ckpt)
    except CheckpointError as exc:
        log.warning("no training-file listing for %s: %s", run_dir, exc)
        return None
    train = (state.get("DenoisingDataModule") or {}).get("train") or {}
    files = train.get("files")
    return [str(f) for f in files] if files is not None else None


def write_train_files(run_dir: Path) -> Path | None:
    """Write ``train_files.txt`` (one path a line) from the checkpoint, so a subset run shows what it saw."""
    files = train_files_from_checkpoint(run_dir)
    if files is None:
        return None
    path = run_dir / "train_files.txt"
    atomic_write_text(path, "".join(f"{f}\n" for f in files))
    return path


class RecordTrainFiles(Callback):
    """Hydra callback: after each run, list its training files in ``train_files.txt`` (Table 2 subsets).

    Enable it for a sweep with ``++hydra.callbacks.train_files._target_=ssdn.report.RecordTrainFiles``."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:  # noqa: ARG002 -- Hydra's Callback interface
        write_train_files(Path(config.hydra.runtime.output_dir))


def read_train_files(run_dir: Path) -> list[str] | None:
    """The listing ``write_train_files`` left in the run folder (None without one)."""
    listing = run_dir / "train_files.txt"
    if listing.is_file():
        return [line for line in listing.read_text().splitlines() if line]
    return None
