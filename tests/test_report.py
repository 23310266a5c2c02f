"""The report: the paper's numbers as typed from the paper, job folders mapped to rows, missing rows never
filled, failed and off-protocol jobs marked, plots written, clear errors. Run folders are made by hand here
(fast); tests/test_sweeps.py runs a real sweep end to end."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image

from ssdn import report
from ssdn.report.paper import load_paper
from ssdn.report.plots import figure3_unit, training_cost
from ssdn.report.runs import RunRecord

CONF = Path(__file__).resolve().parents[1] / "ssdn" / "conf" / "experiment"
PAPER_SETS = ("kodak", "bsd300", "set14")


# ------------------------------------------------------------------------------------------ paper numbers


@pytest.mark.parametrize(
    ("table", "row", "set_name", "psnr"),
    [  # typed by hand from the paper's Tables 1-3 and the caption of Figure 3
        ("1", "gauss25-n2c", "kodak", 32.46),
        ("1", "gauss25-blindspot-sigma_global", "set14", 31.22),
        ("1", "gauss25-blindspot_mean", "bsd300", 28.65),
        ("1", "gauss5_50-blindspot_diag-sigma_per_image", "set14", 30.45),
        ("1", "gauss5_50-cbm3d-sigma_estimated", "average", 31.13),
        ("1", "gauss25-cbm3d-sigma_known", "kodak", 31.82),
        ("3", "poisson30-blindspot-sigma_global", "kodak", 31.70),
        ("3", "poisson5_50-blindspot-sigma_per_image", "set14", 28.65),
        ("3", "poisson30-anscombe", "average", 28.62),
        ("3", "impulse50-n2c", "kodak", 33.32),
        ("3", "impulse0_100-n2n", "bsd300", 30.11),
        ("3", "impulse0_100-blindspot_mean", "kodak", 27.16),
        ("2", "gauss25-n2c-n100", "average", 30.84),
        ("2", "gauss25-blindspot-sigma_known-n100", "average", 31.03),
        ("2", "gauss25-n2c-n500", "average", 31.44),
        ("2", "gauss25-n2c-n100-rot", "average", 31.21),
        ("2", "gauss25-blindspot-sigma_known-n10000-rot", "average", 31.58),
        ("2", "gauss25-blindspot-sigma_known-nall", "average", 31.57),
        ("figure3", "gauss25-blindspot-sigma_known-ema", "kodak", 32.39),
    ],
)
def test_paper_numbers_match_the_paper(table: str, row: str, set_name: str, psnr: float) -> None:
    assert load_paper().cells[(table, row, set_name)] == psnr


def test_paper_file_is_complete_and_matches_the_configs() -> None:
    paper = load_paper()
    names = [r.row for r in paper.rows]
    assert len(names) == len(set(names)), "row names map jobs to rows: they must be unique"
    folder = {"1": "table1", "2": "table2", "3": "table3", "figure3": "figure3"}
    configs = {str(p.relative_to(CONF).with_suffix("")) for p in CONF.rglob("*.yaml")}
    rows = {f"{folder[r.table]}/{r.row}" for r in paper.rows}
    assert rows == {c for c in configs if not c.startswith("mono/")}
    for r in paper.rows:
        if r.table in ("1", "3"):
            cells = [paper.cells[(r.table, r.row, s)] for s in (*PAPER_SETS, "average")]
            if r.row != "poisson30-anscombe":  # quoted from [22]; its average is not the mean of the three
                assert abs(sum(cells[:3]) / 3 - cells[3]) < 0.011, r.row
    assert len(paper.table("1")) == 18 and len(paper.table("3")) == 21 and len(paper.table("2")) == 28


# ------------------------------------------------------------------------------------------ fake sweeps


def make_job(
    root: Path,
    num: int,
    name: str,
    experiment: str | None = None,
    psnr: dict[str, float] | None = None,
    noise: tuple[str, Any] = ("gaussian", 25),
    masking: str | None = None,
    source: str = "known",
    protocol: dict[str, Any] | None = None,
    curve: list[tuple[int, float]] = (),
    levels: list[tuple[int, float]] = (),
    failed: bool = False,
) -> Path:
    """A job folder as train.py writes it (only the files the report reads)."""
    job = root / f"{num}-{name}"
    (job / ".hydra").mkdir(parents=True)
    config = {
        "run": {"name": name, "group": "test"},
        "noise": {"name": noise[0], "value": noise[1]},
        "method": {"masking": masking},
        "noise_params": {"source": source},
        "data": {"batch_size": 4, "subset": None},
        "output_dir": "${hydra:runtime.output_dir}",  # as in a real job: must not break the reader
    }
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    choices = (
        {"experiment": None}
        if experiment is None
        else {f"experiment/{experiment.split('/')[0]}": experiment.split("/")[1], "experiment": None}
    )
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    if failed:
        (job / "failed.txt").write_text("Traceback: boom\n")
    if psnr is not None:
        sets = {
            s: {
                "reported": "pme",
                "count": 240,
                "psnr": {"noisy": 20.0, "pme": v},
                "protocol": {"limit": None, "crop": None, "repeats": None, "pad_mode": "authors"}
                | (protocol or {}),
            }
            for s, v in psnr.items()
        }
        (job / "results.json").write_text(json.dumps({"method": "x", "sets": sets}))
        (job / "metrics.json").write_text(json.dumps({"images_seen": curve[-1][0] if curve else 8}))
    lines = ["epoch,step,train/images_seen,train/noise_level,val/psnr"]
    lines += [f"0,{n // 4 - 1},{n},{lvl}," for n, lvl in levels]
    lines += [f"0,{n // 4 - 1},,,{p}" for n, p in curve]
    (job / "csv").mkdir()
    (job / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return job


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        return {r["row"]: r for r in csv.DictReader(fh)}


FULL = {"kodak": 32.40, "bsd300": 31.00, "set14": 31.20}


def test_report_fills_the_rows_run_and_leaves_the_rest_missing(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, "gauss25-n2n", "table1/gauss25-n2n", FULL)
    make_job(
        sweep,
        1,
        "impulse50-blindspot-sigma_global",
        "table3/impulse50-blindspot-sigma_global",
        {"kodak": 33.0, "bsd300": 30.5, "set14": 31.0},
        noise=("impulse", 0.5),
        source="global",
    )
    make_job(sweep, 2, "gauss25-blindspot-sigma_known", "table1/gauss25-blindspot-sigma_known", failed=True)
    report.main([str(sweep), "--out", str(tmp_path / "out"), "--no-plots"])

    t1 = read_csv(tmp_path / "out" / "table1.csv")
    n2n = t1["gauss25-n2n"]
    assert (float(n2n["kodak_ours"]), float(n2n["kodak_paper"])) == (32.40, 32.45)
    assert float(n2n["kodak_diff"]) == pytest.approx(-0.05)
    assert float(n2n["average_ours"]) == pytest.approx(sum(FULL.values()) / 3, abs=1e-4)
    assert n2n["status"] == "ok"
    assert t1["gauss25-blindspot-sigma_known"]["status"] == "failed"
    assert t1["gauss25-blindspot-sigma_known"]["kodak_ours"] == ""
    filled = [
        r
        for t in ("table1", "table2", "table3")
        for r in read_csv(tmp_path / "out" / f"{t}.csv").values()
        if r["status"].startswith("ok")
    ]
    assert sorted(r["row"] for r in filled) == ["gauss25-n2n", "impulse50-blindspot-sigma_global"]
    missing = [r for r in t1.values() if r["status"] == "missing"]
    assert len(missing) == 16 and all(r["kodak_ours"] == "" and r["kodak_paper"] for r in missing)

    md = (tmp_path / "out" / "table1.md").read_text()
    assert "| Baseline, N2N | no | 32.40 | 32.45 | -0.05 |" in md
    assert "| Our | yes | — | 32.45 | — |" in md
    assert (tmp_path / "out" / "report.md").read_text().count("### Table") == 3
    runs = read_csv_rows(tmp_path / "out" / "runs.csv")
    assert [r["status"] for r in runs] == ["ok", "ok", "failed"]


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_rows_found_by_run_name_latest_duplicate_wins_and_off_protocol_is_marked(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    old = make_job(sweep, 0, "gauss25-n2c", None, {s: 20.0 for s in PAPER_SETS})
    new = make_job(sweep, 1, "gauss25-n2c", None, {s: 30.0 for s in PAPER_SETS}, protocol={"limit": 2})
    os.utime(old / "results.json", (1, 1))  # older
    report.main([str(sweep), "--out", str(tmp_path / "out"), "--no-plots"])
    row = read_csv(tmp_path / "out" / "table1.csv")["gauss25-n2c"]
    assert float(row["kodak_ours"]) == 30.0 and row["run"] == str(new)
    assert "off-protocol: limit=2" in row["status"]
    assert "| 30.00* |" in (tmp_path / "out" / "table1.md").read_text()
    used = {r["run"]: r["used"] for r in read_csv_rows(tmp_path / "out" / "runs.csv")}
    assert used == {str(old): "no", str(new): "yes"}


def test_table2_all_images_cell_uses_the_identical_table1_run(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, "gauss25-blindspot-sigma_known", "table1/gauss25-blindspot-sigma_known", FULL)
    make_job(sweep, 1, "gauss25-n2c-n100-rot", "table2/gauss25-n2c-n100-rot", {s: 31.0 for s in PAPER_SETS})
    report.main([str(sweep), "--out", str(tmp_path / "out"), "--no-plots"])
    t2 = read_csv(tmp_path / "out" / "table2.csv")
    assert float(t2["gauss25-blindspot-sigma_known-nall"]["average_ours"]) == pytest.approx(31.5333, abs=1e-4)
    assert "same configuration" in t2["gauss25-blindspot-sigma_known-nall"]["status"]
    assert float(t2["gauss25-n2c-n100-rot"]["average_diff"]) == pytest.approx(31.0 - 31.21)
    assert t2["gauss25-n2c-nall"]["status"] == "missing"
    md = (tmp_path / "out" / "table2.md").read_text()
    assert "31.53† / 31.57 / -0.04" in md and "31.00 / 31.21 / -0.21" in md


def test_plots_figure3_axis_and_noise_levels(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    curve = [(2_000_000, 31.0), (8_000_000, 32.0)]
    make_job(
        sweep,
        0,
        "gauss25-masking_random-sigma_known",
        "figure3/gauss25-masking_random-sigma_known",
        {"kodak": 32.1},
        masking="random",
        curve=curve,
    )
    make_job(
        sweep,
        1,
        "gauss25-blindspot-sigma_known-ema",
        "figure3/gauss25-blindspot-sigma_known-ema",
        {"kodak": 32.3},
        curve=[(1_000_000, 32.0), (2_000_000, 32.3)],
    )
    make_job(
        sweep,
        2,
        "gauss5_50-blindspot-sigma_per_image",
        "table1/gauss5_50-blindspot-sigma_per_image",
        FULL,
        noise=("gaussian", [5, 50]),
        source="per_image",
        curve=[(400, 25.0)],
        levels=[(4, 3.0), (8, 20.0), (400, 27.0)],
    )
    written = report.main([str(sweep), "--out", str(tmp_path / "out")])
    pngs = sorted(p.name for p in written if p.suffix == ".png")
    assert pngs == ["figure3.png", "noise_level.png", "val_psnr-gauss25.png", "val_psnr-gauss5_50.png"]
    for name in pngs:
        with Image.open(tmp_path / "out" / name) as img:
            assert img.format == "PNG" and img.width > 100
    assert "![figure3](figure3.png)" in (tmp_path / "out" / "report.md").read_text()


def test_training_cost_counts_masking_minibatches_four_times_cheaper() -> None:
    blind = RunRecord(
        source="a", name="a", experiment=None, status="ok", config={"method": {"masking": None}}
    )
    masking = RunRecord(
        source="b", name="b", experiment=None, status="ok", config={"method": {"masking": "random"}}
    )
    assert training_cost(blind, 2_000_000) == 1.0  # 0.5M minibatches of 4
    assert training_cost(masking, 8_000_000) == 1.0  # 2M masking minibatches
    assert training_cost(masking, 80_000_000) == 10.0


def test_small_scale_figure3_counts_cost_in_its_blind_spot_run() -> None:
    def job(masking: str | None, images: int) -> RunRecord:
        config = {"method": {"masking": masking}, "train": {"images": images}}
        return RunRecord(source="j", name="j", experiment="figure3/j", status="ok", config=config)

    small = [job(None, 800), job("random", 3_200)]
    assert figure3_unit(small) == 800  # bench/masking.py: 200 blind-spot minibatches of 4 are cost 1
    assert training_cost(small[1], 3_200, figure3_unit(small)) == 1.0
    assert figure3_unit([job(None, 2_000_000), job("copy", 80_000_000)]) == 2_000_000  # the paper's
    assert figure3_unit([job("copy", 80_000_000)]) == 2_000_000


def test_train_files_are_written_from_the_checkpoint(tmp_path: Path) -> None:
    job = make_job(tmp_path / "sweep", 0, "gauss25-n2c-n100", "table2/gauss25-n2c-n100", FULL)
    files = [f"/data/img{i}.JPEG" for i in range(3)]
    (job / "checkpoints").mkdir()
    torch.save({"DenoisingDataModule": {"train": {"files": files}}}, job / "checkpoints" / "last.ckpt")
    cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
    cfg["data"]["subset"] = 100
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    callback = report.RecordTrainFiles()
    callback.on_job_end(OmegaConf.create({"hydra": {"runtime": {"output_dir": str(job)}}}), None)
    assert (job / "train_files.txt").read_text().splitlines() == files
    report.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out"), "--no-plots"])
    row = read_csv(tmp_path / "out" / "table2.csv")["gauss25-n2c-n100"]
    assert row["train_files"] == "3" and len(row["train_files_sha1"]) == 12


def test_a_folder_without_results_is_named_in_the_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "multirun" / "nothing"
    make_job(empty, 0, "gauss25-n2c", "table1/gauss25-n2c", failed=True)
    with pytest.raises(SystemExit) as exit_info:
        report.main([str(empty), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert re.search(rf"{re.escape(str(empty))}: no results.json .*1 failed", capsys.readouterr().err)
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "absent"), "--out", str(tmp_path / "out")])
    assert "no such folder" in capsys.readouterr().err


def test_wandb_is_never_asked_without_an_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import wandb

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(wandb, "Api", lambda *a, **k: pytest.fail("wandb.Api called without credentials"))
    with pytest.raises(SystemExit):
        report.main(["--wandb-group", "table1", "--out", str(tmp_path / "out")])
    assert "no W&B API key" in capsys.readouterr().err
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with pytest.raises(SystemExit):
        report.main(["--wandb-group", "table1", "--out", str(tmp_path / "out")])
    assert "no W&B API key" in capsys.readouterr().err


def test_importing_the_report_loads_neither_matplotlib_nor_wandb() -> None:
    """Reporting folders must work without a display or W&B: both load only when plotting / reading a group."""
    code = (
        "import sys, ssdn.report, ssdn.report.__main__; "
        "print(sorted(m for m in ('matplotlib', 'wandb') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
