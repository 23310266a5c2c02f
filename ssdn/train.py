"""Hydra entry point: ``python train.py [group=option ...] [key=value ...]`` (also ``python -m ssdn.train``).

One Hydra job = one training run: it validates the config, trains, writes the checkpoints (last and best, with
the resolved config), the metrics and a denoised example, and always closes its W&B run, even on failure, so
that jobs of a multirun never share one.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig

from ssdn.config.compose import ConfigError, conf_dir, prepare_hydra, validate_config
from ssdn.config.run import RunConfig, plain
from ssdn.config.schema import DataSettings, EmaConfig, MethodConfig, TrainerConfig
from ssdn.data.crops import ESTIMATION_IMAGES
from ssdn.data.datamodule import DenoisingDataModule
from ssdn.errors import USER_ERROR_EXIT, UserError
from ssdn.noise import NoiseModel
from ssdn.training.checkpoints import read_checkpoint
from ssdn.training.distributed import DestroyProcessGroup, build_strategy, config_digest
from ssdn.training.ema import WarmupEMA
from ssdn.training.example import write_example
from ssdn.training.hydra_job import job_environment, pin_job_to_gpu, resume_after_requeue
from ssdn.training.initial_level import initialise_level
from ssdn.training.last_checkpoint import LastCheckpoint
from ssdn.training.loggers import build_loggers
from ssdn.training.module import DenoiserModule
from ssdn.training.noise_check import NoiseCheck, blind_spot_check
from ssdn.training.precision import resolve_precision
from ssdn.utils import atomic_write, atomic_write_json, keep_freed_memory

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary file and renamed, so a crash never leaves a truncated .ckpt."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        # Through a Python file: a full disk is then OSError(ENOSPC) naming the file, not torch's opaque
        # "unexpected pos" from its own writer.
        try:
            atomic_write(path, lambda f: torch.save(checkpoint, f))
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Resuming reads weights only, whatever Lightning asks for: a crafted ``resume=`` file never runs code."""
        return read_checkpoint(path, map_location="cpu" if map_location is None else map_location)


def build_datamodule(settings: DataSettings, noise: NoiseModel) -> DenoisingDataModule:
    return DenoisingDataModule(settings, noise=noise)


def build_trainer(
    trainer: TrainerConfig,
    ema: EmaConfig,
    *,
    max_steps: int,
    noisy_val: bool,
    ddp_digest: str,
    output_dir: Path,
    loggers: list[Logger],
    extra_callbacks: Sequence[Callback] = (),
) -> L.Trainer:
    """The Lightning trainer of ``trainer``'s settings; ``noisy_val``: validation scores held-out noisy crops
    (no clean images), so the best model has the lowest NLL; ``ddp_digest``: the run config's digest, which the
    DDP ranks compare (``ssdn.training.distributed``)."""
    # The module steps its optimiser itself (to skip non-finite steps), so Lightning warns that a mid-epoch
    # checkpoint holds the weights *after* that step. That is the state to resume from: the optimiser moments
    # and the step count belong to those weights (test_resume_matches_uninterrupted_run).
    warnings.filterwarnings(
        "ignore", message="Using ModelCheckpoint with manual optimization", category=UserWarning
    )
    # last.ckpt never waits for validation (ssdn.training.last_checkpoint); best.ckpt follows the monitored metric,
    # checked after each validation, and is overwritten in place (no best-v1.ckpt on resume).
    # Lightning runs both checkpoint callbacks after the others (so after the EMA's update of the same step);
    # ModelCheckpoint first, as the trainer's ``checkpoint_callback``.
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=output_dir / "checkpoints",
            filename="best",
            monitor="val/nll" if noisy_val else "val/psnr",
            mode="min" if noisy_val else "max",
            save_top_k=1,
            save_last=False,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        ),
        LastCheckpoint(output_dir / "checkpoints", trainer.checkpoint_every_n_steps),
        DestroyProcessGroup(),
        *extra_callbacks,
    ]
    if ema.enabled:
        callbacks.append(WarmupEMA(decay=ema.decay))
    # Lightning checks these (precision is a name it knows: its type is a Literal of them)
    options: dict[str, Any] = {
        "accelerator": trainer.accelerator,
        "devices": trainer.devices,
        "num_nodes": trainer.num_nodes,
        "strategy": build_strategy(trainer.strategy, ddp_digest),
        "precision": resolve_precision(trainer.precision, trainer.accelerator),
        "val_check_interval": trainer.val_check_interval,
        "log_every_n_steps": trainer.log_every_n_steps,
        "enable_progress_bar": trainer.enable_progress_bar,
    }
    if trainer.limit_val_batches is not None:  # null: Lightning's default (all)
        options["limit_val_batches"] = trainer.limit_val_batches
    return L.Trainer(
        **options,
        max_steps=max_steps,
        max_epochs=-1,
        check_val_every_n_epoch=None,  # the crop stream never ends: validate every val_check_interval steps
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        default_root_dir=str(output_dir),
        logger=loggers if loggers else False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
    )


