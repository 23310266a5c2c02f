"""Hydra entry point: ``python train.py [group=option ...] [key=value ...]`` (also ``python -m ssdn.train``).

One Hydra job = one training run: it validates the config, trains, writes the checkpoints (last and best, with
the resolved config), the metrics and a denoised example, and always closes its W&B run, even on failure, so
that jobs of a multirun never share one.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from ssdn.config import max_steps, register_resolvers, validate_config
from ssdn.data.datamodule import DenoisingDataModule
from ssdn.data.embedded import embedded_photos
from ssdn.data.io import load_image
from ssdn.data.settings import DataSettings
from ssdn.distributed import (
    DestroyProcessGroup,
    build_strategy,
    job_environment,
    pin_job_to_gpu,
    resume_after_requeue,
)
from ssdn.eval.metrics import psnr
from ssdn.initial_level import initialise_level
from ssdn.module import DenoiserModule
from ssdn.nets import crop, pad_to_square
from ssdn.noise import NoiseModel
from ssdn.utils import atomic_path, atomic_write_json, atomic_write_png, keep_freed_memory

log = logging.getLogger(__name__)

CONF_DIR = Path(os.environ.get("SSDN_CONF_DIR", Path(__file__).resolve().parent / "conf"))
register_resolvers()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary file and renamed, so a crash never leaves a truncated .ckpt."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def wandb_mode(requested: str) -> str:
    """``auto`` means online when an API key is configured and offline otherwise (sync later)."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


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
        if self._experiment is not None:
            return self._experiment
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
    cfg: DictConfig, output_dir: Path, config: dict[str, Any], resume_step: int | None = None
) -> list[Logger]:
    """A CSV log always (cheap, readable by tests and reports) and W&B when ``logger=wandb``.

    ``resume_step``: the global step of the checkpoint being resumed; the CSV history before it is kept.
    """
    loggers: list[Logger] = []
    if cfg.logger.kind == "none":
        return loggers
    loggers.append(
        ResumableCSVLogger(save_dir=str(output_dir), name="csv", version="", keep_below_step=resume_step)
    )
    if cfg.logger.kind == "wandb":
        overrides: list[str] = []
        try:
            from hydra.core.hydra_config import HydraConfig

            overrides = list(HydraConfig.get().overrides.task)
        except ValueError:
            pass
        tags = [cfg.noise.name, cfg.method.name, cfg.noise_params.source, *cfg.run.tags]
        loggers.append(
            WandbLogger(
                project=cfg.logger.project,
                entity=cfg.logger.entity,
                name=cfg.run.name,
                group=cfg.run.group,
                tags=tags,
                job_type="train",
                save_dir=str(output_dir),
                mode=wandb_mode(cfg.logger.mode),
                config=config | {"hydra_overrides": overrides, "output_dir": str(output_dir)},
            )
        )
    return loggers


def build_datamodule(cfg: DictConfig, noise: NoiseModel) -> DenoisingDataModule:
    settings = DataSettings.from_config(cfg.data, channels=int(cfg.channels), seed=int(cfg.seed))
    return DenoisingDataModule(settings, noise=noise)


