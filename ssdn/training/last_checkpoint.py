"""``checkpoints/last.ckpt``: what a killed, interrupted or pre-empted run continues from (``resume=auto``).

Why not Lightning's ``ModelCheckpoint(save_last=True)``: with a monitored metric it waits for validation before
writing anything, so with validation off (``data.val_count=0``) or rarer than checkpoints a kill lost the whole
run. :class:`LastCheckpoint` writes ``last.ckpt`` every ``trainer.checkpoint_every_n_steps`` optimiser steps, at
the end of training, and on SIGINT (Ctrl-C) or SIGTERM (SLURM's pre-emption notice). The signal only sets a flag:
the step in flight completes, the checkpoint is written (atomically, by the trainer's checkpoint IO), and the run
stops with :class:`Interrupted`, exit status 128 + the signal's number, so a pre-emption loses at most one step.
In a local multirun that ends the sweep, as Ctrl-C should; a SLURM job is requeued and resumes.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

log = logging.getLogger(__name__)

__all__ = ["INTERRUPT_SIGNALS", "Interrupted", "LastCheckpoint"]

INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(SystemExit):
    """The run stopped on a signal after writing ``last.ckpt``; its exit status is 128 + the signal number.

    A ``SystemExit``, so that it is not recorded as a failed job but ends the process cleanly."""


class LastCheckpoint(Checkpoint):
    """Writes ``dirpath/last.ckpt`` every ``every_n_steps`` steps (0: only at the end), at the end, and on a signal.

    A ``Checkpoint`` so that Lightning runs it after every other callback of a hook: a callback that changes state
    at the end of a step (the weights' moving average) has then done so when the step's checkpoint is written.
    """

    def __init__(self, dirpath: Path, every_n_steps: int) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = int(every_n_steps)
        self._saved_step = -1
        self._received: int | None = None
        self._previous: dict[int, Any] = {}

    def on_train_start(self, *_: Any) -> None:
        # After Lightning's own SIGTERM handler (set when fit starts), which would stop without a checkpoint.
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._notice) for sig in INTERRUPT_SIGNALS}

    def _notice(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002 -- signal handler interface
        if self._received is None:
            log.warning(
                "%s received: finishing this step, then writing %s", signal.Signals(signum).name, self.path
            )
        self._received = signum

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        step = trainer.global_step
        stop = self._received is not None
        if trainer.world_size > 1:  # every rank must take part in the save and stop at the same step
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop or (self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0):
            self._save(trainer)
        if stop:
            signum = self._received or signal.SIGTERM
            log.warning(
                "stopped by %s at step %d: %s holds it; continue with resume=auto",
                signal.Signals(signum).name,
                step,
                self.path,
            )
            raise Interrupted(128 + signum)

    def on_train_end(self, trainer: L.Trainer, *_: Any) -> None:
        self._restore_handlers()
        self._save(trainer)

    def on_exception(self, *_: Any) -> None:
        self._restore_handlers()

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.global_step != self._saved_step:
            # the full state (optimiser, loops, callbacks): what an exact resume needs
            trainer.save_checkpoint(self.path, weights_only=False)
            self._saved_step = trainer.global_step

    def _restore_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
