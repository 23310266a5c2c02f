"""Pre-emption on a real scheduler: a single-node Slurm (slurmctld + slurmd on this machine, CPUs only) runs a
two-job sweep submitted through ``hydra/launcher=slurm``; one job is requeued (``scontrol requeue``) while it
trains, continues from its ``last.ckpt`` and ends bit-identical to its uninterrupted twin.

Needs root and Debian's ``slurm-wlm`` and ``munge`` (``apt-get install -y slurm-wlm munge``); skipped with the
reason otherwise. The daemons get private ports and state in a temporary folder and are stopped afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from ssdn.training.checkpoints import CheckpointError, read_checkpoint
from tests.cli_subprocess import TINY_CLI, clean_env

pytestmark = pytest.mark.slow

DAEMONS = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, ok: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def _munge_works() -> bool:
    encode = subprocess.run(["munge", "-n"], capture_output=True)
    return (
        encode.returncode == 0
        and subprocess.run(["unmunge"], input=encode.stdout, capture_output=True).returncode == 0
    )


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running one-node cluster; yields the environment (``SLURM_CONF``) that reaches it."""
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        pytest.skip(
            f"Slurm is not installed (missing {', '.join(missing)}): apt-get install -y slurm-wlm munge"
        )
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld/slurmd on localhost needs root")
    root = tmp_path_factory.mktemp("slurm")
    started: list[Path] = []  # pid files of the daemons this fixture started
    if not _munge_works():
        Path("/run/munge").mkdir(exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["munged", "--force"], check=False, capture_output=True)
        started.append(Path("/run/munge/munged.pid"))
        if not _munge_works():
            pytest.skip("munged does not start here (munge -n | unmunge fails)")
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(
        f"""ClusterName=ssdntest
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobRequeue=1
NodeName={host} CPUs={os.cpu_count() or 1} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
    )
    for d in ("state", "spool"):
        (root / d).mkdir()
    env = clean_env(SLURM_CONF=str(conf))
    try:
        for daemon in ("slurmctld", "slurmd"):
            proc = subprocess.run([daemon, "-f", str(conf)], env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                pytest.skip(f"{daemon} does not start here: {proc.stderr.strip()[-500:]}")
            started.append(root / f"{daemon}.pid")
        sinfo = ["sinfo", "-h", "-o", "%t"]
        _wait(
            "the node to be idle",
            lambda: "idle" in subprocess.run(sinfo, env=env, capture_output=True, text=True).stdout,
        )
        yield env
    finally:
        for pid_file in reversed(started):
            if pid_file.is_file():
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)


def _step(ckpt: Path) -> int:
    try:
        return int(read_checkpoint(ckpt)["global_step"])
    except CheckpointError:
        return -1


def test_requeued_job_continues_from_its_checkpoint(slurm: dict[str, str], tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=slurm",
        *TINY_CLI,
        "logger=csv",
        "trainer.max_steps=40",
        "trainer.checkpoint_every_n_steps=5",
        "data.val_count=0",
        "trainer.log_every_n_steps=1,2",  # two jobs that train identically
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.cpus_per_gpu=null",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=30",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=${hydra.job.num}",
    ]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "ssdn.train", *args],
        cwd=tmp_path,
        env=slurm,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    victim = sweep / "0"
    try:
        _wait(
            "job 0 to checkpoint step 5",
            lambda: _step(victim / "checkpoints" / "last.ckpt") >= 5,
            timeout=300,
        )
        squeue = subprocess.run(["squeue", "-h", "-o", "%i"], env=slurm, capture_output=True, text=True)
        jobs = squeue.stdout.split()
        assert jobs, "no job in the queue"
        # submitit submits the sweep as one array: element _0 is job 0
        job_id = next(j for j in jobs if j.endswith("_0"))
        subprocess.run(["scontrol", "requeue", job_id], env=slurm, check=True)
        subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], env=slurm, check=True)
        out, _ = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, out[-4000:]
    for job in (sweep / "0", sweep / "1"):
        assert (job / "metrics.json").is_file() and not (job / "failed.txt").exists(), job
    log = (victim / "train.log").read_text()
    assert "SLURM restart 1: continuing from" in log and "resuming from" in log
    a, b = (read_checkpoint(sweep / j / "checkpoints" / "last.ckpt") for j in ("0", "1"))
    assert a["global_step"] == b["global_step"] == 40
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