def build_trainer(
    cfg: DictConfig, output_dir: Path, loggers: list[Logger], extra_callbacks: Sequence[Callback] = ()
) -> L.Trainer:
    t = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(t, dict)
    every = int(t.pop("checkpoint_every_n_steps"))
    t["strategy"] = build_strategy(t["strategy"], cfg)
    t.pop("max_steps", None)
    t.pop("pin_job_to_gpu", None)  # applied to trainer.devices when the job starts (main)
    if t.get("limit_val_batches") is None:
        t.pop("limit_val_batches", None)
    # The module steps its optimiser itself (to skip non-finite steps), so Lightning warns that a mid-epoch
    # checkpoint holds the weights *after* that step. That is the state to resume from: the optimiser moments
    # and the step count belong to those weights (test_resume_matches_uninterrupted_run).
    warnings.filterwarnings(
        "ignore", message="Using ModelCheckpoint with manual optimization", category=UserWarning
    )
    # Without clean validation images (noisy data, no data.val_dir) the best model has the lowest held-out NLL.
    noisy_val = not cfg.data.add_noise and cfg.data.val_dir is None
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=output_dir / "checkpoints",
            filename="best",
            monitor="val/nll" if noisy_val else "val/psnr",
            mode="min" if noisy_val else "max",
            save_top_k=1,
            save_last=True,
            every_n_train_steps=every,
            auto_insert_metric_name=False,
        ),
        DestroyProcessGroup(),
        *extra_callbacks,
    ]
    if cfg.ema.enabled:
        callbacks.append(EMAWeightAveraging(decay=float(cfg.ema.decay)))
    return L.Trainer(
        **t,
        max_steps=max_steps(cfg),
        max_epochs=-1,
        check_val_every_n_epoch=None,  # the crop stream never ends: validate every val_check_interval steps
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        default_root_dir=str(output_dir),
        logger=loggers if loggers else False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
    )


def resume_path(cfg: DictConfig, output_dir: Path) -> str | None:
    """``resume=auto`` continues from the run directory's last checkpoint when there is one."""
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        last = output_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            log.info("resuming from %s", last)
            return str(last)
        log.info("resume=auto: no checkpoint in %s, starting fresh", last.parent)
        return None
    return str(cfg.resume)


def write_example(cfg: DictConfig, module: DenoiserModule, output_dir: Path) -> dict[str, float]:
    """Denoise a held-out image and save noisy / denoised / clean PNGs with their PSNRs (``example.json``)."""
    channels, size = int(cfg.channels), int(cfg.example.size)
    source = str(cfg.example.image)
    if source.startswith("skimage"):
        pixels = embedded_photos(channels=channels, split="val")[0][1]
    else:
        pixels = load_image(source, channels=channels)
    h, w = min(size, pixels.shape[0]), min(size, pixels.shape[1])
    top, left = (pixels.shape[0] - h) // 2, (pixels.shape[1] - w) // 2
    clean = (
        torch.from_numpy(pixels[top : top + h, left : left + w].copy()).permute(2, 0, 1)[None].float() / 255
    )
    gen = torch.Generator().manual_seed(int(cfg.seed) + 12345)
    params = module.noise.sample_params(1, gen)
    padded, (h0, w0) = pad_to_square(clean)
    noisy = module.noise.corrupt(padded, params, gen)
    outs = {k: crop(v.cpu(), h0, w0) for k, v in module.denoise(noisy, params).items()}
    noisy = crop(noisy, h0, w0)
    scores = {"psnr_noisy": float(psnr(noisy, clean)[0])}
    scores |= {f"psnr_{k}": float(psnr(v, clean)[0]) for k, v in outs.items()}
    from ssdn.eval.metrics import quantize

    for name, img in {"noisy": noisy, **outs, "clean": clean}.items():
        atomic_write_png(output_dir / f"example_{name}.png", quantize(img[0]).permute(1, 2, 0).numpy())
    atomic_write_json(output_dir / "example.json", scores | {"image": source, "params": float(params[0])})
    return scores


