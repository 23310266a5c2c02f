"""DDP on two CPU processes (gloo): one run behaves like one process with the same global batch and writes its
outputs once; a Hydra multirun starts exactly one job's ranks per job; a failing job leaves the sweep going.

The DDP runs go through the CLI in a subprocess (tests/cli_subprocess.py). The comparison uses
``data.fixed_noise=true``: each rank draws its training noise from its own generator, so only noise that comes
with the data makes DDP and one process see identical noisy inputs (the clean crops are identical anyway).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from ssdn.config.run import RunConfig
from ssdn.train import run
from ssdn.training.checkpoints import read_checkpoint
from ssdn.training.distributed import CONFIG_DIGEST_ENV, HydraDDPStrategy, build_strategy, config_digest
from ssdn.training.hydra_job import gpu_for_job, job_environment, pin_job_to_gpu, resume_after_requeue
from tests.cli_subprocess import TINY_CLI, clean_env, logged_losses, train_cli
from tests.conftest import compose_config, shared_data_root

#: Three fp32 steps of global batch 4 with the noise fixed by the data (see the module docstring).
COMPARE = (
    "data.crop_size=32",
    "data.batch_size=4",
    "data.val_size=32",
    "data.val_count=1",
    "data.fixed_noise=true",
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "trainer.checkpoint_every_n_steps=3",
    "trainer.log_every_n_steps=1",
    "trainer.precision=32-true",
    "trainer.enable_progress_bar=false",
    "example.enabled=false",
)


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(ckpt)["state_dict"]


@pytest.mark.slow
def test_ddp_run_matches_single_process_and_writes_once(tmp_path: Path) -> None:
    from tests.wandb_offline import read_offline_run

    data_root = shared_data_root()
    evals = (
        ["eval.sets=[kodak]", "eval.limit=1", "eval.crop=64", "eval.repeats=1", f"eval.root={data_root}"]
        if data_root is not None
        else []
    )
    ddp = tmp_path / "ddp"
    train_cli(
        *COMPARE,
        *evals,
        "logger=wandb",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={ddp}",
        cwd=tmp_path,
        env=clean_env(WANDB_MODE="offline"),
    )
    single = tmp_path / "single"
    run(compose_config(*COMPARE, "logger=csv", "trainer=cpu", output_dir=single))

    # one output tree, one checkpoint set, one W&B run, both ranks trained
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single"]
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert sorted(p.name for p in ddp.glob("*.log")) == ["train.log", "train_rank1.log"]
    assert "DDP rank 0 of 2" in (ddp / "train.log").read_text()
    assert "DDP rank 1 of 2" in (ddp / "train_rank1.log").read_text()
    (wandb_run,) = (ddp / "wandb").glob("offline-run-*")
    logged = read_offline_run(wandb_run)
    assert sum("train/loss" in row for row in logged["history"]) == 3

    # the schedule counts global images: 3 steps × 4, as in one process
    metrics = json.loads((ddp / "metrics.json").read_text())
    assert metrics["images_seen"] == 12 == logged["summary"]["images_seen"]
    if data_root is not None:
        assert set(json.loads((ddp / "results.json").read_text())["sets"]) == {"kodak"}
        assert metrics["test/kodak/count"] == 1

    # the loss (mean over ranks) and the weights follow the single-process run
    ddp_loss, single_loss = logged_losses(ddp), logged_losses(single)
    assert sorted(ddp_loss) == sorted(single_loss) == [0, 1, 2]
    for step, loss in single_loss.items():
        assert ddp_loss[step] == pytest.approx(loss, rel=1e-4), step
    a, b = _weights(ddp / "checkpoints" / "last.ckpt"), _weights(single / "checkpoints" / "last.ckpt")
    assert max(float((a[k] - b[k]).abs().max()) for k in b) < 1e-3


@pytest.mark.slow
def test_ddp_sweep_runs_each_job_once_on_two_ranks(tmp_path: Path) -> None:
    out = train_cli(
        "-m",
        "noise=gaussian,poisson",
        *TINY_CLI,
        "logger=csv",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert [p.name for p in tmp_path.iterdir()] == ["sweep"]  # no second (timestamped) output tree
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0-gauss25-blindspot-sigma_known", "1-poisson30-blindspot-sigma_known"]
    assert (
        out.count("#0 : noise=gaussian") == 1 and out.count("#1 : noise=poisson") == 1
    )  # the sweep ran once
    rank1_pids = set()
    for job in jobs:
        assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
        assert sorted(p.name for p in job.glob("*.log")) == ["train.log", "train_rank1.log"]
        assert "DDP rank 0 of 2" in (job / "train.log").read_text()
        rank1 = re.search(r"DDP rank 1 of 2 .* pid (\d+)", (job / "train_rank1.log").read_text())
        assert rank1 is not None
        rank1_pids.add(rank1.group(1))
        assert json.loads((job / "metrics.json").read_text())["images_seen"] == 4
    assert len(rank1_pids) == 2  # each job started its own rank 1: no leaked LOCAL_RANK from the first job


@pytest.mark.slow
def test_failed_ddp_job_does_not_end_the_sweep(tmp_path: Path) -> None:
    train_cli(
        "-m",
        "data.train_dir=/nonexistent,skimage",
        *TINY_CLI,
        "logger=csv",
        "trainer=ddp_cpu",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra.sweep.subdir=${hydra.job.num}",
        cwd=tmp_path,
    )
    failed, ok = tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"
    assert "train_dir" in (failed / "failed.txt").read_text()
    assert (ok / "checkpoints" / "last.ckpt").is_file() and not (ok / "failed.txt").exists()
    assert "DDP rank 1 of 2" in (ok / "train_rank1.log").read_text()


# ---------------------------------------------------------------- units (no processes started)


def test_build_strategy_checks_the_rank_config(monkeypatch: pytest.MonkeyPatch) -> None:
    digest = config_digest(
        RunConfig.from_dictconfig(compose_config("trainer=ddp_cpu", output_dir="/tmp/x")).record
    )
    assert build_strategy("auto", digest) == "auto"
    strategy = build_strategy("ddp", digest)
    assert isinstance(strategy, HydraDDPStrategy) and strategy.config_digest == digest
    monkeypatch.setenv(CONFIG_DIGEST_ENV, digest)
    assert isinstance(build_strategy("ddp", digest), HydraDDPStrategy)
    other = compose_config("trainer=ddp_cpu", "seed=1", output_dir="/tmp/x")
    monkeypatch.setenv(CONFIG_DIGEST_ENV, config_digest(RunConfig.from_dictconfig(other).record))
    with pytest.raises(RuntimeError, match="differs from its job"):
        build_strategy("ddp", digest)


def test_job_environment_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSDN_TEST_KEEP", "1")
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    with job_environment():
        os.environ |= {"LOCAL_RANK": "0", "PL_GLOBAL_SEED": "3", "SSDN_TEST_KEEP": "2"}
        del os.environ["SSDN_TEST_KEEP"]
    assert "LOCAL_RANK" not in os.environ and "PL_GLOBAL_SEED" not in os.environ
    assert os.environ["SSDN_TEST_KEEP"] == "1"


def test_gpu_for_job_is_round_robin() -> None:
    assert [gpu_for_job(k, 3) for k in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(ValueError):
        gpu_for_job(0, 0)


def test_pin_job_to_gpu_sets_one_device() -> None:
    cfg = compose_config("trainer=gpu_per_job")
    assert pin_job_to_gpu(cfg.trainer, job_num=5, n_gpus=2) == 1
    assert list(cfg.trainer.devices) == [1] and RunConfig.from_dictconfig(cfg).trainer.world_size == 1
    plain = compose_config("trainer=gpu")
    assert pin_job_to_gpu(plain.trainer, job_num=5, n_gpus=2) is None and plain.trainer.devices == 1
    with pytest.raises(ValueError, match="CUDA"):
        pin_job_to_gpu(compose_config("trainer=gpu_per_job").trainer, job_num=0, n_gpus=0)


def test_requeued_job_resumes_from_its_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    # nothing to resume from yet: resume=auto starts fresh in the killed one's folder
    assert resume_after_requeue(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    (tmp_path / "failed.txt").write_text("killed by the requeue")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert not resume_after_requeue(tmp_path)  # first attempt
    assert (tmp_path / "failed.txt").exists()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert resume_after_requeue(tmp_path) and not (tmp_path / "failed.txt").exists()
