"""Runs from W&B: the runs of one group, read through the W&B API (``--wandb-group``); needs an API key.

``wandb`` is imported only when a group is read, so reporting folders never needs it.
"""

from __future__ import annotations

import os

from ssdn.report.paper import SETS
from ssdn.report.runs import ReportError, RunRecord, config_value, experiment_choice, off_protocol


def wandb_credentials() -> bool:
    """Whether W&B could be asked at all: credentials configured
    (``ssdn.training.loggers``) and W&B not switched off."""
    if os.environ.get("WANDB_MODE", "").lower() in ("disabled", "offline", "dryrun"):
        return False
    from ssdn.training.loggers import (
        wandb_credentials_configured,  # Lightning-heavy: only when a group is read
    )

    return wandb_credentials_configured()


def read_wandb_group(group: str, project: str, entity: str | None) -> list[RunRecord]:
    """The runs of one W&B group as runs: results from the summary (``test/<set>/psnr``), curves from history."""
    if not wandb_credentials():
        raise ReportError(
            f"--wandb-group {group}: no W&B API key (set WANDB_API_KEY or run `wandb login`, and do not set "
            "WANDB_MODE=disabled/offline); report sweep folders instead"
        )
    import wandb

    api = wandb.Api()
    path = f"{entity}/{project}" if entity else project
    runs = []
    for wandb_run in api.runs(path, filters={"group": group}):
        config = dict(wandb_run.config)
        overrides = config.get("hydra_overrides") or []
        pairs = (o.split("=", 1) for o in overrides if "=" in o)
        experiment = next((e for k, v in pairs if (e := experiment_choice(k, v))), None)
        psnr = {
            s: float(wandb_run.summary[f"test/{s}/psnr"])
            for s in SETS
            if f"test/{s}/psnr" in wandb_run.summary
        }
        eval_cfg = config.get("eval") or {}
        reasons = off_protocol({name: eval_cfg for name in psnr})
        batch = int(config_value(config, "data.batch_size", 4))
        curve = [
            ((float(r["trainer/global_step"]) + 1) * batch, float(r["val/psnr"]))
            for r in wandb_run.scan_history(keys=["val/psnr", "trainer/global_step"])
        ]
        levels = [
            (float(r["train/images_seen"]), float(r["train/noise_level"]))
            for r in wandb_run.scan_history(keys=["train/noise_level", "train/images_seen"])
        ]
        runs.append(
            RunRecord(
                source=wandb_run.url,
                name=wandb_run.name,
                experiment=experiment,
                status="ok"
                if psnr
                else ("failed" if wandb_run.state in ("failed", "crashed") else "no results"),
                config=config,
                psnr=psnr,
                off_protocol=reasons,
                curve=sorted(curve),
                levels=sorted(levels),
                images_seen=wandb_run.summary.get("images_seen"),
                mtime=float(wandb_run.summary.get("_timestamp", 0.0)),
            )
        )
    if not runs:
        raise ReportError(f"--wandb-group {group}: no runs in W&B project {path}")
    return runs
