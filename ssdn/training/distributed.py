"""Multi-process training: the DDP launcher that survives Hydra multiruns (job placement and requeue:
``ssdn.training.hydra_job``).

Why a strategy of our own: Lightning's ``ddp`` starts ranks 1..N-1 by re-running ``sys.argv``. Inside a Hydra
multirun that command still holds ``-m`` and the sweep, so every extra rank runs the *whole sweep* again (in
lock-step by luck, in a second timestamped output tree), and the parent keeps ``LOCAL_RANK``/``WORLD_SIZE``/
``MASTER_PORT`` in its environment, so the next job believes its ranks were started externally.
:class:`HydraDDPStrategy` starts each extra rank from *this job's* saved config (``<job dir>/.hydra/config.yaml``),
in the job's directory, with no Hydra output of its own; the rank checks that it composed exactly the job's
config, and the parent restores its environment when the job ends. Under SLURM (one task per GPU) or torchrun
the ranks exist already and nothing is started.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy

from ssdn.training.hydra_job import restore_environ
from ssdn.training.lightning_private import (
    SubprocessScriptLauncher,
    check_can_spawn_children,
    set_num_threads_if_needed,
    set_strategy_launcher,
    strategy_start_method,
)

log = logging.getLogger(__name__)

#: Carries the digest of the job's resolved config to the ranks the job starts.
CONFIG_DIGEST_ENV = "SSDN_DDP_CONFIG_DIGEST"
#: Hydra overrides a started rank inherits from its job, so that all ranks log alike.
FORWARDED_HYDRA_OVERRIDES = (
    "hydra.verbose",
    "hydra/job_logging",
    "hydra/hydra_logging",
    "hydra.job_logging",
    "hydra.hydra_logging",
)
#: After a successful fit the started ranks only close their logs; one still alive after this is killed.
RANK_EXIT_TIMEOUT_S = 120.0
#: When a started rank dies mid-job, the job gets this long to fail by itself before its process is ended.
WATCHDOG_GRACE_S = 10.0


class DestroyProcessGroup(Callback):
    """Tear the process group down at the end of a run: DDP on CPU otherwise sometimes aborts at exit.

    It runs in ``teardown``, after the last checkpoint, on every rank at the same point, so nothing that comes
    after ``fit`` (rank 0's example and evaluation) can meet a rank waiting in a collective.
    """

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:  # noqa: ARG002 -- Lightning calls the hook with these names
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def config_digest(record: Mapping[str, Any]) -> str:
    """SHA-256 of the resolved config (``RunConfig.record``): equal digests mean the ranks train exactly the
    same run."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def build_strategy(name: str, digest: str) -> str | Any:
    """The Lightning strategy for ``trainer.strategy``: ``ddp`` becomes :class:`HydraDDPStrategy`, other names
    pass through. In a rank started by that strategy, first check that the rank composed its job's config
    (``digest``: ``config_digest`` of the run config)."""
    if name != "ddp":
        return name
    expected = os.environ.get(CONFIG_DIGEST_ENV)
    if expected is not None and expected != digest:
        raise RuntimeError(
            f"DDP rank {os.environ.get('LOCAL_RANK')} composed a config that differs from its job's "
            f"(digest {digest[:12]} != {expected[:12]}); the job's saved .hydra/config.yaml does not reproduce "
            "the job (a value that depends on hydra.job.* or the time?)"
        )
    return HydraDDPStrategy(config_digest=digest)


class HydraDDPStrategy(DDPStrategy):
    """Lightning's DDP, except that inside a Hydra job the extra ranks run that job only (module docstring)."""

    def __init__(self, config_digest: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config_digest = config_digest

    def _configure_launcher(self) -> None:
        from hydra.core.hydra_config import HydraConfig

        if strategy_start_method(self) != "popen" or not HydraConfig.initialized():
            super()._configure_launcher()
            return
        assert self.cluster_environment is not None
        set_strategy_launcher(
            self,
            HydraJobLauncher(
                self.cluster_environment, self.num_processes, self.num_nodes, self.config_digest
            ),
        )

    def setup_environment(self) -> None:
        super().setup_environment()
        log.info(
            "DDP rank %d of %d (node %d, local rank %d) pid %d",
            self.global_rank,
            self.world_size,
            self.node_rank,
            self.local_rank,
            os.getpid(),
        )


class HydraJobLauncher(SubprocessScriptLauncher):
    """Starts local ranks 1..N-1 as single Hydra runs of the current job, then runs rank 0 here.

    When the fit ends, the started ranks are waited for (or killed after a failure) and the environment and
    thread count are restored, so that the next job of a multirun starts from a clean process.
    """

    def __init__(
        self, cluster_environment: Any, num_processes: int, num_nodes: int, config_digest: str | None
    ) -> None:
        super().__init__(cluster_environment, num_processes, num_nodes)
        self.config_digest = config_digest

    def launch(self, function: Callable, *args: Any, trainer: L.Trainer | None = None, **kwargs: Any) -> Any:
        if self.cluster_environment.creates_processes_externally:  # SLURM, torchrun, or a rank we started
            return super().launch(function, *args, trainer=trainer, **kwargs)
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        saved_env, threads = dict(os.environ), torch.get_num_threads()
        watchdog: RankWatchdog | None = None
        finished = False
        try:
            self._call_children_scripts()
            watchdog = RankWatchdog(self.procs)
            watchdog.start()
            set_num_threads_if_needed(num_processes=self.num_processes)
            result = function(*args, **kwargs)
            finished = True
            return result
        finally:
            if watchdog is not None:
                watchdog.stop()
            self._end_ranks(wait=finished)
            if not finished:
                _abandon_process_group()
            restore_environ(saved_env)
            torch.set_num_threads(threads)

    def _call_children_scripts(self) -> None:
        check_can_spawn_children(self)
        env = self.cluster_environment
        os.environ.update(
            MASTER_ADDR=env.main_address,
            MASTER_PORT=str(env.main_port),
            NODE_RANK=str(env.node_rank()),
            LOCAL_RANK="0",
            WORLD_SIZE=str(self.num_processes * self.num_nodes),
        )
        package_root = str(Path(__file__).resolve().parents[2])  # the folder holding ssdn/
        for local_rank in range(1, self.num_processes):
            command, cwd = rank_command(env.node_rank() * self.num_processes + local_rank)
            child_env = dict(os.environ, LOCAL_RANK=str(local_rank))
            child_env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [package_root, os.environ.get("PYTHONPATH")])
            )
            if self.config_digest is not None:
                child_env[CONFIG_DIGEST_ENV] = self.config_digest
            self.procs.append(subprocess.Popen(command, env=child_env, cwd=cwd))

    def _end_ranks(self, wait: bool) -> None:
        """After a fit the ranks exit by themselves (give them time); after a failure they are killed now."""
        deadline = time.monotonic() + (RANK_EXIT_TIMEOUT_S if wait else 0.0)
        for rank, proc in enumerate(self.procs, start=1):
            try:
                code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                if wait:
                    log.warning(
                        "DDP rank %d (pid %d) still running after the job; killing it", rank, proc.pid
                    )
                proc.kill()
                code = proc.wait()
            if wait and code != 0:
                log.warning("DDP rank %d exited with code %d after a finished fit", rank, code)
        self.procs = []