#: Files that show a folder already holds a training run (``.hydra/`` alone is written by every start).
RUN_FILES = ("checkpoints/last.ckpt", "metrics.json", "csv/metrics.csv")


#: The settings a checkpoint's weights were trained for: resuming under others would train a different model.
RUN_IDENTITY = ("noise", "noise_params.source", "method", "channels", "model")


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}.{key}").items()}
    return {prefix: value}


def _identity(config: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in RUN_IDENTITY:
        value: Any = config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        out |= _flat(value, key) if value is not None else {}
    return out


def check_resume_matches(cfg: DictConfig, ckpt_path: str) -> None:
    """Refuse to resume a checkpoint trained with another noise model, level source, method or channels,
    naming each differing key (the checkpoint's value, then this run's). Keys only one side has are skipped: a
    setting added to the schema later keeps its default."""
    saved = read_checkpoint(ckpt_path).get("ssdn_config")
    if not isinstance(saved, Mapping):
        return  # not written by this module's runs: nothing to compare
    old, new = _identity(saved), _identity(plain(cfg))
    differ = [f"{k}={old[k]} (now {new[k]})" for k in sorted(old.keys() & new.keys()) if old[k] != new[k]]
    if differ:
        raise ConfigError(
            f"resume={cfg.resume}: {ckpt_path} was trained with {', '.join(differ)}; resume it with its own "
            "settings, or train this configuration into a new folder (hydra.run.dir=<folder>) without resume"
        )


def resume_path(cfg: DictConfig, output_dir: Path) -> str | None:
    """``resume=auto`` continues from the run directory's last checkpoint when there is one. Without ``resume``
    a folder that already holds a run is refused: training into it would overwrite its history and results.
    A checkpoint of another noise model, method or channel count is refused (:func:`check_resume_matches`)."""
    if cfg.resume is None:
        held = [name for name in RUN_FILES if (output_dir / name).exists()]
        if held:
            raise ConfigError(
                f"{output_dir} already holds a run ({', '.join(held)}); continue it with resume=auto, or train "
                "into a new folder with hydra.run.dir=<folder> (output_dir=<folder> from Python)"
            )
        return None
    if cfg.resume == "auto":
        last = output_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            log.info("resume=auto: no checkpoint in %s, starting fresh", last.parent)
            return None
        log.info("resuming from %s", last)
        path = str(last)
    else:
        path = str(cfg.resume)
    check_resume_matches(cfg, path)
    return path


def finished_metrics(cfg: DictConfig, output_dir: Path, resume_step: int) -> dict[str, Any] | None:
    """The metrics of a run that already reached its last step and wrote them (a rerun or SLURM requeue of a
    finished job), else None: such a run is left exactly as it is."""
    metrics = output_dir / "metrics.json"
    if resume_step < RunConfig.from_dictconfig(cfg).max_steps or not metrics.is_file():
        return None
    return dict(json.loads(metrics.read_text()))


def evaluate_on_testsets(
    cfg: DictConfig, denoiser: Any, output_dir: Path, workers: int = 1
) -> dict[str, float]:
    """Score a denoiser on the configured test sets; writes ``results.json`` and ``per_image.csv``."""
    from ssdn.eval.evaluator import evaluate, write_results
    from ssdn.eval.protocol import protocol_configs
    from ssdn.eval.settings import EvalSettings

    is_network = isinstance(denoiser, L.LightningModule)
    settings = EvalSettings(
        root=cfg.eval.root,
        batch_size=int(cfg.eval.batch_size),
        device=denoiser.device if is_network else None,
        workers=1 if is_network else workers,
        progress=bool(cfg.trainer.enable_progress_bar),
        journal_dir=None if is_network else output_dir,  # a rerun of a long classical row resumes
        allow_modified=bool(cfg.eval.get("allow_modified", False)),
    )
    protocols = protocol_configs(cfg.eval, (cfg.noise.name, cfg.noise.value), int(cfg.channels))
    results = evaluate(denoiser, protocols, settings)
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
    from ssdn.baselines import build_baseline

    metrics = evaluate_on_testsets(
        cfg, build_baseline(cfg.method.classical), output_dir, workers=int(cfg.method.get("workers", 1))
    )
    atomic_write_json(output_dir / "metrics.json", metrics)
    return metrics


def _finish_on_rank_zero(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: DenoiserModule,
    output_dir: Path,
    loggers: list[Logger],
    metrics: dict[str, float | dict[str, float]],
) -> None:
    """Once per run, after fit: the example and test-set scores (added to ``metrics``), ``metrics.json``, and
    the W&B summary."""
    module.to(trainer.strategy.root_device)  # Lightning hands the model back on the CPU after fit
    run = RunConfig.from_dictconfig(cfg)
    if run.example.enabled and run.model.dims == 3:
        log.info("example.enabled: the example is a 2-D photo, which a 3-D model does not denoise; skipped")
    elif run.example.enabled:
        example = write_example(run.example, module, output_dir, seed=run.seed, channels=run.channels)
        metrics |= {f"example/{k}": v for k, v in example.items()}
    if cfg.eval.sets:
        metrics |= evaluate_on_testsets(cfg, module, output_dir)
    atomic_write_json(output_dir / "metrics.json", metrics)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(metrics)


def _fit_metrics(trainer: L.Trainer, module: DenoiserModule) -> dict[str, float | dict[str, float]]:
    """The run's metrics after fit: the last logged values, its progress and its learned level."""
    metrics: dict[str, float | dict[str, float]] = {
        k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1
    }
    metrics |= {"images_seen": module.images_seen, "skipped_steps": module.skipped_steps}
    metrics |= {"total_images": module.total_images}  # the schedule's length (train.minutes: as planned)
    if (budget := module.progress.budget) is not None:
        metrics["train_minutes_used"] = budget.elapsed() / 60.0
    if level := module.learned_level():
        metrics["noise_level"] = next(iter(level.values())) if len(level) == 1 else level
    return metrics


def run(cfg: DictConfig, extra_callbacks: Sequence[Callback] = ()) -> Mapping[str, float | dict[str, float]]:
    """Train one configuration; returns the final metrics (also written to ``metrics.json``); ``noise_level``
    is a ``{param name: value}`` dict for noise with several parameters.

    ``extra_callbacks`` are added to the trainer (programmatic use and tests). Classical methods
    (``method.classical``) are evaluated without training.
    """
    config = validate_config(cfg)
    output_dir = config.run_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    if not isinstance(config.method, MethodConfig):
        return run_classical(cfg, output_dir)
    if config.keep_freed_memory:
        keep_freed_memory()
    ckpt_path = resume_path(cfg, output_dir)
    resume_step = int(read_checkpoint(ckpt_path)["global_step"]) if ckpt_path else None
    if resume_step is not None and (done := finished_metrics(cfg, output_dir, resume_step)) is not None:
        log.info("%s finished at step %d: nothing to do, every result file is kept", output_dir, resume_step)
        return done
    L.seed_everything(config.seed, workers=True, verbose=False)
    # Enums as plain strings: the config is saved in checkpoints, which load weights-only.
    module = DenoiserModule(config.record)
    datamodule = build_datamodule(config.data_settings, module.noise)
    loggers = build_loggers(config.logger, config.run, config.record, output_dir, resume_step)
    try:
        trainer = build_trainer(
            config.trainer,
            config.ema,
            max_steps=config.max_steps,
            # Without clean validation images (noisy data, no data.val_dir) the best model has the lowest NLL.
            noisy_val=not config.data.add_noise and config.data.val_dir is None,
            ddp_digest=config_digest(config.record),
            output_dir=output_dir,
            loggers=loggers,
            extra_callbacks=extra_callbacks,
        )
        if ckpt_path is None:  # a resumed run's checkpoint holds the learned level
            check = NoiseCheck()
            if not config.data.add_noise:
                check = blind_spot_check(
                    datamodule.estimation_images(ESTIMATION_IMAGES),
                    config.method.blind_hole,
                    config.method.pd_stride,
                )
                if check.warning:
                    log.warning("%s", check.warning)
                module.training_noise = check.measured
            initialise_level(config.noise_params.init, module, datamodule, check.correlated_sigma)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics = _fit_metrics(trainer, module)
        if trainer.is_global_zero:
            _finish_on_rank_zero(cfg, trainer, module, output_dir, loggers, metrics)
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


def _log_through_hydra() -> None:
    """Send Lightning's messages and Python warnings (skipped data files among them) to the root logger, i.e.
    Hydra's console and the job's ``train.log``. Lightning, imported before Hydra set logging up, gave its
    loggers their own console handlers and stopped them propagating, and warnings went to stderr only."""
    logging.captureWarnings(True)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def disk_full_error(exc: BaseException, output_dir: Path) -> UserError | None:
    """A full disk anywhere in ``exc``'s chain as one line naming the file (or the run's folder), else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            where = seen.filename or output_dir
            return UserError(
                f"{where}: No space left on device; free space there (or train into a folder on another disk "
                "with hydra.run.dir=<folder>), then continue the run with resume=auto"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def train_job(cfg: DictConfig) -> float | None:
    """One Hydra job. A user error (bad setting, missing file, damaged checkpoint) in a single run is one line
    ``ssdn-train: error: ...`` and exit status 2 (the traceback with ``HYDRA_FULL_ERROR=1``); caught here, inside
    the task function, so that Hydra does not print its own traceback first. In a multirun one failing job does
    not stop the sweep: it is logged and recorded (``failed.txt`` in its directory, the one-line message for a
    user error, the traceback for a bug), and the report lists it as failed. A signal (SIGINT, SIGTERM) is not a
    failure: the run writes ``last.ckpt`` and the process exits. The job's environment is restored when it ends, so
    the next job of a multirun starts clean; ``trainer.pin_job_to_gpu`` and a SLURM requeue adjust the config.
    Returns the validation PSNR, for sweepers that optimise it."""
    _log_through_hydra()
    try:
        with job_environment():
            pin_job_to_gpu(cfg.trainer)
            if resume_after_requeue(Path(cfg.output_dir)):
                cfg.resume = "auto"
            try:
                metrics = run(cfg)
            except Exception as exc:
                if (full := disk_full_error(exc, Path(cfg.output_dir))) is None:
                    raise
                raise full from exc
    except Exception as exc:
        if not _in_multirun():
            if isinstance(exc, UserError) and not _traceback_asked():
                # here, inside the job: raised further, Hydra would log it as a failed job first
                print(f"ssdn-train: error: {exc}", file=sys.stderr)
                raise SystemExit(USER_ERROR_EXIT) from None
            raise
        import traceback

        from ssdn.utils import atomic_write_text

        if isinstance(exc, UserError) and not _traceback_asked():
            log.error("job %s failed; the sweep goes on: %s", cfg.run.name, exc)
            report = f"{exc}\n"
        else:
            log.exception("job %s failed; the sweep goes on", cfg.run.name)
            report = "".join(traceback.format_exception(exc))
        atomic_write_text(Path(cfg.output_dir) / "failed.txt", report)
        return None
    psnr = metrics.get("val/psnr")
    return psnr if isinstance(psnr, float) else None


#: The user's own ``HYDRA_FULL_ERROR``, kept while :func:`main` sets it (inherited by DDP's child processes).
_USER_FULL_ERROR = "SSDN_USER_HYDRA_FULL_ERROR"


def _traceback_asked() -> bool:
    """Whether the user asked for tracebacks (``HYDRA_FULL_ERROR=1``), whatever :func:`main` set for Hydra."""
    return os.environ.get(_USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", "")) == "1"


def hydra_error(exc: Exception) -> UserError:
    """One line for Hydra's and OmegaConf's multi-line errors about the command line: the key or group, what is
    wrong, and the allowed values (a group's options, a section's keys, the expected type)."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, MissingConfigException) and exc.options and exc.missing_cfg_file:
        group, _, option = str(exc.missing_cfg_file).rpartition("/")
        return UserError(
            f"{group}={option}: no such {group}; choose one of {', '.join(exc.options)} "
            f"(the files in {conf_dir() / group})"
        )
    if isinstance(exc, OverrideParseException):
        return UserError(f"cannot parse the override {exc.override!r}: {first}; write it as key=value")
    cause = exc if isinstance(exc, OmegaConfBaseException) else exc.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        what = str(cause).strip().splitlines()[0]
        key = str(cause.full_key)
        given = first.rpartition(" ")[2] if first.startswith("Error merging override") else key
        allowed = ""
        section = getattr(cause, "object_type", None)
        if (
            isinstance(cause, ConfigKeyError | ConfigAttributeError)
            and isinstance(section, type)
            and dataclasses.is_dataclass(section)
        ):
            allowed = f"; the keys of {key.rpartition('.')[0] or 'the config'} are " + ", ".join(
                f.name for f in dataclasses.fields(section)
            )
        elif "could not be converted to" in what:
            allowed = f"; give {key} a value of that type"
        return UserError(f"{given}: {what}{allowed}")
    return UserError(f"{first} (HYDRA_FULL_ERROR=1 shows the details)")


def main() -> None:
    """The ``ssdn-train`` command: Hydra's command line over :func:`train_job`. Hydra is set up here, not at
    import, so the config folder (``$SSDN_CONF_DIR`` or the packaged ``ssdn/conf``) is read when the command
    starts and importing this module registers nothing.

    Hydra prints its own errors (a misspelt option or key, a value of the wrong type) over several lines and
    exits with 1; with ``HYDRA_FULL_ERROR=1`` it raises them instead, so that is set here and each becomes one
    line and exit status 2, unless the user set ``HYDRA_FULL_ERROR=1`` for the traceback."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    prepare_hydra()
    asked = _traceback_asked()
    saved = {k: os.environ.get(k) for k in (_USER_FULL_ERROR, "HYDRA_FULL_ERROR")}
    os.environ[_USER_FULL_ERROR] = "1" if asked else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(train_job)()
    except (HydraException, OmegaConfBaseException) as exc:
        if asked:
            raise
        error: UserError = hydra_error(exc)
    except UserError as exc:  # a bad $SSDN_CONF_DIR, or one raised while Hydra sets the run up
        if asked:
            raise
        error = exc
    else:
        return
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    print(f"ssdn-train: error: {error}", file=sys.stderr)
    raise SystemExit(USER_ERROR_EXIT)


if __name__ == "__main__":
    main()
