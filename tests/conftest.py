"""Shared fixtures. W&B never talks to the network from the test suite."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from ssdn.config.compose import compose

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path | None:
    """The evaluation/training images: $SSDN_DATA_ROOT, else ../shared/data beside the checkout."""
    env = os.environ.get("SSDN_DATA_ROOT")
    root = Path(env) if env else PROJECT_ROOT.parent / "shared" / "data"
    return root if root.is_dir() else None


@pytest.fixture
def data_root() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("shared data folder not found (set SSDN_DATA_ROOT)")
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


#: Overrides that make a training run take seconds: 32² crops, batch 2, 2 steps, one 32² validation image.
TINY = (
    "logger=csv",
    "data.crop_size=32",
    "data.batch_size=2",
    "data.val_size=32",
    "data.val_count=1",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.checkpoint_every_n_steps=2",
    "trainer.enable_progress_bar=false",
    "example.enabled=false",
)


compose_config = compose


class StopAfter(L.Callback):
    """Stops a run after ``steps`` optimizer steps, as a kill would (without the kill): for resume tests."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


def unit16(pixels: np.ndarray) -> np.ndarray:
    """The paper's scale of 16-bit counts, v / 65535 in float32: what noisy 16-bit crops must equal by default."""
    return pixels.astype(np.float32) / np.float32(65535)
