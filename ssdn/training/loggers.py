"""Where a run's metrics go: a CSV log that survives resuming, and W&B (online only with credentials)."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Literal, TypeGuard, get_args

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from ssdn.config.schema import LoggerConfig, LoggerKind, RunNameConfig, WandbLoggerConfig
from ssdn.training.lightning_private import csv_experiment
from ssdn.utils import atomic_path

WandbRunMode = Literal["online", "offline", "disabled", "shared"]
"""The modes ``wandb.init`` accepts."""


def _is_wandb_mode(mode: str) -> TypeGuard[WandbRunMode]:
    return mode in get_args(WandbRunMode)


def wandb_mode(requested: str) -> WandbRunMode:
    """``auto`` means online when an API key is configured and offline otherwise (sync later)."""
    if requested == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_credentials_configured() else "offline")
    else:
        mode = requested
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)  # W&B's older names, still valid there
    if not _is_wandb_mode(mode):
        raise ValueError(
            f"W&B mode {mode!r} (logger.mode, or WANDB_MODE for auto): use auto, {', '.join(get_args(WandbRunMode))}"
        )
    return mode


def wandb_credentials_configured() -> bool:
    """Whether W&B has credentials here: ``WANDB_API_KEY`` or an ``api.wandb.ai`` entry in ``~/.netrc``
    (what ``wandb login`` writes). Says nothing about ``WANDB_MODE``; callers that honour it check it first."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


class ResumableCSVLogger(CSVLogger):
    """A CSV logger that keeps the rows a resumed run logged before its checkpoint.

    Lightning's writer deletes an existing ``metrics.csv``, so a resumed run would lose its training curves
    (and the report its validation-PSNR plot). Rows from ``keep_below_step`` on are dropped: the resumed run
    logs those steps again.
    """

    def __init__(self, *args: Any, keep_below_step: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keep_below_step = keep_below_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        existing = csv_experiment(self)
        if existing is not None:
            return existing
        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        kept: list[dict[str, str]] = []
        if self._keep_below_step is not None and path.is_file():
            with path.open(newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) < self._keep_below_step]
        writer = super().experiment  # removes the old file
        if kept:
            writer.metrics_keys = sorted(set().union(*kept))
            with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
                out = csv.DictWriter(f, fieldnames=writer.metrics_keys)
                out.writeheader()
                out.writerows(kept)
        return writer


def build_loggers(
    logger: LoggerConfig,
    run: RunNameConfig,
    record: dict[str, Any],
    output_dir: Path,
    resume_step: int | None = None,
) -> list[Logger]:
    """A CSV log always (cheap, readable by tests and reports) and W&B when ``logger=wandb``, its run named and
    tagged by ``run`` and given the whole config ``record`` (``RunConfig.record``).

    ``resume_step``: the global step of the checkpoint being resumed; the CSV history before it is kept.
    """
    loggers: list[Logger] = []
    if logger.kind == LoggerKind.none:
        return loggers
    loggers.append(
        ResumableCSVLogger(save_dir=str(output_dir), name="csv", version="", keep_below_step=resume_step)
    )
    if isinstance(logger, WandbLoggerConfig):
        overrides: list[str] = []
        try:
            from hydra.core.hydra_config import HydraConfig

            overrides = list(HydraConfig.get().overrides.task)
        except ValueError:
            pass
        tags = [
            record["noise"]["name"],
            record["method"]["name"],
            record["noise_params"]["source"],
            *run.tags,
        ]
        loggers.append(
            WandbLogger(
                project=logger.project,
                entity=logger.entity,
                name=run.name,
                group=run.group,
                tags=tags,
                job_type="train",
                save_dir=str(output_dir),
                mode=wandb_mode(str(logger.mode)),
                config=record | {"hydra_overrides": overrides, "output_dir": str(output_dir)},
            )
        )
    return loggers
