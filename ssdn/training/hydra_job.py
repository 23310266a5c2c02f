"""The job around a training run: its environment restored when it ends (multiruns reuse the process), a
SLURM requeue continuing from the last checkpoint, and one GPU per job for local sweeps.

Kept apart from ``ssdn.training.distributed`` (how one job spreads over several processes): these concern which job
runs where and with what environment, whatever the strategy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def num_gpus() -> int:
    """Visible CUDA devices, at least 1, so that a launcher sized by it also runs (one job) on a CPU machine.

    Launcher configs read it as ``${ssdn_num_gpus:}`` (registered by ``ssdn.config.compose.prepare_hydra``)."""
    return max(1, torch.cuda.device_count())


def restore_environ(saved: Mapping[str, str]) -> None:
    """Make ``os.environ`` equal to ``saved`` again, touching only the variables that changed."""
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


@contextmanager
def job_environment() -> Iterator[None]:
    """Run one Hydra job with ``os.environ`` restored afterwards: Lightning leaves ``PL_GLOBAL_SEED`` and rank
    variables behind, and the next job of a multirun in this process must not inherit them."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        restore_environ(saved)


def resume_after_requeue(output_dir: Path) -> bool:
    """True for a requeued SLURM job (time limit via submitit, or pre-emption): it continues from its run
    directory's ``last.ckpt`` (``resume=auto``), whatever the first attempt was given; the killed attempt's
    failure marker is dropped. Without a checkpoint yet it starts afresh, still as ``resume=auto``: the killed
    attempt's logs must not make the folder look like someone else's run. A finished job stays as it is
    (``ssdn.train``). Requeued jobs land in the same directory: the sweep dir is resolved once and pickled with
    the job."""
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    if restarts < 1:
        return False
    last = output_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("SLURM restart %d: continuing from %s", restarts, last)
    else:
        log.info("SLURM restart %d: no checkpoint yet in %s, starting afresh", restarts, last.parent)
    (output_dir / "failed.txt").unlink(missing_ok=True)
    return True


def gpu_for_job(job_num: int, n_gpus: int) -> int:
    """Job ``k`` of a sweep runs on GPU ``k mod n``: with ``n`` jobs at a time, one job per GPU."""
    if n_gpus < 1:
        raise ValueError(f"need at least one GPU to pin a job to, got n_gpus={n_gpus}")
    if job_num < 0:
        raise ValueError(f"job_num must be >= 0, got {job_num}")
    return job_num % n_gpus


def pin_job_to_gpu(trainer: DictConfig, job_num: int | None = None, n_gpus: int | None = None) -> int | None:
    """With ``trainer.pin_job_to_gpu``, train this job on one GPU (sets ``devices=[k]`` of the composed
    ``trainer`` section) chosen from the Hydra job number; returns it. ``devices=[k]`` rather than
    ``CUDA_VISIBLE_DEVICES``: joblib reuses its worker processes, and a worker that already initialised CUDA
    ignores a changed ``CUDA_VISIBLE_DEVICES``."""
    if not trainer.get("pin_job_to_gpu", False):
        return None
    if job_num is None:
        job_num = _hydra_job_num()
    if n_gpus is None:
        n_gpus = torch.cuda.device_count()
    if n_gpus < 1:
        raise ValueError("trainer.pin_job_to_gpu=true needs a CUDA device, and none is visible")
    gpu = gpu_for_job(job_num, n_gpus)
    trainer.devices = [gpu]
    log.info("job %d pinned to GPU %d of %d", job_num, gpu, n_gpus)
    return gpu


def _hydra_job_num() -> int:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return int(HydraConfig.get().job.num)
    return 0
