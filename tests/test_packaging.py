"""The built wheel works on its own: installed (not editable) outside the checkout, it trains a tiny run from its
packaged configs and runs the other commands, from a folder that is not the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import TINY

CHECKOUT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path, env: dict[str, str], timeout: int = 600) -> str:
    proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} exited with {proc.returncode}:\n{output[-6000:]}"
    return output


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The wheel built from a clean copy of the sources (a stale ``build/`` would leak old files into it),
    installed into a fresh target; the environment that imports ``ssdn`` from there only."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(CHECKOUT / name, src / name)
    shutil.copytree(CHECKOUT / "ssdn", src / "ssdn", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SSDN_CONF_DIR")}
    env |= {"WANDB_MODE": "disabled", "WANDB_SILENT": "true", "PIP_NO_INDEX": "1"}
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check")
    _run(
        *pip,
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp / "dist"),
        str(src),
        cwd=tmp,
        env=env,
    )
    (wheel,) = (tmp / "dist").glob("ssdn-*.whl")
    site = tmp / "site"
    _run(*pip, "install", "--no-deps", "-q", "--target", str(site), str(wheel), cwd=tmp, env=env)
    return site, env | {"PYTHONPATH": str(site)}


@pytest.mark.slow
def test_wheel_holds_every_config_and_data_file(installed: tuple[Path, dict[str, str]]) -> None:
    site, _ = installed
    (wheel,) = (site.parent / "dist").glob("ssdn-*.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        p.relative_to(CHECKOUT).as_posix()
        for pattern in ("*.yaml", "*.json")
        for p in (CHECKOUT / "ssdn").rglob(pattern)
    }
    assert {"ssdn/conf/config.yaml", "ssdn/report/paper_results.json", "ssdn/data/testsets.json"} <= expected
    assert sorted(expected - packaged) == []


@pytest.mark.slow
def test_installed_wheel_trains_and_runs_outside_the_checkout(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    site, env = installed
    probe = (
        "import json, sys, ssdn, ssdn.config.compose; "
        "print(json.dumps([ssdn.__file__, str(ssdn.config.compose.conf_dir()), sys.path]))"
    )
    module_file, conf, path = json.loads(
        _run(sys.executable, "-c", probe, cwd=tmp_path, env=env).splitlines()[-1]
    )
    assert Path(module_file).is_relative_to(site) and Path(conf).is_relative_to(site)
    assert not any(p and Path(p).resolve() == CHECKOUT for p in path), f"the checkout is on sys.path: {path}"

    run_dir = tmp_path / "run"
    script = site / "bin" / "ssdn-train"  # the console script, as pip installs it
    _run(str(script), *TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path, env=env)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["images_seen"] == 4 and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()

    assert "usage:" in _run(sys.executable, "-m", "ssdn.denoise", "--help", cwd=tmp_path, env=env)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing written beside the run
