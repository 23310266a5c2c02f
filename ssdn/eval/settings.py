"""How an evaluation runs, checked once: everything ``evaluate`` needs beside the denoiser and the protocols.

Why one frozen object: none of these settings can change a score (the ``ProtocolConfig`` of each set fixes what
is scored), so they travel together from the command line or the run config to the evaluator, and the checks
that need no denoiser run when they are built, before any image is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

EVAL_TILE = 1024
"""Largest network input square the evaluator runs whole; the paper's sets (≤ 768) always do."""


@dataclass(frozen=True)
class EvalSettings:
    """The run settings of ``ssdn.eval.evaluator.evaluate``.

    ``root``: folder of the registered test sets. ``batch_size``: images per network call (among equal padded
    sizes). ``device``: where a denoiser with ``.to`` runs (noise is always drawn on the CPU). ``workers`` > 1:
    a classical method in a process pool. ``progress``: a progress bar. ``save_images``: folder for PNGs of the
    first pass (noisy input and every output). ``journal_dir``: keep a per-set journal there and resume from it;
    ``identity`` says what else tells this denoiser from another of the same name (e.g. the checkpoint file),
    so a journal is reused only for the same one. ``calibrate``: also ask the denoiser for its posterior std
    (``denoise(..., uncertainty=True)``) and measure its calibration (``ssdn.eval.calibration``); it needs every
    image in this process, so no journal and no pool. ``tile``: network inputs with a larger side are denoised
    in tiles of this side (a multiple of the network's ``requires_square_multiple``). ``allow_modified``:
    score a registered set's modified file with a warning instead of refusing it.
    """

    root: str | Path | None = None
    batch_size: int = 1
    device: torch.device | str | None = None
    workers: int = 1
    progress: bool = True
    save_images: str | Path | None = None
    journal_dir: str | Path | None = None
    identity: Mapping[str, Any] = field(default_factory=dict)
    calibrate: bool = False
    tile: int = EVAL_TILE
    allow_modified: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.workers < 1:
            raise ValueError(f"batch_size and workers must be >= 1, got {self.batch_size} and {self.workers}")
        if self.tile < 1:
            raise ValueError(f"tile must be a positive side, got {self.tile}")
        if self.calibrate and (self.workers > 1 or self.journal_dir is not None):
            raise ValueError(
                "calibrate needs every image denoised in this process: use workers=1 and no journal_dir"
            )
