"""Sweeps as a user runs them: the documented commands select every row of their table; a multirun of three
experiments ends in a report with those rows filled and the others missing; the noise sweep names its jobs by
noise; a failing job does not end the sweep. Multiruns run ``train.py -m`` in a subprocess on tiny settings."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from ssdn import report
from tests.conftest import PROJECT_ROOT, TINY

CONF = PROJECT_ROOT / "ssdn" / "conf"
SWEEPS = PROJECT_ROOT / "sweeps"


def _commands(readme: Path) -> list[str]:
    """The ``python train.py -m ...`` commands of a README (line continuations joined)."""
    text = readme.read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip().startswith("python train.py -m")]


def _expand(override: str) -> list[str]:
    """The experiments a sweep override selects, as Hydra's basic sweeper expands it."""
    parsed = OverridesParser.create().parse_overrides([override])[0]
    group = parsed.get_key_element().lstrip("+")
    if parsed.is_sweep_override() and hasattr(parsed.value(), "filter"):  # glob(...)
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            options = GlobalHydra.instance().config_loader().get_group_options(group)
        prefix = group.split("/", 1)[1] + "/" if "/" in group else ""
        return [prefix + o for o in parsed.value().filter(options)]
    return [str(v) for v in parsed.sweep_string_iterator()]


def _rows(folder: str) -> set[str]:
    return {f"{folder}/{p.stem}" for p in (CONF / "experiment" / folder).glob("*.yaml")}


@pytest.mark.parametrize(
    ("sweep", "expected"),
    [
        ("table1", _rows("table1")),
        ("table2", _rows("table2")),
        ("table3", _rows("table3")),
        ("figure3", _rows("figure3")),
        ("mono", _rows("mono")),
        ("classical", {r for r in _rows("table1") | _rows("table3") if "cbm3d" in r or "anscombe" in r}),
    ],
)
def test_each_sweep_command_selects_every_row_of_its_table(sweep: str, expected: set[str]) -> None:
    (command,) = _commands(SWEEPS / sweep / "README.md")
    (override,) = [a.strip("'") for a in command.split() if re.match(r"'?\+?experiment", a)]
    assert set(_expand(override)) == expected
    assert f"hydra.sweep.dir=multirun/{sweep}" in command
    assert f"python -m ssdn.report multirun/{sweep}" in (SWEEPS / sweep / "README.md").read_text()


def test_top_level_readme_lists_every_sweep() -> None:
    text = (SWEEPS / "README.md").read_text()
    for sweep in ("table1", "table2", "table3", "figure3", "classical", "mono"):
        assert f"({sweep}/README.md)" in text
    assert "python train.py -m noise=gaussian,poisson,impulse" in text


def _multirun(sweep_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    keys = {o.split("=", 1)[0] for o in overrides}
    tiny = [o for o in TINY if o.split("=", 1)[0] not in keys]
    cmd = [sys.executable, "train.py", "-m", *overrides, "trainer=cpu", *tiny, f"hydra.sweep.dir={sweep_dir}"]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_three_experiments_end_in_a_report_with_those_rows_filled(data_root: Path, tmp_path: Path) -> None:
    rows = [
        "table1/gauss25-n2n",
        "table3/poisson5_50-blindspot-sigma_per_image",
        "table2/gauss25-blindspot-sigma_known-n100-rot",
    ]
    sweep = tmp_path / "multirun"
    _multirun(
        sweep,
        f"experiment={','.join(rows)}",
        "data=embedded",
        "data.subset=2",
        "eval.limit=2",
        "eval.crop=32",
        "eval.repeats=1",
        f"eval.root={data_root}",
        "trainer.log_every_n_steps=1",
        "++hydra.callbacks.train_files._target_=ssdn.report.RecordTrainFiles",
    )
    jobs = sorted(p.parent.name for p in sweep.glob("*/results.json"))
    assert jobs == [f"{i}-{r.split('/')[1]}" for i, r in enumerate(rows)]
    assert (sweep / f"2-{rows[2].split('/')[1]}" / "train_files.txt").read_text().count("\n") == 2

    out = tmp_path / "reports"
    report.main([str(sweep), "--out", str(out)])
    filled, missing = [], 0
    for table in ("table1", "table2", "table3"):
        with (out / f"{table}.csv").open(newline="") as fh:
            for r in csv.DictReader(fh):
                if r["status"].startswith("ok"):
                    filled.append(f"{table}/{r['row']}")
                    assert r["average_ours"] and "off-protocol" in r["status"]
                else:
                    missing += 1
                    assert r["status"] == "missing" and r["average_ours"] == ""
    assert sorted(filled) == sorted(rows)
    assert missing == 18 + 21 + 28 - 3
    assert {p.name for p in out.glob("*.png")} >= {"noise_level.png", "val_psnr-gauss25.png"}


@pytest.mark.slow
def test_noise_sweep_runs_three_jobs_named_by_noise(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun"
    _multirun(sweep, "noise=gaussian,poisson,impulse")
    names = [
        "0-gauss25-blindspot-sigma_known",
        "1-poisson30-blindspot-sigma_known",
        "2-impulse50-blindspot-sigma_known",
    ]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == names
    for name in names:
        assert (sweep / name / "metrics.json").is_file() and (
            sweep / name / "checkpoints" / "last.ckpt"
        ).is_file()


@pytest.mark.slow
def test_a_failing_job_does_not_end_the_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun"
    _multirun(sweep, "data.crop_size=48,32")  # 48 is not a multiple of 32: job 0 fails validation
    failed = sweep / "0-gauss25-blindspot-sigma_known" / "failed.txt"
    assert "data.crop_size=48" in failed.read_text()
    done = sweep / "1-gauss25-blindspot-sigma_known"
    assert (done / "metrics.json").is_file() and not (done / "failed.txt").exists()