def evaluate_on_testsets(
    cfg: DictConfig, denoiser: Any, output_dir: Path, workers: int = 1
) -> dict[str, float]:
    """Score a denoiser on the configured test sets; writes ``results.json`` and ``per_image.csv``."""
    from ssdn.eval.evaluator import evaluate, write_results
    from ssdn.eval.protocol import protocol_configs

    is_network = isinstance(denoiser, L.LightningModule)
    results = evaluate(
        denoiser,
        protocol_configs(cfg.eval, (cfg.noise.name, cfg.noise.value), int(cfg.channels)),
        root=cfg.eval.root,
        batch_size=int(cfg.eval.batch_size),
        device=denoiser.device if is_network else None,
        workers=1 if is_network else workers,
        progress=bool(cfg.trainer.enable_progress_bar),
        journal_dir=None if is_network else output_dir,  # a rerun of a long classical row resumes
    )
    write_results(results, output_dir)
    metrics: dict[str, float] = {}
    for name, s in results.sets.items():
        metrics[f"test/{name}/psnr"] = s.psnr[s.reported]
        metrics |= {f"test/{name}/psnr_{k}": v for k, v in s.psnr.items()}
        metrics |= {f"test/{name}/ssim_{k}": v for k, v in s.ssim.items()}
        metrics[f"test/{name}/count"] = s.count
    return metrics


def run_classical(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    """Evaluation-only rows (CBM3D, Anscombe): nothing to train, the same protocol and outputs."""
    from ssdn.evaluate import build_classical

    metrics = evaluate_on_testsets(
        cfg, build_classical(cfg.method.classical), output_dir, workers=int(cfg.method.get("workers", 1))
    )
    atomic_write_json(output_dir / "metrics.json", metrics)
    return metrics


def run(cfg: DictConfig, extra_callbacks: Sequence[Callback] = ()) -> dict[str, float]:
    """Train one configuration; returns the final metrics (also written to ``metrics.json``).

    ``extra_callbacks`` are added to the trainer (programmatic use and tests). Classical methods
    (``method.classical``) are evaluated without training.
    """
    validate_config(cfg)
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.method.get("classical"):
        return run_classical(cfg, output_dir)
    if cfg.get("keep_freed_memory", False):
        keep_freed_memory()
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    # Enums as plain strings: the config is saved in checkpoints, which load weights-only.
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(config, dict)
    module = DenoiserModule(config)
    datamodule = build_datamodule(cfg, module.noise)
    ckpt_path = resume_path(cfg, output_dir)
    resume_step = (
        int(torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)["global_step"])
        if ckpt_path
        else None
    )
    loggers = build_loggers(cfg, output_dir, config, resume_step)
    try:
        trainer = build_trainer(cfg, output_dir, loggers, extra_callbacks)
        if ckpt_path is None:  # a resumed run's checkpoint holds the learned level
            initialise_level(cfg, module, datamodule)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        metrics |= {"images_seen": module.images_seen, "skipped_steps": module.skipped_steps}
        if level := module.learned_level():
            metrics["noise_level"] = next(iter(level.values())) if len(level) == 1 else level
        if trainer.is_global_zero:
            module.to(trainer.strategy.root_device)  # Lightning hands the model back on the CPU after fit
            if cfg.example.enabled:
                metrics |= {f"example/{k}": v for k, v in write_example(cfg, module, output_dir).items()}
            if cfg.eval.sets:
                metrics |= evaluate_on_testsets(cfg, module, output_dir)
            atomic_write_json(output_dir / "metrics.json", metrics)
            for logger in loggers:
                if isinstance(logger, WandbLogger):
                    logger.experiment.summary.update(metrics)
        return metrics
    finally:
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                wandb.finish()


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """One Hydra job. In a multirun a failing job is logged and recorded (``failed.txt`` in its directory)
    instead of ending the sweep; a single run fails loudly. The job's environment is restored when it ends, so
    the next job of a multirun starts clean; ``trainer.pin_job_to_gpu`` and a SLURM requeue adjust the config."""
    try:
        with job_environment():
            pin_job_to_gpu(cfg)
            resume_after_requeue(cfg)
            metrics = run(cfg)
    except Exception as exc:
        if not _in_multirun():
            raise
        log.exception("job %s failed; the sweep goes on", cfg.run.name)
        import traceback

        from ssdn.utils import atomic_write_text

        atomic_write_text(Path(cfg.output_dir) / "failed.txt", "".join(traceback.format_exception(exc)))
        return None
    return metrics.get("val/psnr")


if __name__ == "__main__":
    main()
