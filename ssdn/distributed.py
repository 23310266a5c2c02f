"""Multi-process training helpers: strategy construction and clean process-group teardown."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class DestroyProcessGroup(Callback):
    """Tear the process group down at the end of a run: DDP on CPU otherwise sometimes aborts at exit."""

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def build_strategy(name: str | Any) -> str | Any:
    """The Lightning strategy for ``trainer.strategy`` (a name Lightning understands, passed through)."""
    return name
