"""Run the training CLI in a subprocess, the only safe way to test DDP (inside pytest, Lightning's ``ddp`` would
relaunch pytest itself) and Hydra launchers (they own the process)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY

#: Variables that would make a child believe it is a rank of some other distributed job.
RANK_VARIABLES = (
    "LOCAL_RANK",
    "RANK",
    "WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "GROUP_RANK",
    "PL_GLOBAL_SEED",
    "PL_SEED_WORKERS",
    "SSDN_DDP_CONFIG_DIGEST",
    "OMP_NUM_THREADS",
)

#: TINY (tests/conftest.py) as CLI overrides, without the logger: a run of seconds.
TINY_CLI = (*(o for o in TINY if not o.startswith("logger=")), "trainer.log_every_n_steps=1")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without rank, SLURM or submitit variables, W&B off unless ``extra`` says otherwise."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in RANK_VARIABLES and not k.startswith(("SLURM_", "SUBMITIT_", "TORCHELASTIC_"))
    }
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env |= {"WANDB_MODE": "disabled", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    return env | extra


def train_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> str:
    """``python -m ssdn.train ARGS`` in ``cwd``; fails the test with the output's tail unless it exits 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "ssdn.train", *args],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"training CLI exited with {proc.returncode}:\n{output[-6000:]}")
    return output


def logged_losses(run_dir: Path) -> dict[int, float]:
    """``train/loss`` by step from the run's CSV log."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}
