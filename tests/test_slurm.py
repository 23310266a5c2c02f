"""Launchers: the sbatch script of ``hydra/launcher=slurm`` (rendered by submitit without a cluster), a job run
end to end by submitit's local executor and then requeued the way SLURM does it, and the joblib GPU launcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from ssdn.config.compose import conf_dir, prepare_hydra
from ssdn.training.hydra_job import num_gpus
from tests.cli_subprocess import TINY_CLI, clean_env, train_cli


def _with_hydra(*overrides: str, sweep_dir: Path) -> DictConfig:
    """The composed config including its ``hydra`` node, as a multirun would see it."""
    prepare_hydra()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="train"):
        return compose(
            "config", overrides=[*overrides, f"hydra.sweep.dir={sweep_dir}"], return_hydra_config=True
        )


@pytest.mark.filterwarnings("ignore:.*cpus_per_gpu.*:UserWarning")
def test_slurm_launcher_starts_one_task_per_gpu_and_requeues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import submitit
    from hydra.utils import instantiate
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = _with_hydra(
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
        sweep_dir=tmp_path / "sweep",
    )
    launcher = instantiate(cfg.hydra.launcher)
    assert (
        type(launcher).__name__ == "SlurmLauncher"
    )  # Hydra's plugin loader imports its own copy of the class
    params = dict(launcher.params)
    assert params["submitit_folder"] == f"{tmp_path / 'sweep'}/.submitit/%j"

    # what SlurmLauncher.launch does with its params, minus sbatch; submitit only checks that srun exists
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "srun").write_text("#!/bin/sh\n")
    (bindir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(
        folder=tmp_path / "submitit", cluster="slurm", slurm_max_num_timeout=params.pop("max_num_timeout")
    )
    params.pop("submitit_folder")
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -u -m submitit.core._submit x", "uid")

    lines = set(script.splitlines())
    assert {
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-gpu=8",
        "#SBATCH --partition=gpu",
        "#SBATCH --requeue",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --job-name=train",
    } <= lines, script
    assert "--cpus-per-task" not in script
    assert any(line.startswith("srun ") for line in lines)  # srun starts the tasks: Lightning spawns nothing
    assert executor._executor.max_num_timeout == 3


@pytest.mark.slow
def test_submitit_local_job_and_its_requeue_share_one_directory(tmp_path: Path) -> None:
    train_cli("-m", "hydra/launcher=local", "logger=csv", *TINY_CLI, cwd=tmp_path)
    (sweep,) = (tmp_path / "multirun").iterdir()  # default sweep dir: multirun/<time>
    assert [p.name for p in tmp_path.iterdir()] == ["multirun"]
    (job,) = [p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert (job / "checkpoints" / "last.ckpt").is_file() and (job / "metrics.json").is_file()
    (folder,) = [p for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
    assert (folder / f"{folder.name}_submitted.pkl").is_file()
    assert (folder / f"{folder.name}_0_result.pkl").is_file()

    # A requeued SLURM job runs its pickled submission again, with SLURM_RESTART_COUNT set.
    env = clean_env(
        SUBMITIT_EXECUTOR="local",
        SUBMITIT_LOCAL_JOB_ID=folder.name,
        SUBMITIT_LOCAL_NTASKS="1",
        SUBMITIT_LOCAL_GLOBALID="0",
        SUBMITIT_LOCAL_LOCALID="0",
        SUBMITIT_LOCAL_NODEID="0",
        SUBMITIT_LOCAL_JOB_NUM_NODES="1",
        SLURM_RESTART_COUNT="1",
    )
    subprocess.run(
        [sys.executable, "-m", "submitit.core._submit", str(folder)],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    assert [p.name for p in (tmp_path / "multirun").iterdir()] == [
        sweep.name
    ]  # same sweep dir, not a new one
    assert [p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")] == [job]
    log = (job / "train.log").read_text()
    assert "SLURM restart 1: continuing from" in log and "resuming from" in log
    # the job had finished: the requeue keeps its results instead of rewriting them
    assert "finished at step 2: nothing to do" in log
    assert "train/loss" in json.loads((job / "metrics.json").read_text())


def test_joblib_gpus_launcher_runs_one_job_per_gpu(tmp_path: Path) -> None:
    cfg = _with_hydra("hydra/launcher=joblib_gpus", "trainer=gpu_per_job", sweep_dir=tmp_path)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher")
    assert launcher.n_jobs == num_gpus() >= 1 and launcher.batch_size == "1"
    assert cfg.trainer.pin_job_to_gpu is True and cfg.trainer.accelerator == "gpu"


def test_local_launcher_runs_one_task_per_job(tmp_path: Path) -> None:
    cfg = _with_hydra("hydra/launcher=local", "trainer=ddp_cpu", sweep_dir=tmp_path)
    assert cfg.hydra.launcher._target_.endswith("LocalLauncher")
    assert cfg.hydra.launcher.tasks_per_node == 1 and cfg.hydra.launcher.gpus_per_node == num_gpus()
