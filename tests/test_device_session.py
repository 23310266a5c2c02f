"""bench/device_session.py --dry-run: every step of the GPU session runs on a CPU with tiny sizes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "bench"))

import device_session  # a script under bench/, imported by path


@pytest.mark.slow  # ~30 s on a quiet 2-core CPU, mostly the 6-second training run and its start-up
def test_dry_run_writes_the_summary_and_its_table(tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "session"
    summary = device_session.main(["--out", str(out), "--dry-run", "--data", str(data_root)])
    assert {name: s["status"] for name, s in summary["steps"].items()} == {
        "gpu_tests": "ok",
        "bench_nets": "ok",
        "bench_crops": "ok",
        "train": "ok",
    }
    assert json.loads((out / "summary.json").read_text())["steps"].keys() == summary["steps"].keys()
    nets = summary["steps"]["bench_nets"]["result"]
    assert {r["net"] for r in nets} == {"blind-spot", "baseline"} and all(r["step_s"] > 0 for r in nets)
    assert summary["steps"]["bench_crops"]["result"]["images"] == 6
    train = summary["steps"]["train"]["result"]
    assert train["images_seen"] > 0 and 0 < train["kodak_psnr"] < 60
    assert Path(train["checkpoint"]).is_file()
    table = (out / "summary.md").read_text()
    assert "| table1/gauss25-blindspot-sigma_known |" in table and "| fp32 | eager | 32 | baseline |" in table