def rank_command(global_rank: int) -> tuple[list[str], str]:
    """Command and working directory that run ``global_rank`` of the current Hydra job: a single run composed
    from the job's saved config, in the job's directory (and working directory, with ``hydra.job.chdir``),
    writing nothing there but its log file."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    if hc.output_subdir is None:
        raise ValueError(
            "trainer.strategy=ddp inside Hydra starts its ranks from the job's saved config: keep "
            "hydra.output_subdir (default .hydra) set"
        )
    saved = job_dir / hc.output_subdir
    if not (saved / "config.yaml").is_file():
        raise FileNotFoundError(f"the job's saved config {saved / 'config.yaml'} is missing")
    forwarded = [o for o in hc.overrides.hydra if o.startswith(FORWARDED_HYDRA_OVERRIDES)]
    command = [
        sys.executable,
        "-m",
        "ssdn.train",
        "--config-path",
        str(saved),
        "--config-name",
        "config",
        *forwarded,
        f"hydra.run.dir={_quoted(str(job_dir))}",
        "hydra.output_subdir=null",
        f"hydra.job.chdir={hc.job.chdir}",
        f"hydra.job.name={hc.job.name}_rank{global_rank}",
    ]
    return command, get_original_cwd()


def _quoted(value: str) -> str:
    """A Hydra override value taken literally (paths may hold '=', ',' or spaces)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _abandon_process_group() -> None:
    """Drop a process group whose peers are gone (no barrier), so that the next job can create its own."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class RankWatchdog(threading.Thread):
    """Ends this process when a started rank dies mid-job, as Lightning's own observer does: rank 0 would
    otherwise wait in a collective for the 30-minute timeout. Waits ``WATCHDOG_GRACE_S`` first, so that a
    failure raised on every rank is handled by the job itself (recorded, and the sweep goes on)."""

    def __init__(self, procs: list[subprocess.Popen]) -> None:
        super().__init__(daemon=True, name="ssdn-rank-watchdog")
        self.procs = list(procs)
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(1.0):
            failed = [(rank, p.returncode) for rank, p in enumerate(self.procs, start=1) if p.poll()]
            if not failed:
                continue
            if not self._done.wait(WATCHDOG_GRACE_S):
                log.error("DDP rank(s) died mid-job (rank, exit code): %s; ending this process", failed)
                for p in self.procs:
                    if p.poll() is None:
                        p.kill()
                os.kill(os.getpid(), signal.SIGKILL)
            return

    def stop(self) -> None:
        self._done.set()
        self.join()
