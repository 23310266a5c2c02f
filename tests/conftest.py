"""Shared fixtures. W&B never talks to the network from the test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
