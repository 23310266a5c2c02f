"""The README's main command, ``python train.py`` with its default config, end to end (slow: minutes on 2 cores).

The run is shortened to a quarter of the default's 800 images (validation and checkpoints every 50 steps so both
still happen): everything else is the no-argument job, and its full-length figure (noisy 20.3 dB → 28.4 dB on
the example) is a benchmark in the README, not a timed test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_subprocess import clean_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_no_argument_command_trains_and_denoises_the_example(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            f"hydra.run.dir={run_dir}",
            "trainer.enable_progress_bar=false",
            "train.images=200",
            "trainer.val_check_interval=50",
            "trainer.checkpoint_every_n_steps=50",
        ],
        cwd=tmp_path,
        env=clean_env(WANDB_MODE="offline"),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    example = json.loads((run_dir / "example.json").read_text())
    print(f"\nexample: noisy {example['psnr_noisy']:.2f} dB → pme {example['psnr_pme']:.2f} dB")
    assert example["psnr_pme"] > example["psnr_noisy"] + 3.0
    for name in ("noisy", "pme", "mu", "clean"):
        assert (run_dir / f"example_{name}.png").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["images_seen"] == 200 and metrics["val/psnr"] > metrics["val/psnr_noisy"]
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # offline: no API key needed
